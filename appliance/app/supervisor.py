"""The connection supervisor: connect, serve, back off, again, for as long as the daemon runs.

Owns the reconnect policy. Each failure is classed (``classify``): a refused key is retried
after ``auth_retry_s`` (not in a hot loop), any other ``TransportError`` after the next
delay of the backoff (``appliance.core.backoff``), and anything else is fatal: it ends the
supervisor, and with it the daemon, instead of being retried. A reconnect that was asked
for (``appliance.app.link.Ended``) is not a failure: a planned one (renewal, button,
reload) reconnects at once and leaves the backoff alone. A connection that stayed up
``healthy_after_s`` resets the backoff. A reconnect asked for while no connection is
served (``wake``: a ``[realtime]`` reload while offline) cuts the backoff wait short.

The supervisor decides; what a connection is and what serving it means are given to it
(``connect``, ``serve``), and so is the clock, so tests drive it with a fake connection
factory. Imports: the standard library, ``appliance.core.backoff``,
``appliance.errors``, ``appliance.app.link``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NoReturn, Protocol, TypeVar

from appliance.app.link import Ended
from appliance.core.backoff import Backoff
from appliance.errors import AuthenticationError, TransportError

log = logging.getLogger(__name__)

AUTH_RETRY_S = 60.0  # a refused key is not retried in a hot loop
HEALTHY_AFTER_S = 30.0  # a session this long resets the backoff
CLOSE_TIMEOUT_S = 2.0  # closing a connection that hangs does not hold the next one up


class Failure(enum.Enum):
    """How a connection failure is handled."""

    RETRY = "retry"
    """Transient (network, server, timeout): retried after the backoff delay."""
    REFUSED = "refused"
    """The server refused the key: retried slowly, after ``auth_retry_s``."""
    FATAL = "fatal"
    """Not a connection problem (a bug, a config the transport cannot use): not retried."""


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, AuthenticationError):
        return Failure.REFUSED
    if isinstance(exc, TransportError):
        return Failure.RETRY
    return Failure.FATAL


@dataclass(frozen=True)
class RetryPolicy:
    auth_retry_s: float = AUTH_RETRY_S
    """Delay after the server refused the key."""
    healthy_after_s: float = HEALTHY_AFTER_S
    """A connection up this long resets the backoff."""


@dataclass(frozen=True)
class Down:
    """One connection attempt ended; the next comes after ``delay`` seconds."""

    reason: str
    planned: bool
    """A reconnect asked for at once; not a failure."""
    delay: float


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class Supervisor(Generic[C]):
    """``run`` connects with ``connect()``, serves with ``serve(conn)`` and reconnects,
    until cancelled or a fatal failure. ``connecting()`` is called before each attempt,
    ``down(Down)`` after each, before the delay, and ``waited()`` after the delay.

    Waits and timeouts use ``asyncio.timeout``, not ``wait_for``: 3.11's ``wait_for``
    swallows a cancel that comes as its awaitable finishes, and a stop would be lost.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        serve: Callable[[C], Awaitable[Ended]],
        *,
        connecting: Callable[[], None],
        down: Callable[[Down], None],
        waited: Callable[[], None],
        policy: RetryPolicy | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._connect = connect
        self._serve = serve
        self._connecting = connecting
        self._down = down
        self._waited = waited
        self.policy = policy or RetryPolicy()
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._wake = asyncio.Event()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> NoReturn:
        while True:
            self._connecting()
            down = await self.attempt()
            self._down(down)
            await self._pause(down.delay)
            self._waited()

    def wake(self) -> None:
        """A reconnect was asked for while no connection is served: the backoff wait in
        progress (or the next one, when connecting fails) ends at once."""
        self._wake.set()

    async def _pause(self, delay: float) -> None:
        if delay > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        self._wake.clear()

    async def attempt(self) -> Down:
        """One connection: open, serve until it ends, close; what happened and the delay."""
        try:
            conn = await self._connect()
        except Exception as exc:
            return self._failure(exc, "connect failed: %s")
        self._wake.clear()  # asked for while connecting: this connection is the new one
        started = self._now()
        failure: Exception | None = None
        ended = Ended("", False)
        try:
            ended = await self._serve(conn)
        except Exception as exc:
            failure = exc
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await conn.close()
        if self._now() - started >= self.policy.healthy_after_s:
            self._backoff.reset()
        if failure is not None:
            return self._failure(failure, "connection lost: %s")
        if ended.planned:
            log.info("reconnecting: %s", ended.reason)
            return Down(ended.reason, True, 0.0)
        log.warning("connection lost: %s", ended.reason)
        return Down(ended.reason, False, self._backoff.next())

    def _failure(self, exc: Exception, message: str) -> Down:
        """Class a failure and log it once; a fatal one is raised again."""
        kind = classify(exc)
        if kind is Failure.FATAL:
            raise exc
        if kind is Failure.REFUSED:
            delay = self.policy.auth_retry_s
            log.error("%s; retrying in %.0f s", exc, delay, extra={"ERROR_CODE": "auth"})
        else:
            log.warning(message, exc)
            delay = self._backoff.next()
        return Down(str(exc), False, delay)
