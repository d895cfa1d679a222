"""pymicro-vad adapter and the staged speech detector built on it.

``MicroVad``: 16 kHz PCM16 in 10 ms frames in, speech probability out. pymicro-vad is a small
neural VAD (the one Home Assistant's voice satellites use) compiled into one C++ extension
with no other dependency; x86-64 and aarch64 abi3 wheels (manylinux_2_28; Bookworm's glibc is
2.36). Unlike webrtcvad it gives stationary noise (fans, hum, pink/brown/white) a probability
near 0, which is what keeps room noise from opening turns. It keeps state between frames.

``SpeechStage``: the model costs ~0.14 ms per 10 ms frame on x86 (~1.4 % of a core, about
10 % of a Pi Zero 2 W core, if run on every frame), so it runs only when a cheap first stage
says there may be speech: a 10 ms frame more than ``margin_db`` above the room's floor,
both measured after a first-difference pre-emphasis (the floor follows the quiet quarter of
each listening block). Pre-emphasis takes out what makes room noise's short-time level jump:
brown noise, fans and hum live below a few hundred Hz, where 10 ms hold only a few cycles;
with it, pink, brown, white, fan, air-conditioner, mains hum and their mixtures stay within
5.3 dB of the floor (30 s each at -45 dBFS), while speech, which lives above, rises well over
it.

When the level stage fires, the model is fed the last ``catchup_ms`` from a 16 kHz history
before the frame that woke it, so the onset is judged from before the first loud frame. The
model is never reset: fresh, pymicro-vad answers 0 for most of its first second, while with
the state it was left in (a room's noise, however long ago) 300 ms of catch-up find the first
syllable within ~30 ms. Its very first wake therefore catches up ``warmup_ms`` instead. It
then runs on every frame until ``sleep_ms`` pass with nothing above the floor and no speech.
Inside a turn it does not sleep but coasts through loud speech (see ``SpeechStage._run``):
the endpoint core only needs its verdict where a pause may begin, and a catch-up on the
coasted audio gives it that. A quiet room or steady noise costs one numpy pass per
listening block.

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
_A = 0.95  # the pre-emphasis: x[t] - a x[t-1]


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
        warmup_ms: int = 1200,
        sleep_ms: int = 500,
        speech_threshold: float = 0.3,
        history_s: float = 2.0,
        coast_db: float = 6.0,
        coast_p: float = 0.5,
        coast_dip_ms: int = 80,
        coast_max_ms: int = 2000,
        coast_swing_db: float = 10.0,
        coast_flat_ms: int = 1000,
    ) -> None:
        """``coast_*``: how the model coasts inside a turn (``_run``); ``coast_max_ms = 0``:
        never, the model runs on every frame of a turn."""
        self._vad = vad or MicroVad()
        self.margin_db = margin_db
        self.min_level_db = min_level_db
        self._catchup = VAD_RATE * catchup_ms // 1000
        self._warmup = VAD_RATE * warmup_ms // 1000
        self._warm = False
        self._sleep_ms = sleep_ms
        self._threshold = speech_threshold
        self._ring = SampleRing(int(VAD_RATE * history_s))
        self._fed = 0  # ring position up to which frames were judged
        self._fresh = 0  # a catch-up never reaches before this (audio the stage did not see)
        self._gap = False
        self.floor_db: float | None = None
        """The room's level (dBFS of a 10 ms frame's RMS) outside turns."""
        self._floor_hp: float | None = None  # the same, pre-emphasized: what wakes the model
        self.awake = False
        self._quiet_ms = 0
        self.model_frames = 0
        """Frames the model ran on, catch-ups included (for the CPU benches)."""
        self.wakeups = 0
        self.coast_db = coast_db
        self._coast_p = coast_p
        self._coast_dip = coast_dip_ms // FRAME_MS
        self._coast_max = coast_max_ms // FRAME_MS
        self._coasted = 0  # frames of the current coast (the model asleep inside a turn)
        self._dip = 0  # frames since the level was last coast_db above the floor
        self.coast_swing_db = coast_swing_db
        self._flat = 0  # frames since the level last fell coast_swing_db below its peak
        self._coast_flat = coast_flat_ms // FRAME_MS
        self._peak = -math.inf
        self._p = 0.0  # the last probability handed on

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
        streaming: Callable[[], bool] | None = None,
    ) -> None:
        """16 kHz audio in; each 10 ms frame the model judged goes to ``on_frame``, in
        order. ``in_turn``: the listener is in a turn or judging an onset (no sleep, no floor
        update); ``on_wake(floor_db)``: the model woke, before its first frame;
        ``streaming``: a turn is open (the model may coast through its loud speech)."""
        ring = self._ring
        if self._gap:
            self._gap = False
            self._fed = self._fresh = ring.write_pos
            self.awake = False
            self._coasted = 0
            self._p = 0.0
        ring.write(pcm)
        ring.clear()  # a history, not a queue
        end = ring.write_pos
        n = (end - self._fed) // FRAME_SAMPLES
        if n <= 0:
            return
        start = self._fed
        self._fed = start + n * FRAME_SAMPLES
        frames = ring.last(end - start)[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        levels, high = _levels(frames)
        if not in_turn():
            # The endpoint core's floor is an average level (its margin is set for that): the
            # median; the wake-up's, the quiet quarter (it must wake on a soft syllable).
            self.floor_db = _follow(self.floor_db, levels, 2)
            self._floor_hp = _follow(self._floor_hp, high, 4)
        floor = self.floor_db if self.floor_db is not None else float(levels.min())
        floor_hp = self._floor_hp if self._floor_hp is not None else float(high.min())
        loud = floor_hp + self.margin_db
        first = 0
        if not self.awake:
            hot = np.flatnonzero((high > loud) & (levels > self.min_level_db))
            if len(hot) == 0:
                return
            first = int(hot[0])
            # Catch up from before the first loud frame, on the same 10 ms grid.
            at = start + first * FRAME_SAMPLES
            want = self._catchup if self._warm else self._warmup
            self._warm = True
            back = min(want, at - self._fresh, at - (end - ring.capacity))
            back = max(0, back) // FRAME_SAMPLES * FRAME_SAMPLES
            self.awake = True
            self._quiet_ms = 0
            self.wakeups += 1
            on_wake(floor)
            if back:
                pre = ring.last(end - at + back)[:back].reshape(-1, FRAME_SAMPLES)
                pre_levels, pre_high = _levels(pre)
                self._run(pre, pre_levels, pre_high, end - at, on_frame, loud=loud)
        after = end - start - n * FRAME_SAMPLES
        self._run(
            frames[first:],
            levels[first:],
            high[first:],
            after,
            on_frame,
            loud=loud,
            streaming=streaming,
        )
        if self._quiet_ms >= self._sleep_ms and not in_turn():
            self.awake = False

    def _run(
        self,
        frames: np.ndarray,
        levels: np.ndarray,
        high: np.ndarray,
        after: int,
        on_frame: OnFrame,
        *,
        loud: float,
        streaming: Callable[[], bool] | None = None,
    ) -> None:
        """The model on ``frames`` (the last ends ``after`` samples before the ring's end);
        ``high``: their pre-emphasized levels, above ``loud`` when they rose above the floor.

        While a turn streams the model coasts (sleeps, its last answer handed on) as long as
        that answer was speech (``coast_p``) and the level stays ``coast_db`` above the
        room's floor, or dips below it for less than ``coast_dip_ms`` (the gaps between
        syllables and words, where pymicro-vad's answer lingers anyway). A longer dip (a
        pause may begin), the turn's end or ``coast_max_ms`` of coasting wake it with a
        catch-up on the coasted audio (at most ``catchup_ms``), so it judges the frame after
        as if it had run all along; the end-of-turn hint is asked later (at 120 ms of
        silence). A catch-up that short does not let the model drop a speech state it would
        take ~650 ms of noise to drop, so a sound that no longer swings like speech (its
        pre-emphasized level never ``coast_swing_db`` under its peak for ``coast_flat_ms``:
        a fan, a vacuum cleaner, white noise) stops the coast, and a loud noise after speech
        holds the turn at most about that long beyond the model's own verdict."""
        vad = self._vad
        rest = after + len(frames) * FRAME_SAMPLES
        threshold = self._threshold
        floor = self.floor_db
        if streaming is None or floor is None:
            streaming, floor = _never, math.inf
        coast = floor + self.coast_db
        for i, (level, hp) in enumerate(zip(levels.tolist(), high.tolist(), strict=True)):
            rest -= FRAME_SAMPLES
            self._dip = 0 if level >= coast else self._dip + 1
            if self._dip or hp < self._peak - self.coast_swing_db:
                self._flat = 0
                self._peak = hp
            else:
                self._flat += 1
                self._peak = max(self._peak, hp)
            if (
                self._p >= self._coast_p
                and self._dip <= self._coast_dip
                and self._flat < self._coast_flat
                and self._coasted < self._coast_max
                and streaming()
            ):
                self._coasted += 1
                p = self._p
            else:
                if self._coasted:
                    self._catch_up(rest + FRAME_SAMPLES)
                self.model_frames += 1
                p = vad(frames[i].tobytes())
            if p >= threshold or hp > loud:
                self._quiet_ms = 0
            else:
                self._quiet_ms += FRAME_MS
            self._p = p
            on_frame(p, level, rest)

    def _catch_up(self, after: int) -> None:
        """Wake the coasting model: run it, answers unused, on the last coasted frames
        before the frame that ends ``after`` samples before the ring's end."""
        back = min(self._coasted * FRAME_SAMPLES, self._catchup) // FRAME_SAMPLES * FRAME_SAMPLES
        self._coasted = 0
        pre = self._ring.last(after + back)[:back].reshape(-1, FRAME_SAMPLES)
        vad = self._vad
        self.model_frames += len(pre)
        for frame in pre:
            vad(frame.tobytes())


def _never() -> bool:
    return False


def _levels(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms frame: its level (dBFS) and its pre-emphasized level (dB, same reference).

    The pre-emphasized energy comes from the frame's energy and its lag-1 product,
    sum (x[t] - a x[t-1])^2 = E - x[0]^2 + a^2 (E - x[-1]^2) - 2a sum x[t] x[t-1], so a block
    costs two products and one log over both rows instead of a filtered copy: on the capture
    thread the cost is per numpy call."""
    x = frames.astype(np.float64)
    out = np.empty((2, len(x)))
    energy = np.einsum("ij,ij->i", x, x, out=out[0])
    lag = np.einsum("ij,ij->i", x[:, 1:], x[:, :-1])
    ends = x[:, :: FRAME_SAMPLES - 1]  # first and last sample
    ends *= ends
    out[1] = energy * (1 + _A * _A) - ends[:, 0] - _A * _A * ends[:, 1] - 2 * _A * lag
    out *= 1 / FRAME_SAMPLES
    out += 1.0
    np.log10(out, out=out)
    out *= 10
    out -= _FULL_SCALE_DB
    return out[0], out[1]


def _follow(floor: float | None, levels: np.ndarray, part: int) -> float:
    """A floor that follows the level ``1/part`` up each block outside turns: down at once,
    up over about a second (a fan switched on stops waking the model soon after)."""
    k = len(levels) // part
    quiet = float(np.partition(levels, k)[k]) if k else float(levels.min())
    if floor is None or quiet < floor:
        return quiet
    return floor + (quiet - floor) * min(1.0, len(levels) * FRAME_MS / 1000)
