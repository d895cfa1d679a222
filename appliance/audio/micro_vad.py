"""pymicro-vad adapter and the staged speech detector built on it.

``MicroVad``: 16 kHz PCM16 in 10 ms frames in, speech probability out. pymicro-vad is a small
neural VAD (the one Home Assistant's voice satellites use) compiled into one C++ extension
with no other dependency; x86-64 and aarch64 abi3 wheels (manylinux_2_28; Bookworm's glibc is
2.36). Unlike webrtcvad it gives stationary noise (fans, hum, pink/brown/white) a probability
near 0, which is what keeps room noise from opening turns. It keeps state between frames.

``SpeechStage``: the model costs ~0.14 ms per 10 ms frame on x86 (~1.4 % of a core, about
10 % of a Pi Zero 2 W core, if run on every frame), so it runs only when a cheap first stage
says there may be speech: a 10 ms frame more than ``margin_db`` above the room's floor (the
floor follows the quiet part of each listening block; stationary noise stays within a few dB
of it). When that happens the model is reset and fed the last ``catchup_ms`` from a 16 kHz
history first, so its context is warm and the turn's onset is judged from before the first
loud frame; it then runs on every frame until ``sleep_ms`` pass with nothing above the floor
and no speech, and never sleeps inside a turn. A quiet room or steady noise costs one numpy
pass per listening block.

Imports numpy, pymicro_vad and ``appliance.audio.ring``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from pymicro_vad import MicroVad as _MicroVad

from appliance.audio.ring import SampleRing

VAD_RATE = 16000
FRAME_MS = 10
FRAME_SAMPLES = VAD_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
_FULL_SCALE_DB = 20 * math.log10(32768)


class MicroVad:
    frame_ms = FRAME_MS
    frame_bytes = FRAME_BYTES

    def __init__(self) -> None:
        self._vad = _MicroVad()

    def __call__(self, frame: bytes | memoryview) -> float:
        """Speech probability (0-1) of one 10 ms frame (320 bytes of PCM16)."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"pymicro-vad takes {FRAME_BYTES}-byte frames, got {len(frame)}")
        return max(0.0, float(self._vad.process_10ms(bytes(frame))))

    def reset(self) -> None:
        """Forget the stream (a new device, after a mute)."""
        self._vad.reset()


# (probability, level dBFS, samples of 16 kHz audio after the frame) -> nothing.
OnFrame = Callable[[float, float, int], None]


class SpeechStage:
    """The 16 kHz speech detector of one front end: a cheap level stage, then the model."""

    def __init__(
        self,
        vad: MicroVad | None = None,
        *,
        margin_db: float = 6.0,
        min_level_db: float = -56.0,
        catchup_ms: int = 300,
        sleep_ms: int = 500,
        speech_threshold: float = 0.3,
        history_s: float = 2.0,
    ) -> None:
        self._vad = vad or MicroVad()
        self.margin_db = margin_db
        self.min_level_db = min_level_db
        self._catchup = VAD_RATE * catchup_ms // 1000
        self._sleep_ms = sleep_ms
        self._threshold = speech_threshold
        self._ring = SampleRing(int(VAD_RATE * history_s))
        self._fed = 0  # ring position up to which frames were judged
        self._fresh = 0  # a catch-up never reaches before this (audio the stage did not see)
        self._gap = False
        self.floor_db: float | None = None
        """The room's level (dBFS of a 10 ms frame's RMS) outside turns."""
        self.awake = False
        self._quiet_ms = 0
        self.model_frames = 0
        """Frames the model ran on (for the CPU benches)."""
        self.wakeups = 0

    def gap(self) -> None:
        """The audio since the last ``feed`` was not given to the stage (wake-word wait,
        mute, push-to-talk): nothing before the next block is caught up, the model sleeps."""
        self._gap = True

    def recent(self, n: int) -> np.ndarray:
        """The newest ``n`` samples of 16 kHz audio (the end-of-turn hint reads them)."""
        return self._ring.last(n)

    def feed(
        self,
        pcm: np.ndarray,
        on_frame: OnFrame,
        in_turn: Callable[[], bool],
        on_wake: Callable[[float], None],
    ) -> None:
        """16 kHz audio in; each 10 ms frame the model judged goes to ``on_frame``, in
        order. ``in_turn``: the listener is in a turn or judging an onset (no sleep, no floor
        update); ``on_wake(floor_db)``: the model woke, before its first frame."""
        ring = self._ring
        if self._gap:
            self._gap = False
            self._fed = self._fresh = ring.write_pos
            self.awake = False
        ring.write(pcm)
        ring.clear()  # a history, not a queue
        end = ring.write_pos
        n = (end - self._fed) // FRAME_SAMPLES
        if n <= 0:
            return
        start = self._fed
        self._fed = start + n * FRAME_SAMPLES
        frames = ring.last(end - start)[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
        levels = 10 * np.log10(energy / FRAME_SAMPLES + 1.0) - _FULL_SCALE_DB
        turn = in_turn()
        if not turn:
            self._follow_floor(levels)
        assert self.floor_db is not None or turn
        floor = self.floor_db if self.floor_db is not None else float(levels.min())
        loud = max(floor + self.margin_db, self.min_level_db)
        first = 0
        if not self.awake:
            hot = np.flatnonzero(levels > loud)
            if len(hot) == 0:
                return
            first = int(hot[0])
            # Catch up from before the first loud frame, on the same 10 ms grid.
            at = start + first * FRAME_SAMPLES
            back = min(self._catchup, at - self._fresh, at - (end - ring.capacity))
            back = max(0, back) // FRAME_SAMPLES * FRAME_SAMPLES
            self.awake = True
            self._quiet_ms = 0
            self.wakeups += 1
            self._vad.reset()
            on_wake(floor)
            if back:
                pre = ring.last(end - at + back)[:back].reshape(-1, FRAME_SAMPLES)
                e = np.einsum("ij,ij->i", pre, pre, dtype=np.float64)
                pre_levels = 10 * np.log10(e / FRAME_SAMPLES + 1.0) - _FULL_SCALE_DB
                self._run(pre, pre_levels.tolist(), end - at, loud, on_frame)
        self._run(frames[first:], levels[first:].tolist(), end - start - n * FRAME_SAMPLES, loud, on_frame)
        if self._quiet_ms >= self._sleep_ms and not in_turn():
            self.awake = False

    def _run(
        self, frames: np.ndarray, levels: list[float], after: int, loud: float, on_frame: OnFrame
    ) -> None:
        """The model on ``frames`` (the last ends ``after`` samples before the ring's end)."""
        vad = self._vad
        rest = after + len(frames) * FRAME_SAMPLES
        self.model_frames += len(frames)
        for frame, level in zip(frames, levels, strict=True):
            p = vad(frame.tobytes())
            rest -= FRAME_SAMPLES
            if p >= self._threshold or level > loud:
                self._quiet_ms = 0
            else:
                self._quiet_ms += FRAME_MS
            on_frame(p, level, rest)

    def _follow_floor(self, levels: np.ndarray) -> None:
        """The floor follows the quiet quarter of each block outside turns: down at once,
        up over about a second (a fan switched on stops waking the model soon after)."""
        k = len(levels) // 4
        quiet = float(np.partition(levels, k)[k]) if k else float(levels.min())
        if self.floor_db is None or quiet < self.floor_db:
            self.floor_db = quiet
        else:
            self.floor_db += (quiet - self.floor_db) * min(1.0, len(levels) * FRAME_MS / 1000)
