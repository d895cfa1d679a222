"""The echo canceller on the capture thread: AEC3 and the linear canceller driven frame by
frame, with the reference handed over from the playback thread (``appliance.audio.reference``).

``EchoCanceller.process`` takes the microphone at 16 kHz, gives each 10 ms frame the
reference heard at the same moment (``LEAD_S`` ahead, its position kept continuous: see
``_SLEW``; with the linear canceller, moved so the echo lies 10 ms behind it:
``appliance.audio.drift``, ``appliance.core.drift``), runs AEC3 (``Apm``) and, for double
talk, speexdsp's MDF (``appliance.audio.nearend``) on it, and measures the levels the
decisions need (numpy).
What it then does with the frame (bypass it, hand on the raw microphone, the MDF's output,
AEC3's, or silence) is decided by ``appliance.core.echo`` and ``nearend.DoubleTalk``; the
module docstring of ``appliance.audio.aec`` tells the whole story.

Imports: numpy, ``appliance.audio.reference``, ``appliance.audio.nearend``,
``appliance.audio.drift``, ``appliance.core.echo``, ``appliance.core.drift``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.audio.drift import WINDOW_S, EchoDelay, FractionalReader
from appliance.audio.nearend import LEAK, DoubleTalk, Leak, MdfCanceller
from appliance.audio.reference import FRAME, RATE, CaptureClock, ReferenceTap, Samples
from appliance.core import echo
from appliance.core.drift import DriftFit

# One logger for echo cancellation: its lines keep the name they had before the split.
log = logging.getLogger("appliance.audio.aec")

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
# cancelled. Following the capture clock back as well (as before) made the delay slide for
# about a second whenever the clock found a tighter bound (PulseAudio: 2-7 ms steps in a
# stream's first seconds), and AEC3 then let the echo through: 3 of 12 first replies cut
# by their own echo through the real loop, none of 20 with this ratchet (README). When the
# player's timing itself moves by _CATCH_UP samples either way (smoothed: its jitter stays
# far below it; the capture clock's tightening is left out), the reference jumps to it at
# once and the echo path counts as moved (``DoubleTalk.moved``): a reference behind it
# would put the echo first, and one left ahead after a playback underrun (everything after
# it is heard later) leaves both cancellers on a path that moved under them, where the
# linear one takes little off the echo and the double-talk rule took that for the user
# (a 20 ms underrun: a second of loud echo handed on; test_a_playback_underrun_is_a_moved_
# echo_path), so a reply could be cut by its own echo on a loaded machine with nothing in
# the log.
_SLEW = 4.0
_CATCH_UP = RATE * 3 // 1000
_RESYNC = RATE * 30 // 1000
# Where the echo lies behind the reference is measured (``appliance.audio.drift``) once
# _MEASURE_AFTER frames of a placement are in, every _PLACING loud frames until one places
# the reference, then every _MEASURE_EVERY: about 2 ms each here, only while the speaker
# sounds.
_MEASURE_AFTER = 40
_PLACING = 10
_MEASURE_EVERY = 25
_CENTRE = round(WINDOW_S * RATE / FRAME / 2)  # frames back to the measured window's centre


class Apm(Protocol):
    """The interface of WebRTC's ``AudioProcessing`` used here, on 10 ms frame buffers
    (livekit's ``rtc.AudioProcessingModule`` has this shape; ``PyWebrtcApm`` gives it to
    pywebrtc-audio)."""

    def process_stream(self, frame: Any) -> None: ...
    def process_reverse_stream(self, frame: Any) -> None: ...
    def set_stream_delay_ms(self, delay_ms: int) -> None: ...



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
        on_voice_barge_in: Callable[[bool], None] | None = None,
    ) -> None:
        self._apm = apm
        # Told (on this thread) each time voice_barge_in changes: it must only hand it over.
        self._on_voice_barge_in = on_voice_barge_in
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
        self._run_open = False  # a playback run is being heard (not yet judged: _run_ended)
        self._stopped_at = -math.inf  # when the last run stopped (its echo tail: echo.TAIL_S)
        self._tail_proved = True  # the double-talk rule cancelled on its path when it did
        self._track_err = 0.0
        self._track_base = math.inf  # the capture clock's base when the reference last synced
        self._clock_slack = 0.0  # how much it has tightened since (samples)
        self._run_at = -math.inf  # when the current playback run was first heard
        self.resyncs = 0
        self.catch_ups = 0  # the reference jumped with the player's timing (see _CATCH_UP)
        self.frames = 0
        self.bypassed = 0
        # Echo coupling: microphone levels (dBFS) of every frame and of frames with the
        # speaker loud, and whether the raw microphone is trusted (see _decide).
        self._level = np.full(echo.LEVEL_FRAMES, np.nan)
        self._floor_stale = False  # levels came in since the last decision (bypassed)
        self._bypassed_blocks = 0
        self._loud = np.full(echo.LOUD_FRAMES, np.nan)
        self._n_level = 0
        self._n_loud = 0
        self._n_judged = 0  # loud frames the coupling rule judged (see echo.RUN_SETTLE_S)
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
        self._talking = False  # the last frame was handed on as the user's (double talk)
        # The echo's delay followed (appliance.core.drift): the MDF's filter is kept from one
        # playback run to the next, and the reference moved so that it still fits.
        self._drift = DriftFit()
        self._echo_delay = EchoDelay()
        self._reader = FractionalReader()
        self._measure_n = 0
        self.placements = 0  # the reference moved so the echo lies where the MDF expects it
        self.dropouts = 0  # the echo path dropped out under the reference (see nearend)
        self.leaks = 0  # ...or moved: what the MDF let through was the echo (nearend.LEAK)
        self._leak = Leak(RATE)
        self.voice_barge_in = True  # False: the last long reply could not be interrupted

    @property
    def idle(self) -> bool:
        """Bypassed (only echo cancellation is on and the speaker has been silent for
        ``echo.IDLE_AFTER_S``): the capture thread may hand audio over in blocks again
        (``FrontEnd.wants``); the capture clock keeps its bound from reads that did come
        right after a period, and per-period reads tighten it again once the speaker plays."""
        return echo.idle(self._always, self._last_at, self._last_far)

    def counters(self) -> dict[str, int | bool]:
        """Its counters and decisions so far, for diagnosis (tests, benchmarks): frames
        processed, bypassed, with the raw microphone trusted, handed on as silence or as
        the user's (double talk), reference re-synchronisations and catch-ups."""
        return {
            "frames": self.frames,
            "bypassed": self.bypassed,
            "trusted_frames": self.trusted_frames,
            "residual_frames": self.residual_frames,
            "double_talk_frames": self.double_talk.frames,
            "resyncs": self.resyncs,
            "catch_ups": self.catch_ups,
            "placements": self.placements,
            "dropouts": self.dropouts,
            "leaks": self.leaks,
            "unwritten": 0 if self._tap is None else self._tap.unwritten,
            "trusted": self.trusted,
            "voice_barge_in": self.voice_barge_in,
        }

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
        and in one block of ``echo.IDLE_LEVEL_EVERY`` their levels (the coupling rule's floor)
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
        if self._bypassed_blocks % echo.IDLE_LEVEL_EVERY == 0:
            frames = mono[: k * FRAME].reshape(k, FRAME).astype(np.float32)
            power = np.einsum("ij,ij->i", frames, frames) / FRAME / 32768**2
            at = np.arange(self._n_level, self._n_level + k) % echo.LEVEL_FRAMES
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
            if self._run_open:  # the run just stopped: judge it now, not at the next one
                self._run_open = False
                self._stopped_at, self._tail_proved = at, self.double_talk.cancels
                if self._mdf is not None:
                    self._run_ended()
            return tap.read(at, self._far_view)
        target, run = where
        track = self._track
        if track is None or run != self._track_run or abs(target - track) > _RESYNC:
            if track is not None and run == self._track_run:
                self.resyncs += 1
                log.debug("echo path: reference re-synchronised by %+d samples at %.3f",
                          target - track, at)
            if run != self._track_run:
                self._run_at = at
                log.debug("echo path: playback run from %d heard at %.3f", run, at)
                if self._mdf is not None and self._run_open:
                    self._run_ended()
                # The MDF's filter stays (see _follow_echo); what it took off the echo
                # before counts only once the reference is placed again.
                self.double_talk.reset()
                self._run_open = True
            track, self._track_run, self._track_err = target, run, 0.0
            self._track_base, self._clock_slack = self._capture.base, 0.0
            self._placed_afresh()
        else:
            self._track_err += 0.05 * ((target - track) - self._track_err)
            base = self._capture.base
            if base < self._track_base:  # the capture clock tightened: see _CATCH_UP
                self._clock_slack += (self._track_base - base) * RATE
                self._track_base = base
            if (
                self._track_err > _CATCH_UP
                or self._track_err + self._clock_slack < -_CATCH_UP
            ):
                self.catch_ups += 1
                log.debug("echo path: reference caught up %+d samples at %.3f",
                          target - track, at)
                track, self._track_err = target, 0.0
                self._track_base, self._clock_slack = self._capture.base, 0.0
                self._placed_afresh()
            elif self._track_err > _SLEW:  # never back: see _SLEW
                track, self._track_err = track + 1, self._track_err - 1
                self._drift.rebase(1)  # the echo is measured: it stays where it is found
        self._track = track + FRAME
        if self._mdf is None:
            return tap.read(at, self._far_view, track)
        if self._drift.step(at, FRAME / RATE):
            self._placed_on_echo(at, "the fitted line")
        unwritten = tap.unwritten
        sounding = self._reader.read(tap, at, self._far_view, track + self._drift.phase)
        if tap.unwritten != unwritten:
            # The player was late (a loaded machine): this frame's reference has a hole
            # the speaker did not, and the linear canceller mispredicts for its filter's
            # length. Through the real loop under load that was taken for the user.
            log.debug("echo path: the reference ran past what the player had written at %.3f",
                      at)
            self.double_talk.moved()
        return sounding

    def _placed_afresh(self) -> None:
        """The reference was placed by the player's timing alone: the echo path moved
        under both cancellers, and its delay is measured again."""
        self.double_talk.moved()
        self._drift.restart()
        self._echo_delay.clear()
        self._leak.clear()

    def _follow_echo(self, at: float) -> None:
        """Measure where the echo lies behind the reference (a loud frame just came in) and
        follow it (``appliance.core.drift``)."""
        self._measure_n += 1
        every = _MEASURE_EVERY if self._drift.placed else _PLACING
        if self._echo_delay.frames < _MEASURE_AFTER or self._measure_n % every:
            return
        delay, quality = self._echo_delay.measure()
        if self._drift.add(at - WINDOW_S / 2, delay, quality, _CENTRE):
            self._placed_on_echo(at, f"measured {delay:.1f} samples behind")

    def _placed_on_echo(self, at: float, how: str) -> None:
        """The reference moved so the echo lies where the MDF's filter expects it."""
        log.debug("echo path: reference placed on the echo at %.3f (%s)", at, how)
        self._echo_delay.clear()  # what it holds is on the footing before the move
        # The MDF's filter fits again (the first time: it starts learning); it must show
        # that it cancels, and converge, before a frame can be the user's.
        self.double_talk.reset(quick=self.placements > 0)
        self.placements += 1

    def _run_ended(self) -> None:
        """A playback run is over: say once when voice barge-in was off for a whole reply
        (the linear canceller never proved itself on its echo path: the echo cannot be told
        from the user's voice, so nothing the canceller let through was handed on), and
        once when it is back."""
        heard, self._run_loud = self._run_loud, 0
        # On a path whose drift the fit does not hold (a sound server adapting its rate: see
        # appliance.core.drift.POOL_RUNS) the voice does not interrupt replies, however well
        # the linear canceller did.
        drifts = self._run_proved and not self._drift.steady
        proved, self._run_proved = self._run_proved and not drifts, False
        if drifts and not self._drift.judged:
            heard = 0  # too little measured yet to tell whether its drift holds
        barge_in = echo.voice_barge_in(heard, proved, self.voice_barge_in)
        if barge_in == self.voice_barge_in:
            return
        self.voice_barge_in = barge_in
        if barge_in:
            log.info("echo cancellation: the user's voice can interrupt the reply again")
        elif drifts:
            log.warning(
                "echo cancellation: the speaker's echo drifts %.0f ppm against the microphone,"
                " not at a steady rate (a sound server adapting its rate between two sound"
                " cards); the voice does not interrupt the reply (the talk button does):"
                " the sound cards straight through ALSA, or one card for both, keeps it",
                abs(self._drift.rate) / RATE * 1e6,
            )
        else:
            log.warning(
                "echo cancellation: cannot tell the user's voice from the speaker's echo"
                " through this microphone (a reply played without it); the voice does not"
                " interrupt the reply (the talk button does)"
            )
        if self._on_voice_barge_in is not None:
            self._on_voice_barge_in(barge_in)

    def _db(self, frame: Samples) -> float:
        np.copyto(self._f32, frame)
        return 10.0 * math.log10(float(np.dot(self._f32, self._f32)) / FRAME / 32768**2 + 1e-12)

    def _decide(self) -> None:
        """The coupling rule (``echo.trusted``) on the microphone's levels over the last
        seconds of the speaker playing loud against its floor (``echo.floor_db``: a
        percentile of every frame's level over the last 10 s)."""
        self._floor_stale = False
        loud = self._loud[~np.isnan(self._loud)]
        if len(loud) < echo.LOUD_MIN:
            self.trusted = False
            return
        level = self._level[~np.isnan(self._level)]
        level = level[level > echo.SILENT_DBFS]
        floor = echo.floor_db(
            float(np.percentile(level, echo.FLOOR_PERCENTILE)) if len(level) else None
        )
        self._floor = floor
        echo_db = float(np.percentile(loud, echo.ECHO_PERCENTILE))
        trusted = echo.trusted(echo_db, floor)
        if trusted != self.trusted:
            log.info(
                "echo cancellation: the microphone %s its speaker (%.0f dB over its floor)",
                "hardly hears" if trusted else "hears",
                max(0.0, echo_db - floor),
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
            self._level[self._n_level % echo.LEVEL_FRAMES] = mic_db
            self._n_level += 1
            loud = sounding and echo.loud(self._db(self._far_view))
            if loud:
                self._n_loud += 1
                if echo.settled(at, self._run_at):
                    self._loud[self._n_judged % echo.LOUD_FRAMES] = mic_db
                    self._n_judged += 1
            if echo.decide_now(self._n_level, sounding, self._floor_stale):
                self._decide()
        if sounding:
            self._last_far = at
        elif echo.idle(self._always, at, self._last_far):
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
            self._echo_delay.add(self._mic, self._far_view)
            if loud:
                self._follow_echo(at)
            # A filter kept from the last run waits until the reference is placed back on
            # its path: adapting to a path a few ms off would spoil it (through the loops,
            # 5-11 dB off the echo after the placement instead of 15-20).
            if self._drift.placed:
                mdf = self._mdf.process(self._mic, self._far_view)
                # Checked on tracked paths only (see below), but filled all along: a path is
                # first tracked as the user may speak.
                self._leak.add(mdf, self._far_view)
        elif self._mdf is not None:
            self.double_talk.silent()
            if echo.in_tail(at, self._stopped_at, self._tail_proved):
                # The echo of a path neither canceller knows outlasts the reference.
                self._apm.process_stream(self._near_frame)
                self._near_view[:] = 0
                self.residual_frames += 1
                return
        self._apm.process_stream(self._near_frame)
        mdf_db = 0.0 if mdf is None else self._db(mdf)
        if mdf is not None and self.double_talk.dropout(mic_db, mdf_db, loud, self._floor):
            self.dropouts += 1
            log.debug("echo path: the echo dropped out under the reference at %.3f"
                      " (microphone %.0f dB, linear canceller %.0f dB): placing it again",
                      at, mic_db, mdf_db)
            self._placed_afresh()
        if self._mdf is not None and loud:  # loud, whether the MDF was fed or still waits
            self._run_loud += 1
            self._run_proved = self._run_proved or self.double_talk.cancels
        if (
            mdf is not None
            and self.double_talk(mic_db, mdf_db, loud, self._floor)
            and self._drift.steady
        ):
            # Checked on a drifting path only: there the echo path moves unseen (two sound
            # cards, each with a sound server or a driver between them). Through one card it
            # does not, and in the simulated rooms (bench.aec, 10 min) what the MDF leaves of
            # a reverberant echo made users' "stops" look like it: 64 and 66 of 75 caught in
            # the 40 and 150 ms rooms with the check at 0.3 (72 at 0.5), against 74 and 75
            # (its first form, a single lag's correlation).
            leak = 0.0 if self._talking or not self._drift.tracked else self._leak.explained()
            if leak >= LEAK:
                # What the MDF let through is the echo at another delay (nearend.LEAK): the
                # path moved under it, and is found again.
                self.leaks += 1
                log.debug("echo path: the echo moved under the linear canceller at %.3f"
                          " (the reference explains %.2f of its output): placing it again",
                          at, leak)
                self._placed_afresh()
            else:
                # The user talks over the reply: AEC3 would hand on silence (nearend.py).
                if not self._talking:
                    self._talking = True
                    log.debug("double talk from %.3f: microphone %.0f dB, linear canceller"
                              " %.0f dB, the reference explains %.2f of its output",
                              at, mic_db, mdf_db, leak)
                self._near_view[:] = mdf
                return
        self._talking = False
        if sounding and (
            echo.converging(self._n_loud)
            or (self._mdf is not None and not (self.double_talk.proved and self._drift.steady))
            or echo.residual(self._db(self._near_view), mic_db)
            or (mdf is not None and self.double_talk.echo_only(mic_db, mdf_db))
        ):
            self._near_view[:] = 0
            self.residual_frames += 1
