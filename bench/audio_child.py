"""The real daemon, in this process, with timestamps taken at its edges (for ``bench.audio``).

``python -m bench.audio_child CONFIG OUT``: runs ``Daemon`` from CONFIG until SIGTERM, then
writes what it timed to OUT (JSON). Nothing of the daemon is replaced; three thin wrappers
watch it from outside, all stamping ``time.monotonic()`` (CLOCK_MONOTONIC, which the parent
process shares):

- the front end (a subclass): when each capture period was read (its level too), and which
  periods the samples of each upstream chunk came from;
- the reader's frames (``Daemon._on_frame``): when each audio delta and ``speech_started``
  arrived;
- the playback PCM (``open_pcm`` in ``appliance.audio.alsa``, playback only): each ``write()`` that took
  frames, and each ``drop()``.

The timing costs a little CPU, so CPU and memory are measured on the plain ``appliance run``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

import appliance.app.audio as audio_path_module
import appliance.audio.alsa as alsa_module
from appliance.audio.alsa import Pcm, PcmParams
from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput
from appliance.config import load_config
from appliance.core.listen import StartTurn
from appliance.core.protocol import AUDIO_DELTA, Incoming, ServerEvent
from appliance.credentials import load_api_key
from appliance.daemon import Daemon
from appliance.logs import setup_logging

periods: list[tuple[float, int, float]] = []  # (read at, frames, level dBFS)
# Per chunk, its live samples as (read at, length of that period's 24 kHz piece, first, end):
# sample j of the piece was captured (length - j) / 24000 s before the read.
chunks: list[list[tuple[float, int, int, int]]] = []
writes: list[tuple[float, int]] = []  # (returned at, frames)
drops: list[float] = []
deltas: list[tuple[float, str]] = []  # (received at, item id)
speech_started: list[float] = []


class TimedFrontEnd(FrontEnd):
    """Notes, on the capture thread, where each chunk's samples were captured."""

    def __init__(self, **kw: Any) -> None:
        emit = kw.pop("emit")

        def timed_emit(out: GateOutput) -> None:
            if isinstance(out, AudioChunk):
                self._note_chunk(len(out.pcm) // 2)
            emit(out)

        super().__init__(emit=timed_emit, **kw)
        self._read_at = 0.0
        self._in_preroll = False
        # [read at (0: pre-roll), piece length, samples of it already in chunks]
        self._pending: deque[list[float]] = deque()

    def process(self, mono: np.ndarray) -> None:
        self._read_at = time.monotonic()
        f = mono.astype(np.float32)
        level = float(np.dot(f, f)) / max(1, len(f))
        periods.append((self._read_at, len(mono), 10 * np.log10(level / 32768**2 + 1e-12)))
        super().process(mono)

    def _begin(self, turn: StartTurn) -> None:
        # What goes out inside _begin is the wake word and the pre-roll: old by design.
        self._pending.clear()
        self._in_preroll = True
        try:
            super()._begin(turn)
        finally:
            self._in_preroll = False

    def _stream(self, samples: np.ndarray) -> None:
        # Queued before the chunking below consumes it.
        at = 0.0 if self._in_preroll else self._read_at
        self._pending.append([at, float(len(samples)), 0.0])
        super()._stream(samples)

    def _note_chunk(self, n: int) -> None:
        live: list[tuple[float, int, int, int]] = []
        while n > 0 and self._pending:
            at, length, used = self._pending[0]
            take = int(min(n, length - used))
            if at:
                live.append((at, int(length), int(used), int(used) + take))
            self._pending[0][2] = used + take
            n -= take
            if used + take >= length:
                self._pending.popleft()
        chunks.append(live)


class TimedPcm:
    def __init__(self, pcm: Pcm) -> None:
        self._pcm = pcm

    def write(self, data: bytes | memoryview) -> int:
        n = self._pcm.write(data)
        if n > 0:
            writes.append((time.monotonic(), n))
        return n

    def drop(self) -> int:
        drops.append(time.monotonic())
        return self._pcm.drop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pcm, name)


_open_pcm = alsa_module.open_pcm


def timed_open_pcm(device: str, direction: Any, **kw: Any) -> tuple[Pcm, PcmParams]:
    pcm, params = _open_pcm(device, direction, **kw)
    if direction != "playback":
        return pcm, params
    return TimedPcm(pcm), params


class TimedDaemon(Daemon):
    def _on_event(self, event: Incoming, now: float) -> None:
        at = time.monotonic()
        if isinstance(event, ServerEvent) and event.type == AUDIO_DELTA:
            deltas.append((at, event.get_str("item_id")))
        elif isinstance(event, ServerEvent) and event.type == "input_audio_buffer.speech_started":
            speech_started.append(at)
        super()._on_event(event, now)


async def run(config_path: str) -> None:
    config = load_config(config_path)
    daemon = TimedDaemon(config, load_api_key())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await daemon.run(stop)


def main() -> None:
    config_path, out = sys.argv[1], Path(sys.argv[2])
    # The audio path builds its front end from this module global.
    setattr(audio_path_module, "FrontEnd", TimedFrontEnd)  # noqa: B010
    alsa_module.open_pcm = timed_open_pcm
    setup_logging("warning")
    asyncio.run(run(config_path))
    out.write_text(
        json.dumps(
            {
                "periods": periods,
                "chunks": chunks,
                "writes": writes,
                "drops": drops,
                "deltas": deltas,
                "speech_started": speech_started,
            }
        )
    )


if __name__ == "__main__":
    main()
