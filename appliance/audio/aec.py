"""Acoustic echo cancellation: the speaker's own voice taken out of the microphone.

Owns the WebRTC audio processing module (``pywebrtc_audio.AudioProcessor``: AEC3 echo
canceller, noise suppression, high-pass filter, gain control) and the handover of its
reference signal from the playback thread to the capture thread. ``pywebrtc-audio`` is
optional at install time (the ``aec`` extra): ``load_canceller`` raises
``ProcessingUnavailable`` when it is missing, and the daemon then runs without a canceller (the front end's echo
guard alone keeps the device from interrupting itself).

The reference is exactly what the playback thread wrote to the device (channel 0 of the
written frames), handed over by ``ReferenceTap``:

- Playback thread (the producer): after every write, ``tap.written(frames, delay, now)``
  resamples the frames to 16 kHz into a preallocated history ring and publishes, in one
  attribute store, the ring position of the last frame written and the moment it will be
  heard: ``now + delay / rate``, where ``delay`` is the playback stream's ALSA delay
  (buffer size minus ``avail()``: pyalsaaudio 0.11 has no ``delay()``). ``tap.stopped(now)``
  after a ``drop()`` (barge-in, end of reply) says that nothing after ``now`` is heard.
- Capture thread (the consumer): ``EchoCanceller.process`` keeps a sample clock of the
  microphone: sample ``k`` was captured at ``base + k / 16000``, where ``base`` is the
  smallest ``read time - samples delivered so far`` seen over the last seconds. A read can
  only come after its samples were captured, and the reads that came right after a period
  completed give the tightest bound, so this measures the capture stream's delay (what
  ALSA's capture ``avail()`` would) without a call per period, and follows the small drift
  between the device clock and ``time.monotonic``. Each 10 ms microphone frame then gets
  the reference samples that were heard at the same moment; what lies before a playback
  run, after a stop, or was never written is silence.

The canceller reads the reference 5 ms ahead of the microphone frame (``LEAD_S``) and
keeps its read position continuous, following the published timing a sample at a time, so
that the few ms of jitter in that timing never make the reference jump. Latencies ALSA does
not see (the DAC, the air, a sound server) only make the echo come later, which AEC3's
delay estimator finds (it tracks a few hundred ms).

The two sides share no lock: positions only grow and each is published after the samples
it covers; a reader that finds its samples overwritten (it fell more than the ring's
length behind) uses silence instead.

Echo coupling: AEC3's suppressor also removes the first few hundred ms of the user's voice
while the reference plays, even when the microphone hears none of the speaker. The
canceller therefore measures how much of the speaker the microphone hears (its level while
the reference is loud against its own floor) and, while that is nothing above the room
noise, hands the VAD the unprocessed microphone (see ``EchoCanceller._decide``).
While the speaker plays, a frame the canceller took far below what the microphone heard
(``_RESIDUAL_DB``) is residual echo and is handed on as silence.

Double talk (``appliance.audio.nearend``, ``[audio.processing] double_talk``): AEC3 also
silences the user who starts while the reply is loud. A linear canceller (speexdsp's MDF)
runs beside it on the same frames and reference; a frame it judges the user's goes on as
the MDF's output instead, and one it judges the echo alone goes on as silence. Through
real devices the echo path moves with every playback run (the sound server's latency at
each stream start), with underruns and with a rate-adapting path, and AEC3 then lets bursts
of echo through as loud as a voice (issue 23). So the MDF starts afresh with each run, and
while the speaker sounds nothing AEC3 lets through is handed on until the MDF has proved
itself on the current path (``DoubleTalk.cancels``): until then the voice cannot interrupt
the reply, and a whole reply like that is logged once (``voice_barge_in``).

Imports: numpy, soxr, ``appliance.config``, ``appliance.audio.nearend``; pywebrtc_audio
lazily, in ``load_canceller``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soxr

from appliance.audio.nearend import DoubleTalk, MdfCanceller, load_mdf
from appliance.config import ProcessingSettings

log = logging.getLogger(__name__)

RATE = 16000  # the canceller's rate: AEC3 works in 16 kHz bands
FRAME = RATE // 100  # the module takes exactly 10 ms per call
_RING_S = 2.0  # reference history kept: far more than any device delay
_LAP_MARGIN = RATE // 2  # a write can be this long; a read closer to the lap is stale
_CLOCK_WINDOW_S = 5.0  # the capture clock's minimum is taken over windows this long
_IDLE_AFTER_S = 1.0  # with only AEC on: bypass once the speaker has been silent this long
# The reference is handed over this much ahead of the microphone: AEC3's linear filter can
# only model an echo that comes after its reference, and timing jitter the wrong way would
# otherwise put the echo first. More lead asks for audio the player has not written yet.
LEAD_S = 0.005
# The reference position is kept continuous: the timing the player publishes jitters by a
# few ms (scheduling, delay reports that move in steps), and a reference that jumps back and
# forth by that much spoils AEC3's filter. Within a playback run it only ever moves later,
# one sample at a time (when the smoothed error passes _SLEW samples), and is
# re-synchronised past _RESYNC samples. A reference later than the timing says only adds
# delay, which AEC3's delay estimator absorbs; one earlier than the echo cannot be
# cancelled. Following the timing back as well (as before) made the delay slide for about
# a second whenever the capture clock found a tighter bound (PulseAudio: 2-7 ms steps in a
# stream's first seconds), and AEC3 then let the echo through: 3 of 12 first replies cut
# by their own echo through the real loop, none of 20 with this ratchet (README). A
# reference that has fallen behind the timing by _CATCH_UP samples (smoothed: the timing's
# jitter stays far below it) jumps to it at once: the echo would otherwise come first (a
# playback underrun makes everything after it heard later).
_SLEW = 4.0
_CATCH_UP = RATE * 3 // 1000
_RESYNC = RATE * 30 // 1000
# Echo coupling (see EchoCanceller): AEC3's suppressor also removes the start of the user's
# voice while the reference plays, even when the microphone hears none of the speaker, which
# delays barge-in by up to a second. When the microphone's level while the speaker plays
# stays within _TRUST_DB of its own floor (the echo, if any, is lost in the room noise), the
# raw microphone goes to the VAD instead. That needs the echo at or below the noise; the
# echo guard alone had no self-interruption with echo up to 6 dB above -60 dBFS noise
# (12 in 5 min at 10 dB above), so the rule keeps >= 6 dB of margin (bench.aec prints it).
_TRUST_DB = 3.0
_LOUD_DBFS = -45.0  # a reference frame this loud counts as "the speaker plays"
# A sound server's idle source is digital silence: a floor of -120 dBFS made "15 dB over the
# floor" (the double-talk rule) true of the faintest sound, and "dB over the floor" of the
# coupling rule meaningless. Frames below _SILENT_DBFS are no floor, and none is taken below
# _FLOOR_MIN_DBFS (a real microphone's self-noise is far above it).
_SILENT_DBFS = -100.0
_FLOOR_MIN_DBFS = -90.0
# The coupling rule judges the microphone _RUN_SETTLE_S into each playback run (the echo
# path's delay and the sound server's start-up, during which the reference is loud and the
# microphone still hears nothing), and by the 75th percentile of its level over loud frames,
# not the median: a reference misaligned by a few tens of ms against speech puts many loud
# frames on the echo's pauses. Through a PulseAudio loop with a digitally silent floor the
# median made it trust the raw microphone with the speaker clearly audible (issue 23: "0 dB
# over its floor") and the reply was cut.
_RUN_SETTLE_S = 0.3
_ECHO_PERCENTILE = 75
_LEVEL_FRAMES = 1000  # levels kept: the last 10 s of frames...
_LOUD_FRAMES = 300  # ...and of frames with the speaker loud (3 s of them)
_LOUD_MIN = 50  # no decision before the speaker was loud for 0.5 s
_DECIDE_EVERY = 50  # frames between two decisions (0.5 s)
# Bypassed, the levels of one listening block in this many: the floor is a percentile of
# the room's level, which a quarter of its frames give as well, at a quarter of the cost.
_IDLE_LEVEL_EVERY = 4
# Residual echo: a frame that the canceller took more than this far below what the
# microphone heard, while the speaker plays, is what is left of the echo (bursts of it pass
# AEC3 on loud, clipped syllables), not the user, whose voice keeps more of its level: it is
# handed on as silence. bench.aec: self-interruptions in 10 min 1 -> 0 (80 ms room),
# 4 -> 1 and 6 -> 1 (150 and 40 ms rooms, other seeds); barge-in p50 200 -> 240 ms
# (25 dB: 270 ms; 31 dB misses the burst the rule is for).
_RESIDUAL_DB = 28.0
# While AEC3 first converges (its first _SETTLE_FRAMES frames with the speaker loud, about
# 3.5 s of the first reply), it takes as little as 4-25 dB off a loud syllable that follows
# a pause: through the real echo loop the first reply of a new daemon was cut by its own
# echo about 1.2 s in, 3 of 10 times (1 of 10 with a 10 dB residual rule then). Until then
# nothing it lets through while the speaker sounds is handed on: the first seconds of the
# first reply cannot be interrupted (unless the coupling rule finds no echo to cancel).
_SETTLE_FRAMES = 300
# Since issue 23, what AEC3 lets through while the speaker sounds is handed on only when
# the double-talk rule's linear canceller has proved itself on the current echo path (see
# nearend._PROVE_FRAMES); until then the voice cannot interrupt the reply. A reply with at
# least _UNSAFE_FRAMES loud frames (3 s) in which it never did is logged once (and the
# return, once), so a microphone that hears its speaker too loud or too distorted to
# cancel says so instead of cutting its replies.
_UNSAFE_FRAMES = 300

Samples = npt.NDArray[np.int16]

_NO_RUN = (0, 0.0, 0.0, -math.inf)  # (run start pos, anchor pos, anchor time, stop time)


class ProcessingUnavailable(Exception):
    """The audio processing module is not installed or does not load."""


class ReferenceTap:
    """What the speaker played, at 16 kHz, with when each sample was heard.

    One producer (the playback thread) and one consumer (the capture thread); see the
    module docstring.
    """

    def __init__(self, device_rate: int, capacity_s: float = _RING_S) -> None:
        self._capacity = int(capacity_s * RATE)
        self._buf: Samples = np.zeros(self._capacity, dtype=np.int16)
        self._write_pos = 0
        self._device_rate = device_rate
        self._ratio = RATE / device_rate
        self._resampler = (
            None
            if device_rate == RATE
            else soxr.ResampleStream(device_rate, RATE, 1, dtype="int16", quality="LQ")
        )
        self._mono: Samples = np.zeros(0, dtype=np.int16)
        # Producer-private: where the current run started and how much it wrote.
        self._running = False
        self._run_pos = 0
        self._run_frames = 0
        self.unwritten = 0  # consumer side: reads that reached past what was written
        # Published (read by the consumer); one tuple, replaced whole.
        self.timing: tuple[int, float, float, float] = _NO_RUN

    @property
    def write_pos(self) -> int:
        return self._write_pos

    # --- producer: the playback thread ----------------------------------------------------

    def written(self, frames: npt.NDArray[np.int16], delay: int, now: float) -> None:
        """``frames`` (mono, device rate) were just written; the device now holds ``delay``
        frames (these included) ahead of the listener."""
        if not self._running:
            self._running = True
            self._run_pos = self._write_pos
            self._run_frames = 0
            if self._resampler is not None:
                self._resampler.clear()
        n = len(frames)
        self._run_frames += n
        if len(self._mono) < n:
            self._mono = np.zeros(n, dtype=np.int16)
        mono = self._mono[:n]
        np.copyto(mono, frames)  # one channel of interleaved frames is strided
        out = mono if self._resampler is None else self._resampler.resample_chunk(mono)
        self._put(out)
        # The frame just written is heard when the device has played what is ahead of it.
        heard_at = now + max(0, delay - 1) / self._device_rate
        end = self._run_pos + (self._run_frames - 1) * self._ratio
        self.timing = (self._run_pos, end, heard_at, math.inf)

    def stopped(self, now: float) -> None:
        """The device dropped what it held: nothing it was given is heard after ``now``."""
        if self._running:
            self._running = False
            run_pos, end, heard_at, _ = self.timing
            self.timing = (run_pos, end, heard_at, now)

    def _put(self, samples: npt.NDArray[np.int16]) -> None:
        n = len(samples)
        if n == 0:
            return
        if n > self._capacity:
            samples, n = samples[-self._capacity :], self._capacity
        start = self._write_pos % self._capacity
        first = min(n, self._capacity - start)
        self._buf[start : start + first] = samples[:first]
        if n > first:
            self._buf[: n - first] = samples[first:]
        self._write_pos += n  # published after the copy

    # --- consumer: the capture thread -----------------------------------------------------

    def locate(self, at: float) -> tuple[int, int] | None:
        """The ring position heard at moment ``at`` and where its run started, or None when
        nothing was playing then."""
        run_pos, end, heard_at, stop_t = self.timing
        if at >= stop_t or stop_t == -math.inf:
            return None
        return round(end + (at - heard_at) * RATE), run_pos

    def read(self, at: float, out: Samples, pos: int | None = None) -> bool:
        """Fill ``out`` with what the listener heard from moment ``at`` on (silence where
        nothing was playing), from ring position ``pos`` if given (a caller that keeps the
        reference continuous). Returns False if all of it is silence."""
        run_pos, end, heard_at, stop_t = self.timing
        out[:] = 0
        if at >= stop_t or (stop_t == -math.inf):
            return False
        n = len(out)
        if pos is None:
            pos = round(end + (at - heard_at) * RATE)
        # Samples before the run started, after a stop, or not written yet are silence.
        lo = max(pos, run_pos)
        hi = min(pos + n, self._write_pos)
        if pos + n > self._write_pos and stop_t == math.inf:
            self.unwritten += 1  # asked for what the player has not written yet
        if stop_t != math.inf:
            hi = min(hi, pos + max(0, round((stop_t - at) * RATE)))
        if hi <= lo:
            return False
        start = lo % self._capacity
        first = min(hi - lo, self._capacity - start)
        out[lo - pos : lo - pos + first] = self._buf[start : start + first]
        if hi - lo > first:
            out[lo - pos + first : hi - pos] = self._buf[: hi - lo - first]
        if lo < self._write_pos + _LAP_MARGIN - self._capacity:
            out[:] = 0  # the producer lapped us while we copied: stale
            return False
        return True


class CaptureClock:
    """When each microphone sample was captured, from when the samples were read.

    Sample ``k`` was captured at ``base + k / rate``; ``base`` is the smallest ``read time -
    samples delivered so far / rate`` over a window of a few seconds (see the module
    docstring). Used on the capture thread only.
    """

    def __init__(self, rate: int = RATE) -> None:
        self._rate = rate
        self.samples = 0  # samples delivered so far
        self.base = math.inf
        self._window_base = math.inf
        self._window_t = -math.inf

    def delivered(self, n: int, now: float) -> None:
        """``n`` more samples were read at ``now``."""
        self.samples += n
        bound = now - self.samples / self._rate
        if now - self._window_t > _CLOCK_WINDOW_S:
            # A new window: the previous one's minimum becomes the clock, so a device clock
            # a little slower or faster than ours never accumulates an error.
            if self._window_base != math.inf:
                self.base = self._window_base
            self._window_t, self._window_base = now, bound
        self._window_base = min(self._window_base, bound)
        self.base = min(self.base, bound)  # samples cannot be read before they exist

    def time_of(self, k: int) -> float:
        """When sample ``k`` was captured."""
        return self.base + k / self._rate


class Apm(Protocol):
    """The interface of WebRTC's ``AudioProcessing`` used here, on 10 ms frame buffers
    (livekit's ``rtc.AudioProcessingModule`` has this shape; ``PyWebrtcApm`` gives it to
    pywebrtc-audio)."""

    def process_stream(self, frame: Any) -> None: ...
    def process_reverse_stream(self, frame: Any) -> None: ...
    def set_stream_delay_ms(self, delay_ms: int) -> None: ...


def canceller_installed() -> bool:
    """Whether the pywebrtc-audio package (the ``aec`` extra) is installed."""
    return importlib.util.find_spec("pywebrtc_audio") is not None


class PyWebrtcApm:
    """pywebrtc-audio's ``AudioProcessor`` (the same AEC3) in the shape of ``Apm``, on the
    canceller's two frame buffers."""

    def __init__(self, processor: Any) -> None:
        self._ap = processor
        self._far: Samples = np.zeros(FRAME, dtype=np.int16)

    def process_reverse_stream(self, frame: Any) -> None:
        self._far[:] = np.frombuffer(frame, dtype=np.int16)

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        self._ap.stream_delay_ms = delay_ms

    def process_stream(self, frame: Any) -> None:
        near: Samples = np.frombuffer(frame, dtype=np.int16)
        near[:] = self._ap.process(near, self._far)


def load_canceller(
    settings: ProcessingSettings,
    tap: ReferenceTap | None,
    clock: Callable[[], float] = time.monotonic,
    speexdsp: str | None = None,
) -> EchoCanceller | None:
    """The canceller ``settings`` asks for, or None when every feature is off.

    Raises ``ProcessingUnavailable`` (one line, naming the missing package) when
    pywebrtc-audio (the ``aec`` extra) is not installed or its native library does not load.
    ``speexdsp`` names the library for the double-talk rule (default: the system's).
    """
    if not settings.enabled:
        return None
    mdf = None
    if settings.echo_cancellation and settings.double_talk:
        try:
            mdf = load_mdf(FRAME, RATE, library=speexdsp)
        except OSError as exc:
            log.warning(
                "[audio.processing] double_talk: %s; barge-in over a loud reply is slower", exc
            )
    try:
        import pywebrtc_audio
    except ImportError as exc:
        raise ProcessingUnavailable(
            "[audio.processing] needs the pywebrtc-audio package (pip install "
            f"'appliance[aec]'), which is not installed: {exc}"
        ) from exc
    try:
        processor = pywebrtc_audio.AudioProcessor(
            RATE,
            1,
            echo_cancellation=settings.echo_cancellation,
            noise_suppression=settings.noise_suppression,
            high_pass_filter=True,
            auto_gain_control=settings.auto_gain,
        )
    except Exception as exc:  # a native library that fails to load raises anything
        raise ProcessingUnavailable(
            f"[audio.processing]: the WebRTC audio processing module failed to load: {exc}"
        ) from exc
    return EchoCanceller(
        PyWebrtcApm(processor),
        lambda buf: buf,
        tap if settings.echo_cancellation else None,
        always=settings.always_on,
        clock=clock,
        mdf=mdf,
    )


class EchoCanceller:
    """Runs on the capture thread: 16 kHz microphone audio in, processed audio out.

    ``process`` takes any number of samples and returns the 10 ms frames completed so far
    (a view of an internal buffer, valid until the next call), so it adds no latency
    beyond collecting one frame.
    """

    def __init__(
        self,
        apm: Apm,
        make_frame: Callable[[bytearray], Any],
        tap: ReferenceTap | None,
        *,
        always: bool,
        clock: Callable[[], float] = time.monotonic,
        mdf: MdfCanceller | None = None,
    ) -> None:
        self._apm = apm
        self._tap = tap
        self._always = always  # noise suppression or gain control: run on every frame
        self._clock = clock
        self._near = bytearray(FRAME * 2)
        self._far = bytearray(FRAME * 2)
        self._near_frame = make_frame(self._near)
        self._far_frame = make_frame(self._far)
        self._near_view: Samples = np.frombuffer(self._near, dtype=np.int16)
        self._far_view: Samples = np.frombuffer(self._far, dtype=np.int16)
        self._fill = 0
        self._out: Samples = np.zeros(FRAME * 8, dtype=np.int16)
        self._capture = CaptureClock()
        self._last_far = -math.inf  # when the reference last had sound
        self._last_at = 0.0  # when the last frame was captured
        self._track: int | None = None  # reference position of the next frame
        self._track_run = -1
        self._track_err = 0.0
        self._run_at = -math.inf  # when the current playback run was first heard
        self.resyncs = 0
        self.frames = 0
        self.bypassed = 0
        # Echo coupling: microphone levels (dBFS) of every frame and of frames with the
        # speaker loud, and whether the raw microphone is trusted (see _decide).
        self._level = np.full(_LEVEL_FRAMES, np.nan)
        self._floor_stale = False  # levels came in since the last decision (bypassed)
        self._bypassed_blocks = 0
        self._loud = np.full(_LOUD_FRAMES, np.nan)
        self._n_level = 0
        self._n_loud = 0
        self._n_judged = 0  # loud frames the coupling rule judged (see _RUN_SETTLE_S)
        self._f32: npt.NDArray[np.float32] = np.zeros(FRAME, dtype=np.float32)
        self._raw: Samples = np.zeros(FRAME, dtype=np.int16)
        self.trusted = False  # the microphone hears no echo: the VAD gets it unprocessed
        self.trusted_frames = 0
        self.residual_frames = 0  # frames handed on as silence: residual echo
        self._floor = -math.inf  # the microphone's floor (dBFS), from _decide
        # Double talk (appliance.audio.nearend): the linear MDF canceller beside AEC3.
        self._mdf = mdf
        self.double_talk = DoubleTalk()
        self._mic: Samples = np.zeros(FRAME, dtype=np.int16)
        self._run_loud = 0  # loud frames of the current playback run
        self._run_proved = False  # the double-talk rule could judge the user in it
        self.voice_barge_in = True  # False: the last long reply could not be interrupted

    @property
    def idle(self) -> bool:
        """Bypassed (only echo cancellation is on and the speaker has been silent for
        ``_IDLE_AFTER_S``): the capture thread may hand audio over in blocks again
        (``FrontEnd.wants``); the capture clock keeps its bound from reads that did come
        right after a period, and per-period reads tighten it again once the speaker plays."""
        return not self._always and self._last_at - self._last_far > _IDLE_AFTER_S

    @property
    def pending(self) -> int:
        """Samples held until they complete a 10 ms frame (``process`` returns whole frames)."""
        return self._fill

    def process(self, mono: np.ndarray, now: float | None = None) -> np.ndarray:
        """Cancel echo in ``mono`` (int16 at 16 kHz); ``now`` is when it was read."""
        n = len(mono)
        first_sample = self._capture.samples
        self._capture.delivered(n, self._clock() if now is None else now)
        need = (self._fill + n) // FRAME * FRAME
        if need > len(self._out):
            self._out = np.zeros(need, dtype=np.int16)
        out = self._out[:need]
        # The frame begun in the last call first; then, bypassed, whole frames in one pass.
        begun = min(n, FRAME - self._fill) if self._fill else 0
        done, pos = self._frames(mono, 0, begun, first_sample=first_sample, out=out)
        skipped = self._bypass_block(mono[pos:], first_sample + pos, out[done:])
        pos, done = pos + skipped, done + skipped
        self._frames(mono, pos, n, first_sample=first_sample, out=out, done=done)
        return out

    def _frames(
        self, mono: np.ndarray, pos: int, end: int, *, first_sample: int, out: Samples,
        done: int = 0,
    ) -> tuple[int, int]:
        """Run ``mono[pos:end]`` frame by frame into ``out[done:]``; returns the new
        (done, pos). A frame left incomplete waits in the frame buffer for the next call."""
        while pos < end:
            take = min(FRAME - self._fill, end - pos)
            self._near_view[self._fill : self._fill + take] = mono[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill < FRAME:
                break
            self._fill = 0
            # The microphone sample index of this frame's start, and when it was captured.
            self._run_frame(self._capture.time_of(first_sample + pos - FRAME))
            out[done : done + FRAME] = self._near_view
            done += FRAME
        return done, pos

    def _bypass_block(self, mono: np.ndarray, first_sample: int, out: Samples) -> int:
        """Idle and nothing playing: the whole frames of ``mono`` go through as they are,
        and in one block of ``_IDLE_LEVEL_EVERY`` their levels (the coupling rule's floor)
        are taken in one numpy pass: the capture thread's cost while the appliance listens
        with the canceller bypassed. Returns how many samples were handled (0: the frame
        path)."""
        tap = self._tap
        k = len(mono) // FRAME
        if not k or self._fill or tap is None or self._always or not self.idle:
            return 0
        if tap.timing[3] == math.inf:  # a reply plays
            return 0
        self._bypassed_blocks += 1
        if self._bypassed_blocks % _IDLE_LEVEL_EVERY == 0:
            frames = mono[: k * FRAME].reshape(k, FRAME).astype(np.float32)
            power = np.einsum("ij,ij->i", frames, frames) / FRAME / 32768**2
            at = np.arange(self._n_level, self._n_level + k) % _LEVEL_FRAMES
            self._level[at] = 10.0 * np.log10(power + 1e-12)
            self._n_level += k
            # No decision while nothing plays (it costs more than the rest of the block,
            # and only matters when the speaker plays): the first frame that sounds takes one.
            self._floor_stale = True
        self.frames += k
        self.bypassed += k
        self._track = None
        self._last_at = self._capture.time_of(first_sample + (k - 1) * FRAME)
        out[: k * FRAME] = mono[: k * FRAME]
        return k * FRAME

    def _read_reference(self, tap: ReferenceTap, at: float) -> bool:
        where = tap.locate(at)
        if where is None:
            self._track = None
            return tap.read(at, self._far_view)
        target, run = where
        track = self._track
        if track is None or run != self._track_run or abs(target - track) > _RESYNC:
            if track is not None and run == self._track_run:
                self.resyncs += 1
            if run != self._track_run:
                self._run_at = at
                if self._mdf is not None:
                    self._run_ended()
                    self._mdf.reset()
            track, self._track_run, self._track_err = target, run, 0.0
            self.double_talk.moved()
        else:
            self._track_err += 0.05 * ((target - track) - self._track_err)
            if self._track_err > _CATCH_UP:
                track, self._track_err = target, 0.0
                self.double_talk.moved()
            elif self._track_err > _SLEW:  # never back: see _SLEW
                track, self._track_err = track + 1, self._track_err - 1
        self._track = track + FRAME
        return tap.read(at, self._far_view, track)

    def _run_ended(self) -> None:
        """A playback run is over: say once when voice barge-in was off for a whole reply
        (the linear canceller never proved itself on its echo path: the echo cannot be told
        from the user's voice, so nothing the canceller let through was handed on), and
        once when it is back."""
        heard, self._run_loud = self._run_loud, 0
        proved, self._run_proved = self._run_proved, False
        if heard < _UNSAFE_FRAMES or proved != (not self.voice_barge_in):
            return
        self.voice_barge_in = proved
        if proved:
            log.info("echo cancellation: the user's voice can interrupt the reply again")
        else:
            log.warning(
                "echo cancellation: cannot tell the user's voice from the speaker's echo"
                " through this microphone (a reply played without it); the voice does not"
                " interrupt the reply (the talk button does)"
            )

    def _db(self, frame: Samples) -> float:
        np.copyto(self._f32, frame)
        return 10.0 * math.log10(float(np.dot(self._f32, self._f32)) / FRAME / 32768**2 + 1e-12)

    def _decide(self) -> None:
        """Trust the raw microphone when, over the last seconds of the speaker playing
        loud, its median level stayed within _TRUST_DB of its floor (the 10th percentile
        of every frame's level over the last 10 s): whatever echo there is lies in the
        room noise. The user talking only raises that median, so a mistake is the safe
        one (the canceller stays in charge)."""
        self._floor_stale = False
        loud = self._loud[~np.isnan(self._loud)]
        if len(loud) < _LOUD_MIN:
            self.trusted = False
            return
        level = self._level[~np.isnan(self._level)]
        level = level[level > _SILENT_DBFS]
        floor = float(np.percentile(level, 10)) if len(level) else _FLOOR_MIN_DBFS
        floor = max(floor, _FLOOR_MIN_DBFS)
        self._floor = floor
        echo = float(np.percentile(loud, _ECHO_PERCENTILE))
        trusted = echo <= floor + _TRUST_DB
        if trusted != self.trusted:
            log.info(
                "echo cancellation: the microphone %s its speaker (%.0f dB over its floor)",
                "hardly hears" if trusted else "hears",
                max(0.0, echo - floor),
            )
        self.trusted = trusted

    def _run_frame(self, at: float) -> None:
        self.frames += 1
        self._last_at = at
        sounding = self._tap is not None and self._read_reference(self._tap, at + LEAD_S)
        mic_db = 0.0
        loud = False
        if self._tap is not None:
            mic_db = self._db(self._near_view)
            self._level[self._n_level % _LEVEL_FRAMES] = mic_db
            self._n_level += 1
            loud = sounding and self._db(self._far_view) >= _LOUD_DBFS
            if loud:
                self._n_loud += 1
                if at - self._run_at >= _RUN_SETTLE_S:
                    self._loud[self._n_judged % _LOUD_FRAMES] = mic_db
                    self._n_judged += 1
            if self._n_level % _DECIDE_EVERY == 0 or (sounding and self._floor_stale):
                self._decide()
        if sounding:
            self._last_far = at
        elif not self._always and at - self._last_far > _IDLE_AFTER_S:
            # Nothing played for a while and only echo cancellation is on: nothing to do.
            self.bypassed += 1
            return
        if self._tap is not None:
            self._apm.process_reverse_stream(self._far_frame)
            self._apm.set_stream_delay_ms(round(LEAD_S * 1000))  # plus the room: AEC3 finds it
        if self.trusted and not self._always:
            # No echo to speak of: the canceller keeps adapting, the VAD hears the microphone.
            self._raw[:] = self._near_view
            self._apm.process_stream(self._near_frame)
            self._near_view[:] = self._raw
            self.trusted_frames += 1
            return
        mdf = None
        if self._mdf is not None and sounding:
            self._mic[:] = self._near_view
            mdf = self._mdf.process(self._mic, self._far_view)
        elif self._mdf is not None:
            self.double_talk.silent()
        self._apm.process_stream(self._near_frame)
        mdf_db = 0.0 if mdf is None else self._db(mdf)
        if mdf is not None and loud:
            self._run_loud += 1
            self._run_proved = self._run_proved or self.double_talk.cancels
        if mdf is not None and self.double_talk(mic_db, mdf_db, loud, self._floor):
            # The user talks over the reply: AEC3 would hand on silence (see nearend.py).
            self._near_view[:] = mdf
        elif sounding and (
            self._n_loud < _SETTLE_FRAMES
            or (mdf is not None and not self.double_talk.cancels)
            or self._db(self._near_view) < mic_db - _RESIDUAL_DB
            or (mdf is not None and self.double_talk.echo_only(mic_db, mdf_db))
        ):
            self._near_view[:] = 0
            self.residual_frames += 1
