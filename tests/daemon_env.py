"""The real daemon as a subprocess: the one config and environment end-to-end tests share.

Used by test_e2e.py, test_systemd.py and transport_e2e.py (``from daemon_env import ...``;
pytest puts this directory on ``sys.path``). The daemon runs ``python -m appliance.cli run`` against the
loopback simulator at ``url`` with ALSA ``file``-plugin devices ``mic`` (16 kHz) and
``spk`` (24 kHz) from an asoundrc of the test's own (``appliance.demo.write_file_devices``),
VAD gating and no GPIO. Its environment never inherits systemd's variables or a real key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from appliance.core.session import Action, StateChanged
from appliance.core.state import State
from appliance.daemon import Daemon
from appliance.demo import alsa_config_path

KEY = "dGVzdDp0ZXN0LWtleQ=="  # base64 "test:test-key"
APPLIANCE = [sys.executable, "-m", "appliance.cli"]
INHERITED_NOT = ("NOTIFY_", "JOURNAL_", "WATCHDOG_", "INWORLD_", "CREDENTIALS_")
"""Prefixes of variables a test daemon must not inherit from the test run."""


def daemon_config(
    realtime: str, *, session: str = "", audio: str = "", gate: str = 'mode = "vad"',
    extra: str = "",
) -> str:
    """A config for the test devices: ``realtime`` is the body of ``[realtime]``, ``session``
    tables go before the transcription's, ``audio`` adds ``[audio]`` keys, ``gate`` is the
    body of ``[gate]`` and ``extra`` is appended (more tables, e.g. ``[logging]``)."""
    return f"""
[realtime]
{realtime}
{session}
[session.audio.input.transcription]
model = "assemblyai/u3-rt-pro"
[audio]
capture_device = "mic"
capture_rate = 16000
playback_device = "spk"
playback_rate = 24000
{audio}
[gate]
{gate}
[gpio]
enabled = false
{extra}
"""


def config_text(url: str, voice: str = "Clive", extra: str = "") -> str:
    """The daemon's config against the WebSocket simulator at ``url``, with a session."""
    session = (
        f'[session]\ninstructions = "Be brief."\ntemperature = 0.8\n'
        f'[session.audio.output]\nvoice = "{voice}"'
    )
    return daemon_config(f'url = "{url}"', session=session, extra=extra)


def write_config(path: Path, url: str, voice: str = "Clive", extra: str = "") -> None:
    path.write_text(config_text(url, voice, extra))


def daemon_env(asoundrc: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus ``INHERITED_NOT``, with the test's ALSA devices,
    the test key and unbuffered output; ``extra`` (e.g. ``NOTIFY_SOCKET``) last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_NOT)}
    env.update(
        ALSA_CONFIG_PATH=alsa_config_path(asoundrc),
        INWORLD_API_KEY=KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class StateLog:
    """A daemon observer for in-process tests: the states in order, and ``ready``, set at
    each READY."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self.ready = asyncio.Event()

    def __call__(self, action: Action) -> None:
        if isinstance(action, StateChanged):
            self.states.append(action.state)
            if action.state is State.READY:
                self.ready.set()


@contextlib.asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    """Run ``daemon`` on this event loop for the block; then stop it and wait for it (10 s)."""
    stop = asyncio.Event()
    runner = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)


def statuses(sock: socket.socket) -> list[str]:
    """The STATUS= values the daemon sent to the notify socket ``sock`` (non-blocking)
    since the last call."""
    got: list[str] = []
    with contextlib.suppress(BlockingIOError):
        while True:
            msg = sock.recv(4096).decode()
            got += [line[len("STATUS=") :] for line in msg.splitlines() if line.startswith("STATUS=")]
    return got
