"""The capture-side front end: device audio in, gate decisions and upstream chunks out.

Runs on the capture thread, one call per ALSA period, so it must stay cheap and allocate
little: it resamples the period to 24 kHz (upstream) and 16 kHz (VAD) with soxr streams,
keeps a 24 kHz history ring for the pre-roll, skips webrtcvad when a frame is far below
speech energy, and feeds the pure ``VadGate``. What it decides goes out through ``emit``
(the daemon hands each output to the event loop with ``call_soon_threadsafe``), so the
loop wakes only when there is something to send, never per period.

The loop thread talks back through two plain attributes: ``talking`` (push-to-talk held)
and ``muted``. Reading a bool is atomic, so no lock is shared with the audio thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

from appliance.audio.ring import SampleRing
from appliance.config import GateSettings
from appliance.core.gate import Edge, VadGate

UPSTREAM_RATE = 24000
VAD_RATE = 16000
# Frames quieter than this RMS (about -56 dBFS) cannot be speech; webrtcvad is skipped.
ENERGY_FLOOR = (32768 * 10 ** (-56 / 20)) ** 2


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A turn begins: the pre-roll follows as the first chunks."""

    preroll_ms: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """PCM16 mono at 24 kHz to send upstream."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The turn ended. ``sent_ms`` is how much audio was sent; ``cancelled`` means mute."""

    sent_ms: int
    cancelled: bool = False


GateOutput = SpeechStarted | AudioChunk | SpeechStopped


class _Resampler:
    """A soxr stream, or nothing when the rates already match."""

    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return mono
        out: np.ndarray = self._stream.resample_chunk(mono)
        return out


class FrontEnd:
    def __init__(
        self,
        *,
        device_rate: int,
        gate: GateSettings,
        chunk_ms: int,
        vad: Callable[[bytes], bool] | None,
        emit: Callable[[GateOutput], None],
    ) -> None:
        self._mode = gate.mode
        self._emit = emit
        self._to24 = _Resampler(device_rate, UPSTREAM_RATE, "HQ")
        self._to16 = _Resampler(device_rate, VAD_RATE, "LQ")
        self._history = SampleRing(UPSTREAM_RATE * 2)
        self._preroll = UPSTREAM_RATE * gate.preroll_ms // 1000
        self._chunk = np.zeros(UPSTREAM_RATE * chunk_ms // 1000, dtype=np.int16)
        self._fill = 0
        self._vad = vad
        self._gate = VadGate(
            frame_ms=gate.vad_frame_ms,
            start_frames=gate.start_frames,
            start_window=gate.start_window,
            hangover_ms=gate.hangover_ms,
            warmup_ms=gate.warmup_ms,
        )
        self._frame = np.zeros(VAD_RATE * gate.vad_frame_ms // 1000, dtype=np.int16)
        self._frame_fill = 0
        self._streaming = False
        self._sent = 0
        self.talking = False
        self.muted = False
        self.vad_calls = 0

    # -- called on the capture thread ---------------------------------------------------------

    def process(self, mono: np.ndarray) -> None:
        """One capture period (mono int16 at the device rate)."""
        up = self._to24(mono)
        self._history.write(up)
        self._history.clear()  # a history, not a queue: it is never "full"
        if self.muted:
            if self._streaming:
                self._end(cancelled=True)
            self._gate.reset()
            return
        if self._mode == "always":
            if not self._streaming:
                self._begin(0)
            self._stream(up)
        elif self._mode == "push_to_talk":
            if self.talking and not self._streaming:
                self._begin(0)
            elif self._streaming and not self.talking:
                self._end()
            elif self._streaming:
                self._stream(up)
        else:
            self._run_vad(self._to16(mono), up)

    def _run_vad(self, pcm16k: np.ndarray, up: np.ndarray) -> None:
        if self._streaming:
            self._stream(up)
        frame = self._frame
        pos = 0
        while pos < len(pcm16k):
            take = min(len(frame) - self._frame_fill, len(pcm16k) - pos)
            frame[self._frame_fill : self._frame_fill + take] = pcm16k[pos : pos + take]
            self._frame_fill += take
            pos += take
            if self._frame_fill < len(frame):
                break
            self._frame_fill = 0
            voiced = self._voiced(frame)
            edge = self._gate.process(voiced)
            if edge is Edge.START:
                self._begin(self._preroll)
            elif edge is Edge.STOP:
                self._end()

    def _voiced(self, frame: np.ndarray) -> bool:
        f = frame.astype(np.float32)
        level = float(np.dot(f, f)) / len(frame)
        if level < ENERGY_FLOOR or self._vad is None:
            return False
        self.vad_calls += 1
        return self._vad(frame.tobytes())

    # -- turn edges ---------------------------------------------------------------------------

    def _begin(self, preroll: int) -> None:
        self._streaming = True
        self._sent = 0
        self._fill = 0
        have = min(preroll, self._history.write_pos)
        self._emit(SpeechStarted(have * 1000 // UPSTREAM_RATE))
        if have:
            self._stream(self._history.last(have))

    def _stream(self, samples: np.ndarray) -> None:
        chunk = self._chunk
        pos = 0
        while pos < len(samples):
            take = min(len(chunk) - self._fill, len(samples) - pos)
            chunk[self._fill : self._fill + take] = samples[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == len(chunk):
                self._flush()

    def _flush(self) -> None:
        if self._fill:
            self._emit(AudioChunk(self._chunk[: self._fill].tobytes()))
            self._sent += self._fill
            self._fill = 0

    def _end(self, cancelled: bool = False) -> None:
        if not cancelled:
            self._flush()
        self._fill = 0
        self._streaming = False
        self._emit(SpeechStopped(self._sent * 1000 // UPSTREAM_RATE, cancelled))
