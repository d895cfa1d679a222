"""Where the echo lies behind the speaker's reference, held still: the decisions, sans I/O.

The double-talk rule's linear canceller (speexdsp's MDF, ``appliance.audio.nearend``) tells
the user's voice from the echo only once its filter has converged on the echo path, and
through real devices that path does not stand still (issue 23, bench.echo_loop's PulseAudio
loops):

- every reply is a new playback run, which the sound server starts a few ms off the last
  one (about 2 ms through the loops), so a filter learnt on one reply does not fit the next
  and had to be learnt again, for longer than the 2-3 s a user waits to say "stop";
- two sound cards with their own clocks (a USB microphone and a USB or on-board speaker),
  or a sound server adapting its rate between them, make the echo slide by up to about a
  sample a second at 16 kHz (0.9-1.8 samples/s through the rate-adapting loops), which
  the player's timing cannot see; the filter lags it and took 4-10 dB off the echo
  instead of 15-20;
- a sound server or device underrun drops or shifts the echo under the reference.

``appliance.audio.drift`` measures the echo's delay behind the reference the canceller
reads (samples, to a fraction of one) a few times a second while the speaker sounds.
``DriftFit`` turns those measurements into ``phase``, the samples the canceller adds to the
reference's read position:

- The first good measurement after the reference was placed by the player's timing (a new
  run, a re-synchronisation, a dropout) moves ``phase`` at once so that the echo lies
  ``HELD`` samples behind the reference, always the same: the MDF's filter, kept from one run
  to the next, then fits every run, and it can be short (``nearend.FILTER_S``: the room after
  the direct path, not the device's latency), which makes it converge faster and cancel
  more. Until then the MDF is not fed (``placed``): adapting to a path a few ms off would
  spoil its filter.
- After that, ``step`` slides ``phase`` along the line fitted to the measurements (of the
  delay behind the uncompensated reference: the echo path's own motion), at most
  ``MAX_STEP`` a frame; on a steady path only as far as the line puts the echo beyond
  ``DEADBAND`` from where it is held (the line's own noise must not move the echo under the
  filter); before the first measurement of a placement the last rate carries on, as a
  clock's drift does between replies.
- A drifting path's rate is pooled over the last replies (``POOL_RUNS``): two sound cards
  on their own crystals slide at a rate that holds, so ``phase`` glides at it and the dead
  band applies about the glide. While that line predicts where the echo is measured next
  (``tracked``) the voice may interrupt replies; a drift that wanders (a sound server
  adapting its rate) is not ``steady``, and the canceller says so.

Replayed from bench.echo_loop's traces (8 loops of 10-150 ms, rate fixed and adapting), the
MDF's median reduction over a reply's first second went from 0-20 dB (a 250 ms filter
starting afresh each run) to 6-31 dB, and 15-37 dB in its second half.

Imports: the standard library only.
"""

from __future__ import annotations

from collections import deque

HELD = 160.0  # samples (10 ms) the echo is held behind the reference the MDF is given
MIN_QUALITY = 0.15  # a GCC-PHAT peak below this is not the echo (noise, the user, silence)
PLACE_QUALITY = 0.3  # the measurement that places the reference must be a clear one
KEEP_S = 4.0  # the measurements fitted: the most recent this long
MIN_SPAN_S = 1.5  # no line from measurements closer together than this
MIN_POINTS = 5
# A measurement this far off the fitted line is an outlier (a loud user over the reply,
# a reverberant syllable): left out and the line fitted again without it.
OUTLIER = 1.0
# Clocks differ by tens of ppm, a rate-adapting server by up to about 100 (1.6 samples/s
# at 16 kHz): a steeper line is not drift.
MAX_RATE = 4.0
MAX_STEP = 0.05  # samples per 10 ms frame the compensation slides at most (5 samples/s)
# On a steady path (``STEADY_RATE``) the compensation stays put while the line puts the echo
# within this of where it is held, and beyond it follows only the excess: there the line's
# intercept still wanders with each measurement (bench.aec's rooms: 0.55 samples peak to
# peak), and the reference wandering with it moved the echo under the MDF, which took 2-7 dB
# off it for 90-130 ms now and then (2 self-interruptions in 10 min of the 40 ms room).
# bench.aec's five rooms, 10 min each: 2 cuts -> 0, p95 583 / 414 / 585 ms -> 254 / 190 /
# 209 ms in the 40, 150 and 60 ms rooms (moving the whole way once past the band: 440 ms in
# the 40 ms room). A drifting echo is followed along the line as before: held a dead band
# behind, the MDF through a -40 ppm loop took a median of 6 dB off the echo, not 32.
DEADBAND = 0.5
# JUMPS clear measurements in a row this far off the line on the same side (before there is
# a line, off where the placement put the echo; weaker ones in between leave the count as it
# is): the echo path jumped (an underrun the player's timing did not see), or the placement
# was on a wrong peak. Placed again at once, as by a new run, rather than slid there for
# seconds under a filter that no longer fits. A weak measurement reset the count, and
# through a two-clock loop an echo 80 samples earlier was placed again only 2.8 s later.
JUMP = 3.0
JUMPS = 3
HISTORY = 64  # frames of phase kept (a measurement's window is centred 25 frames back)
# An echo that drifts faster than this (samples a second; 0.25 is about 16 ppm at 16 kHz)
# comes through two clocks or a rate-adapting sound server. Fixed loops and the simulated
# rooms drift by 0.01 or less.
STEADY_RATE = 0.25
# A drifting echo is followed safely only at a rate that holds: two sound cards on their
# own crystals slide at a steady ratio (bench.echo_loop's two-clock paths, +60 and +100 ppm:
# each reply's own line 0.85-0.96 and 1.53-1.62 samples a second), while a sound server
# adapting its rate between them changes it within and between replies (-0.3 to -2.2), and
# there the converged MDF collapsed to 0-5 dB off the echo for 100-300 ms now and then,
# which no level tells from a voice (1 run in 5 of tests/test_aec.py's loop beside a busy
# core was cut). Each reply's line fitted alone, from 1.5-4 s of measurements, wandered
# too (0.62, -0.19, 0.14 samples a second on the -40 ppm path), and the reference with it.
# So the rate is pooled: the slopes of the last POOL_RUNS placements' measurements, each
# about its own mean (a least-squares slope common to all, every run keeping its own
# intercept), once their spread in time (the sum of squares, s^2) reaches POOL_SXX: about
# 2.5 s of one reply's measurements. The voice may interrupt replies on a drifting path only
# while the pooled line predicts where the echo is measured next: the median of this
# placement's last TRACK_N predictions, at least TRACK_MIN of them, off by no more than
# TRACK_TOL (the two-clock paths: 0.01-0.3 samples). Each placement must show it anew: a
# rate-adapting loop that had held its rate over one reply changed it as the next began,
# and the reply was cut 1.3 s in on the predictions of the reply before (bench.echo_loop's
# 10 ms loop); a placement is followed along the pooled line from its first measurement,
# so the first predictions come about 0.3 s after it.
POOL_RUNS = 16
POOL_SXX = 5.0
# ...and while the line of the last KEEP_S alone slides within AGREE of it (samples a
# second), once it spans POOL_SXX too: over a placement's first 1.5 s one measurement 0.8
# samples off turned its own slope 0.34 off a +60 ppm path's, and the voice waited; until
# then the predictions alone say whether the rate holds.
AGREE = 0.3
TRACK_N = 8
TRACK_MIN = 3
TRACK_TOL = 0.3


class DriftFit:
    """Where to read the reference so the echo lies ``HELD`` samples behind it."""

    def __init__(self) -> None:
        self.phase = 0.0
        self.rate = 0.0  # samples per second the echo's delay shrinks (its slope, negated)
        self.placed = False  # the current placement had its first measurement
        self._jumps = 0  # measurements in a row off the line by more than JUMP (signed)
        self._candidate: float | None = None  # an unplaced placement's last good delay
        self._points: list[tuple[float, float]] = []
        self._line: tuple[float, float] | None = None  # slope, intercept
        self._placed_at: tuple[float, float] | None = None  # the placement's, as a line
        self._run: list[tuple[float, float]] = []  # this placement's measurements, all of them
        self._pool: deque[tuple[float, float]] = deque(maxlen=POOL_RUNS)  # runs' (sxx, sxy)
        self._pooled: float | None = None  # the pooled slope, once POOL_SXX is in
        self._sxx = 0.0  # the pool's spread in time (s^2)
        # How far off the line this placement's measurements were predicted.
        self._misses: deque[float] = deque(maxlen=TRACK_N)
        # The phases of the last frames: a measurement is of a window whose reference was
        # read with the phases of its frames, not with the phase of now (taking today's
        # while it slid made the compensation chase its own motion).
        self._phases: deque[float] = deque(maxlen=HISTORY)

    @property
    def steady(self) -> bool:
        """The echo path does not drift (``STEADY_RATE``), or drifts at a rate the pooled line
        holds (``TRACK_TOL``): the voice may interrupt replies."""
        return abs(self.rate) <= STEADY_RATE or self.tracked

    @property
    def judged(self) -> bool:
        """Enough of the path was measured to tell whether its drift holds (``tracked``)."""
        return self._sxx >= POOL_SXX and len(self._misses) >= TRACK_MIN

    @property
    def tracked(self) -> bool:
        """The pooled line predicts where the echo is measured (see ``POOL_RUNS``)."""
        if self._pooled is None or len(self._misses) < TRACK_MIN:
            return False
        return sorted(self._misses)[len(self._misses) // 2] <= TRACK_TOL

    def restart(self) -> None:
        """The reference was placed afresh by the player's timing: earlier delays are on
        another footing."""
        self.phase = 0.0
        self.placed = False
        self._jumps = 0
        self._candidate = None
        self._end_run()
        self._points.clear()
        self._line = self._placed_at = None
        self._phases.clear()

    def rebase(self, samples: float) -> None:
        """The uncompensated reference moved ``samples`` later (the player's timing slewed
        it): the compensated one stays on the echo. Through bench.echo_loop's fixed loops the
        timing slewed the reference 2-4 samples in the second after a placement, the echo
        moved as far off where the kept filter expects it, and that filter took 2-8 dB off
        the next reply's echo instead of 15-20."""
        self.phase -= samples
        for i in range(len(self._phases)):
            self._phases[i] -= samples
        self._points = [(t, d + samples) for t, d in self._points]
        self._run = [(t, d + samples) for t, d in self._run]
        if self._line is not None:
            self._line = (self._line[0], self._line[1] + samples)
        if self._placed_at is not None:
            self._placed_at = (self._placed_at[0], self._placed_at[1] + samples)
        if self._candidate is not None:
            self._candidate += samples

    def add(self, at: float, delay: float, quality: float, frames_ago: int) -> bool:
        """A measurement of the echo's delay (samples) behind the compensated reference over
        a window centred on ``at`` (s), ``frames_ago`` frames back, with its peak's
        ``quality``. Returns True when it placed the reference: ``phase`` moved at once (the
        second of two clear ones in a row that agree, since ``restart``; or the third in a
        row off the fitted line the same way, or before there is one off where the placement
        put the echo: the echo path jumped, or the placement was on a wrong peak)."""
        if quality < (MIN_QUALITY if self.placed else PLACE_QUALITY):
            return False
        phases = self._phases
        then = phases[max(0, len(phases) - 1 - frames_ago)] if phases else self.phase
        raw = delay - then  # behind the uncompensated reference
        if not self.placed:
            # Two clear measurements in a row that agree place the reference: one alone
            # once found a peak 100 ms off the echo (bench.echo_loop's 100 ms loop).
            agree = self._candidate is not None and abs(raw - self._candidate) <= JUMP
            self._candidate = raw
            if not agree:
                return False
        placing = not self.placed or self._jumped(at, raw, quality)
        if placing:
            self._place(raw, at)
        elif self._line is not None:
            slope, intercept = self._line
            self._misses.append(abs(raw - (intercept + slope * at)))
        self._points.append((at, raw))
        self._run.append((at, raw))
        while self._points[-1][0] - self._points[0][0] > KEEP_S:
            self._points.pop(0)
        self._fit()
        return placing

    def _place(self, raw: float, at: float) -> None:
        """Move ``phase`` at once so that an echo ``raw`` samples behind the uncompensated
        reference (at ``at``) lies ``HELD`` behind the compensated one; a drifting path's
        line, at the pooled rate, starts here."""
        self.placed = True
        self.phase = HELD - raw
        self._phases.clear()  # the frames before this are on the old footing
        self._end_run()
        self._points.clear()
        self._misses.clear()
        slope = self._pooled
        self._line = None if slope is None else (slope, raw - slope * at)
        # Until a line is fitted, where the placement puts the echo at the rate carried on:
        # a placement on a wrong peak is mended by the jump rule (see _jumped) rather than
        # once a line stands.
        self._placed_at = (-self.rate, raw + self.rate * at)
        self._jumps = 0

    def _jumped(self, at: float, raw: float, quality: float) -> bool:
        line = self._line or self._placed_at
        if line is None:
            return False
        slope, intercept = line
        off = raw - (intercept + slope * at)
        if abs(off) <= JUMP:
            self._jumps = 0
        elif quality < PLACE_QUALITY:
            pass  # too weak to count (see JUMPS)
        elif self._jumps * off >= 0:  # the same side as the last ones (or the first)
            self._jumps += 1 if off > 0 else -1
        else:
            self._jumps = 1 if off > 0 else -1
        return abs(self._jumps) >= JUMPS

    def _end_run(self) -> None:
        """The placement's measurements join the pool (their slide about their own mean)."""
        sums = _spread(self._run)
        self._run = []
        if sums is not None:
            self._pool.append(sums)

    def _fit(self) -> None:
        kept = _kept(self._points)
        if kept is None:
            if self._pooled is not None and len(self._points) >= 3:
                # Too few for a line of its own, but the rate is known: the placement's
                # measurements put it (their median: robust to a far one), not the one
                # that placed it alone, which is a noisier one (PLACE_QUALITY, not the
                # clearest): placed 0.5-0.9 samples off the ones that followed, this
                # placement's predictions missed by that for its first 1.5 s, and the
                # voice waited (bench.echo_loop's two-clock loops).
                slope = self._pooled
                offsets = sorted(d - slope * t for t, d in self._points)
                self._line = (slope, offsets[len(offsets) // 2])
            return
        slope, intercept = _line(kept)
        if abs(slope) > MAX_RATE:
            return
        sxx = sxy = 0.0
        for run in (*self._pool, _spread(self._run)):
            if run is not None:
                sxx, sxy = sxx + run[0], sxy + run[1]
        self._sxx = sxx
        pooled = sxy / sxx if sxx >= POOL_SXX else None
        # A path that stands still keeps its own line (and the dead band about it), and so
        # does one whose last seconds slide otherwise (a rate that changed, a step), once
        # they span enough to say so (see AGREE).
        held = (
            pooled is not None
            and STEADY_RATE < abs(pooled) <= MAX_RATE
            and (_sums(kept)[2] < POOL_SXX or abs(slope - pooled) <= AGREE)
        )
        self._pooled = pooled if held else None
        if self._pooled is not None:
            # The run keeps its own intercept under the pooled slope.
            slope = self._pooled
            intercept = sum(d - slope * t for t, d in kept) / len(kept)
        self._line = (slope, intercept)
        self.rate = -slope

    def step(self, now: float, frame_s: float) -> bool:
        """Move ``phase`` for the frame at ``now``, one frame of ``frame_s`` after the last.
        Returns True when it placed the reference again: the fitted line puts the echo more
        than ``JUMP`` from where ``phase`` holds it (a placement on a wrong peak), which a
        slide at ``MAX_STEP`` would take minutes to mend."""
        placing = False
        if self._line is None:
            self.phase += self.rate * frame_s
        else:
            slope, intercept = self._line
            raw = intercept + slope * now
            move = HELD - raw - self.phase
            if abs(move) > JUMP:
                self._place(raw, now)
                self._points.append((now, raw))  # the line, from here on, is this one
                placing = True
            else:
                # The path's own slide, at the pooled rate; beyond it, and on a path that
                # stands still, the line's noise is not the echo's motion.
                glide = 0.0 if self._pooled is None else -slope * frame_s
                move -= glide
                if self._pooled is not None or abs(self.rate) <= STEADY_RATE:
                    move = max(0.0, abs(move) - DEADBAND) * (1.0 if move > 0 else -1.0)
                self.phase += max(-MAX_STEP, min(MAX_STEP, glide + move))
        self._phases.append(self.phase)
        return placing


def _kept(points: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """``points`` less those off their own line by more than ``OUTLIER``, the farthest left
    out first and the line fitted again without it (one far point pulls a line fitted
    through all of them off the rest: a placement on a wrong peak 39 samples off kept a
    two-clock path unfitted for 4 s, bench.echo_loop's -40 ppm loop); None for fewer than
    ``MIN_POINTS`` over less than ``MIN_SPAN_S`` (before or after)."""
    kept = list(points)
    while len(kept) >= MIN_POINTS and kept[-1][0] - kept[0][0] >= MIN_SPAN_S:
        slope, intercept = _line(kept)
        off = [abs(d - (intercept + slope * t)) for t, d in kept]
        worst = max(range(len(kept)), key=off.__getitem__)
        if off[worst] <= OUTLIER:
            return kept
        del kept[worst]
    return None


def _spread(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(sxx, sxy) of ``points`` (``_kept``) about their own mean, or None."""
    kept = _kept(points)
    return None if kept is None else _sums(kept)[2:]


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``points`` (at least two distinct times)."""
    mt, md, stt, std = _sums(points)
    if stt == 0.0:
        return 0.0, md
    slope = std / stt
    return slope, md - slope * mt


def _sums(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """The means of ``points``' times and delays, and the sums of squares and products about
    them."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    md = sum(d for _, d in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    return mt, md, stt, sum((t - mt) * (d - md) for t, d in points)
