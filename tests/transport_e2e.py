"""Shared by the transport tests (test_e2e.py and test_transport_*.py): run the real daemon
process for one voice turn, read a connection's typed events, compare what was heard.

The microphone is the shipped recording through the ALSA ``file`` plugin, the speaker a file;
the peer is whichever simulator endpoint the test started on loopback. The daemon's config
and environment come from ``daemon_env``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import waiting
from daemon_env import APPLIANCE, daemon_env
from signals import window_norms

from appliance.core.protocol import Incoming, ServerEvent
from appliance.demo import speech_recording, write_file_devices


async def until(events: AsyncIterator[Incoming], kind: str, timeout: float = 15
                ) -> list[ServerEvent]:
    """A connection's events up to and including the first of type ``kind`` (none of them
    malformed)."""
    seen: list[ServerEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await anext(events)
            assert isinstance(event, ServerEvent), event
            seen.append(event)
            if event.type == kind:
                return seen


async def until_end(frames: AsyncIterator[Incoming], timeout: float = 5) -> None:
    """Read a connection's events until they end (a ``TransportError``, for the caller)."""
    async with asyncio.timeout(timeout):
        async for _ in frames:
            pass


def speech_span_ms(pcm: bytes, rate: int) -> tuple[int, int]:
    """Where the recording is loud: first and last 10 ms frame above -40 dBFS."""
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    frame = rate // 100
    rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 32768 * 10 ** (-40 / 20))
    return int(loud[0]) * 10, int(loud[-1] + 1) * 10


def best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of b sliding over a (b shorter)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)[: len(a)]
    energy = window_norms(a, len(b))
    peak = np.max(np.abs(corr[: len(energy)]) / (energy * np.linalg.norm(b) + 1e-9))
    return float(peak)


async def run_daemon_turn(
    tmp_path: Path, config: str, replied: Callable[[], bool], timeout_s: float = 40.0,
    lead_s: float = 0.0,
) -> tuple[bytes, str, int]:
    """Run the daemon until ``replied()`` and the reply has played out; then SIGTERM.
    ``lead_s`` of silence come before the speech (a transport that takes longer to connect
    than the recording's own lead-in would otherwise miss the start of the turn: speech
    before the session is up is dropped, by design).

    Returns what reached the speaker (PCM16 24 kHz), the daemon's log and its exit code.
    """
    pcm, rate = speech_recording()
    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    # Silence after the speech, so one turn is all the microphone holds for the test's length
    # (whatever the capture does at the end of the file).
    mic.write_bytes(bytes(2 * round(rate * lead_s)) + pcm + bytes(2 * rate * 10))
    asoundrc = write_file_devices(tmp_path, mic, spk)
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(config)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*APPLIANCE, "run", "--config", str(cfg)], env=daemon_env(asoundrc), stderr=log,
            stdout=log,
        )
        try:
            def played_out() -> bool:
                if proc.poll() is not None:
                    return True  # exited early: the assertion below shows its log
                text = log_path.read_text(errors="replace")
                # The session leaves Speaking only once the player has played all of the reply.
                spoke = text.rfind("state: Speaking")
                return replied() and spoke >= 0 and "state: Ready" in text[spoke:]

            await waiting.until(played_out, timeout_s, lambda: "the turn: " + log_path.read_text()[-3000:])
            assert proc.poll() is None, "the daemon exited: " + log_path.read_text()[-3000:]
            assert spk.exists() and spk.stat().st_size > 0, "nothing played"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
    return spk.read_bytes(), log_path.read_text(), code
