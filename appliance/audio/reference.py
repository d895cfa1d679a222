"""The speaker's reference for the echo canceller, and the microphone's sample clock.

The reference is exactly what the playback thread wrote to the device (channel 0 of the
written frames), handed over by ``ReferenceTap``:

- Playback thread (the producer): after every write, ``tap.written(frames, delay, now)``
  resamples the frames to 16 kHz into a preallocated history ring and publishes (under a
  lock, see below) the ring position of the last frame written and the moment it will be
  heard: ``now + delay / rate``, where ``delay`` is the playback stream's ALSA delay
  (buffer size minus ``avail()``: pyalsaaudio 0.11 has no ``delay()``). ``tap.stopped(now)``
  after a ``drop()`` (barge-in, end of reply) says that nothing after ``now`` is heard.
- Capture thread (the consumer): ``EchoCanceller.process`` (``appliance.audio.canceller``)
  keeps a ``CaptureClock`` of the microphone: sample ``k`` was captured at
  ``base + k / 16000``, where ``base`` is the smallest ``read time - samples delivered so
  far`` seen over the last seconds. A read can only come after its samples were captured,
  and the reads that came right after a period completed give the tightest bound, so this
  measures the capture stream's delay (what ALSA's capture ``avail()`` would) without a
  call per period, and follows the small drift between the device clock and
  ``time.monotonic``. Each 10 ms microphone frame then gets the reference samples that
  were heard at the same moment; what lies before a playback run, after a stop, or was
  never written is silence.

The two sides hand over only through the published positions and timing, stored and loaded
under one ``threading.Lock`` held for the store or the load alone (never while copying
samples, so neither thread waits on the other's work; four uncontended acquires per 10 ms
frame cost about 1 us here): the lock's ordering, not the GIL, makes the samples a position
covers visible before the position.
Positions only grow and each is published after the samples it covers; a reader that finds
its samples overwritten (it fell more than the ring's length behind) uses silence instead.

Imports: numpy, soxr.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt
import soxr

RATE = 16000  # the canceller's rate: AEC3 works in 16 kHz bands
FRAME = RATE // 100  # the module takes exactly 10 ms per call
_RING_S = 2.0  # reference history kept: far more than any device delay
_LAP_MARGIN = RATE // 2  # a write can be this long; a read closer to the lap is stale
_CLOCK_WINDOW_S = 5.0  # the capture clock's minimum is taken over windows this long

Samples = npt.NDArray[np.int16]

_NO_RUN = (0, 0.0, 0.0, -math.inf)  # (run start pos, anchor pos, anchor time, stop time)


class ReferenceTap:
    """What the speaker played, at 16 kHz, with when each sample was heard.

    One producer (the playback thread) and one consumer (the capture thread); see the
    module docstring.
    """

    def __init__(self, device_rate: int, capacity_s: float = _RING_S) -> None:
        self._capacity = int(capacity_s * RATE)
        self._buf: Samples = np.zeros(self._capacity, dtype=np.int16)
        self._write_pos = 0  # written by the producer only; published under _lock
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
        # Published (read by the consumer): one tuple, swapped whole under _lock.
        self._lock = threading.Lock()
        self._timing: tuple[int, float, float, float] = _NO_RUN

    @property
    def write_pos(self) -> int:
        """The ring position after the last sample published."""
        with self._lock:
            return self._write_pos

    @property
    def timing(self) -> tuple[int, float, float, float]:
        """(run start position, anchor position, when the anchor is heard, stop time), as
        last published."""
        with self._lock:
            return self._timing

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
        stored = self._put(out)
        # The frame just written is heard when the device has played what is ahead of it.
        heard_at = now + max(0, delay - 1) / self._device_rate
        end = self._run_pos + (self._run_frames - 1) * self._ratio
        with self._lock:  # one swap publishes the samples (copied above) and their timing
            self._write_pos += stored
            self._timing = (self._run_pos, end, heard_at, math.inf)

    def stopped(self, now: float) -> None:
        """The device dropped what it held: nothing it was given is heard after ``now``."""
        if self._running:
            self._running = False
            run_pos, end, heard_at, _ = self._timing  # the producer's own last publication
            with self._lock:
                self._timing = (run_pos, end, heard_at, now)

    def _put(self, samples: npt.NDArray[np.int16]) -> int:
        """Copy ``samples`` into the ring past ``write_pos`` (unpublished); returns how many."""
        n = len(samples)
        if n == 0:
            return 0
        if n > self._capacity:
            samples, n = samples[-self._capacity :], self._capacity
        start = self._write_pos % self._capacity
        first = min(n, self._capacity - start)
        self._buf[start : start + first] = samples[:first]
        if n > first:
            self._buf[: n - first] = samples[first:]
        return n

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
        with self._lock:
            (run_pos, end, heard_at, stop_t), write_pos = self._timing, self._write_pos
        out[:] = 0
        if at >= stop_t or (stop_t == -math.inf):
            return False
        n = len(out)
        if pos is None:
            pos = round(end + (at - heard_at) * RATE)
        # Samples before the run started, after a stop, or not written yet are silence.
        lo = max(pos, run_pos)
        hi = min(pos + n, write_pos)
        if pos + n > write_pos and stop_t == math.inf:
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
        with self._lock:
            lapped = lo < self._write_pos + _LAP_MARGIN - self._capacity
        if lapped:
            out[:] = 0  # the producer lapped us while we copied: stale
            return False
        return True


class CaptureClock:
    """When each microphone sample was captured, from when the samples were read.

    Sample ``k`` was captured at ``base + k / rate``; ``base`` is the smallest ``read time -
    samples delivered so far / rate`` over a window of ``window_s`` (see the module
    docstring; audio lost to an overrun is forgotten with the window it fell in). Used on
    the capture thread only.
    """

    def __init__(self, rate: int = RATE, window_s: float = _CLOCK_WINDOW_S) -> None:
        self._rate = rate
        self._window_s = window_s
        self.samples = 0  # samples delivered so far
        self.base = math.inf
        self._window_base = math.inf
        self._window_t = -math.inf

    def delivered(self, n: int, now: float) -> None:
        """``n`` more samples were read at ``now``."""
        self.samples += n
        bound = now - self.samples / self._rate
        if now - self._window_t > self._window_s:
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

