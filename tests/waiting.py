"""Waiting for a condition in tests: the one poll loop the tests share.

``until`` (on an event loop) and ``wait_until`` (on a plain thread) return as soon as the
condition holds and fail with what was awaited once the deadline passes, so a test waits
only as long as the system under test takes, never a fixed guess. Poll every 10 ms: the
conditions are cheap reads of state the test can see (actions observed, states, files).
``why`` may be a callable, evaluated only on failure, to describe the state then.
``accepts(port)`` is the usual condition for a server started as a separate process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

POLL_S = 0.01

Why = str | Callable[[], str]


def _describe(why: Why) -> str:
    return why() if callable(why) else why


async def until(cond: Callable[[], object], timeout: float = 10.0, why: Why = "the condition") -> None:
    """Return once ``cond()`` is true; ``AssertionError`` naming ``why`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {_describe(why)}")
        await asyncio.sleep(POLL_S)


def wait_until(cond: Callable[[], object], timeout: float) -> bool:
    """Block this thread until ``cond()`` is true; False if ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def accepts(port: int) -> bool:
    """Something on loopback accepts connections at ``port`` (a server process is up)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False
