"""Double talk: whether the user is talking over the reply, from a second, linear canceller.

When the user starts while the reply is loud (the echo at the microphone above the voice),
AEC3 (``appliance.audio.aec``) removes the voice along with the echo for up to 0.7 s: its
output is the room's noise (``bench.aec --onsets``), so nothing downstream can find the
onset there. speexdsp's MDF echo canceller has no suppressor: it only subtracts what its
adaptive filter predicts of the echo (about 20 dB of it in bench.aec's rooms), so the voice
keeps its level in its output. ``MdfCanceller`` runs it beside AEC3 on the same microphone
frames and the same reference; ``DoubleTalk`` decides, per 10 ms frame, that the user is
there when the MDF took much less off the microphone than it does off the echo alone, and
the canceller then hands on the MDF's output (the voice, the echo 20 dB down) instead of
AEC3's silence; and when the MDF took most of the microphone off (the echo alone), what AEC3
let through is residual echo and becomes silence. The VAD and its echo guard decide the
rest as usual.

The library is Debian's ``libspeexdsp1`` (``scripts/setup.sh``; PulseAudio depends on it),
called through ctypes: ``load_mdf`` raises OSError when it is missing, and
``aec.load_canceller`` then logs one warning and runs without the rule.

Imports: ctypes, numpy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

_SET_SAMPLING_RATE = 24  # SPEEX_ECHO_SET_SAMPLING_RATE (speex/speex_echo.h)
# The MDF's filter: the room after the direct path. The echo is held 10 ms behind the
# reference it is given (``appliance.core.drift``), so the device's and sound server's
# latency need not fit in it; a shorter filter converges faster and cancels more
# (replayed through bench.echo_loop's loops: 0.25 s -> 0.12 s, 2-6 dB more off the echo).
FILTER_S = 0.12
# The decision (bench.aec, 10 min in three rooms: see docs/performance.md):
# a frame is the user's when the MDF took less than _NEAR_DB off the microphone, the
# microphone is _ABOVE_FLOOR_DB over its floor (at the floor the MDF cannot take anything
# off, echo or not), and the MDF has converged: over its last _CONVERGE_MIN frames with the
# speaker loud (_RECONVERGE_MIN for a kept filter) it took a median of _CONVERGED_DB off.
_NEAR_DB = 8.0
# ...and less than what the MDF takes off the echo alone in all but the worst _LOW_PCT % of
# loud frames, less _LOW_MARGIN_DB: where the echo path is steady (the simulated rooms, a
# fixed loop) the echo's frames lose 12 dB or more and _NEAR_DB decides; where it is not (a
# rate-adapting loop under load: echo frames losing 4-5 dB under a "converged" MDF), the bar
# follows the echo's own worst frames down, and those no longer pass for the user (through
# tests/test_aec.py's real loop with a busy core beside it, 1 run in 5 was cut).
_LOW_PCT = 5
_LOW_MARGIN_DB = 1.0
# The bar comes from frames the MDF took off once converged, from _BAR_MIN of them after a
# reset; until then the last one stands (the path's). From the frames of a reconvergence a
# user who says "stop" just then set it (bench.echo_loop's 100 ms loop: the first syllable
# over a loud reply put it at 0 dB and none of the voice's frames could be the user's); at
# _NEAR_DB until a whole window was in, echo frames a rate-adapting loop took 7-9 dB off,
# 0.2 s after the kept filter reconverged, passed for the user's.
_BAR_MIN = 50
_ABOVE_FLOOR_DB = 15.0
_CONVERGED_DB = 15.0
_CONVERGE_FRAMES = 300
_CONVERGE_MIN = 200
# ...or of _RECONVERGE_MIN, for a filter kept from the last reply and placed back on its
# echo path (``appliance.core.drift``): it has converged once; this checks it fits again.
# Through bench.echo_loop's fixed loops such a filter took a median of 17-40 dB off its
# first 30 loud frames (one spoilt by a user talking over a whole reply: 11-12 dB); at 100
# frames a "stop" in the first 1.6-1.9 s of a reply could not count (said 1.2 s in: 4 of 6
# caught, 373-804 ms after the onset).
_RECONVERGE_MIN = 30
_CHECK_EVERY = 50
# ...checked every _RECHECK_EVERY loud frames until it has (every _CHECK_EVERY otherwise: the
# median and the bar recomputed every 10 frames also for a fresh or converged filter let
# 2 residual-echo onsets through in bench.aec's rooms with the echo guard off).
_RECHECK_EVERY = 10
# ...and the MDF's output is above what is left of the echo of the last _RECENT frames:
# the loudest of them less the MDF's median reduction. A quiet syllable right after a loud
# one keeps the loud one's residual (reverberation, clipping) at a level the user's voice
# would have: without this, 4 more self-interruptions in 10 min of the 40 ms room.
_RECENT = 20
# ...by _ABOVE_RESIDUAL_DB: through a rate-adapting loop (bench.echo_loop, 30 ms) the echo
# path glitched for 80 ms under a converged MDF (18 dB typical), which took 1-8 dB off
# those frames; their output, -31..-37 dBFS, stood 1-5 dB over the residual bound and cut
# the reply. A voice over the reply stands well above it.
_ABOVE_RESIDUAL_DB = 6.0
# A frame judged the user's also hands on the next _HOLD frames (a syllable's quieter
# edges): p95 287 -> 180 ms in the 80 ms room. At 8 frames the echo's own bursts get through
# (3-9 self-interruptions per room in 10 min); 3-5 measured the same.
_HOLD = 4
# ...but only from the second of _ONSET frames in a row that look like the user. Once the
# MDF is placed on the echo path and converged (``appliance.core.drift``), what else looks
# like the user is a glitch of the echo path itself: a sound server or a device dropping or
# repeating a few ms of the speaker's audio makes one 10 ms frame the MDF cannot cancel
# (through bench.echo_loop's 60 ms loop: frames it took 0-3 dB off between frames it took
# 20-30 dB off), and 4 such frames in 2 s cut a reply. A voice lasts longer than one frame:
# this costs its onset 10 ms.
_ONSET = 2
# The other way round: a frame the converged MDF took at least _ECHO_ONLY_DB off is echo
# with at most a faint voice under it, so what AEC3 let through of it is residual echo and
# is handed on as silence (``core.echo.residual``, from the linear canceller's view).
# bench.aec, 10 min: the self-interruption at 506 s (AEC3 alone: in three of five rooms)
# goes, 0 in all five, from 10 to 14 dB; at 16-18 dB it stays.
_ECHO_ONLY_DB = 12.0
# Through real devices the echo path moves: every reply is a new playback run whose sound
# server latency differs by tens of ms, a playback underrun pushes what follows later, and
# a rate-adapting loop (two clocks) slides. The MDF then takes little off the echo until it
# has re-converged (0.3-1 s), exactly what the user's voice looks like: through PulseAudio
# loops (bench.echo_loop) 14 of 24 replies were cut by their own echo, each within 0.1 s of
# frames this rule handed on. So a frame is only the user's when the MDF has proved itself
# on the current path: its reduction, smoothed over the loud frames since the path last
# moved (_PROVE_ALPHA: about 0.2 s, from 0 dB), is at least _PROVE_DB, over at least
# _PROVE_FRAMES of them. The user's onset comes after such frames; a moved path's first frames do not (the
# MDF takes 0-6 dB off them; the simulated rooms' first utterance, 5 s in, comes at 14 dB).
_PROVE_FRAMES = 30
_PROVE_DB = 10.0
_PROVE_ALPHA = 0.05
# An MDF whose output is louder than its input added its own misprediction of the echo (it
# diverged): never the user's voice.
_DIVERGED_DB = 1.0
# A converged MDF whose output is this much louder than its input predicted an echo that did
# not come: the echo path dropped out or jumped under it (a sound server's or a device's
# underrun, which the player's timing does not see). Through bench.echo_loop's 150 ms loop
# the microphone fell to -45..-80 dBFS for 150 ms under a loud reference, the echo came back
# later than before, the MDF took 5-8 dB off it (a voice's figures) and the reply was cut.
_DROPOUT_DB = 6.0
# A frame the MDF took down to within this of the microphone's floor counts as cancelled
# (a faint echo, a few dB over the room noise, cannot lose 15 dB).
_AT_FLOOR_DB = 6.0

Samples = npt.NDArray[np.int16]


class MdfCanceller:
    """speexdsp's MDF echo canceller on 16-bit mono frames of a fixed size."""

    def __init__(self, lib: Any, frame: int, rate: int) -> None:
        self._lib = lib
        state = lib.speex_echo_state_init(frame, int(rate * FILTER_S))
        if not state:
            raise OSError("speex_echo_state_init failed")
        self._state = state
        value = ctypes.c_int(rate)
        lib.speex_echo_ctl(state, _SET_SAMPLING_RATE, ctypes.byref(value))
        self.out: Samples = np.zeros(frame, dtype=np.int16)
        self._finalizer = weakref.finalize(self, lib.speex_echo_state_destroy, state)

    def process(self, near: Samples, far: Samples) -> Samples:
        """The microphone frame ``near`` less what the filter predicts of the echo of
        ``far`` (the reference for the same moment); the result is ``self.out``."""
        self._lib.speex_echo_cancellation(
            self._state, near.ctypes.data, far.ctypes.data, self.out.ctypes.data
        )
        return self.out

    def close(self) -> None:
        self._finalizer()


def load_mdf(frame: int, rate: int, library: str | None = None) -> MdfCanceller:
    """The MDF canceller; raises OSError (one line, naming the library) when speexdsp's
    library is missing or does not load."""
    name = library or ctypes.util.find_library("speexdsp")
    if name is None:
        raise OSError("libspeexdsp is not installed (apt-get install libspeexdsp1)")
    try:
        lib = ctypes.CDLL(name)
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_cancellation.restype = None
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
        lib.speex_echo_ctl.restype = ctypes.c_int
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_state_destroy.restype = None
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError) as exc:
        raise OSError(f"{name}: not a usable speexdsp library: {exc}") from exc
    return MdfCanceller(lib, frame, rate)


class DoubleTalk:
    """The decision, from levels only (dBFS of 10 ms frames): no I/O, no clock."""

    def __init__(self) -> None:
        self._reduction = np.full(_CONVERGE_FRAMES, np.nan)
        self._echo = np.full(_CONVERGE_FRAMES, np.nan)  # ...once converged (see _BAR_MIN)
        self._echo_n = 0
        self._n = 0
        self._converge_min = _CONVERGE_MIN
        self._typical = 0.0  # the MDF's median reduction (dB)
        self._near = _NEAR_DB  # a frame the MDF took less than this off may be the user's
        self._recent = [-math.inf] * _RECENT  # the microphone's last levels
        self._k = 0
        self._hold = 0  # frames still handed on after one judged the user's
        self._streak = 0  # frames in a row that looked like the user
        self._dropping = False  # the last frame looked like a dropout (see dropout)
        self._proved = 0.0  # the MDF's smoothed reduction on the current path (dB)
        self._proved_n = 0  # loud frames since the path moved
        self.converged = False
        self.frames = 0  # frames judged the user's

    @property
    def cancels(self) -> bool:
        """The MDF cancels the echo on the current path (see _PROVE_FRAMES): the path has
        not just moved under both cancellers."""
        return self._proved_n >= _PROVE_FRAMES and self._proved >= _PROVE_DB

    @property
    def proved(self) -> bool:
        """``cancels``, and the MDF has converged: only then can a frame be judged the
        user's, and only then is the other canceller's output believed while the speaker
        sounds (``aec.EchoCanceller``)."""
        return self.converged and self.cancels

    def __call__(self, mic_db: float, mdf_db: float, loud: bool, floor_db: float) -> bool:
        """Whether to hand on the MDF's output for this frame (the user's, or held after
        one): ``mic_db`` the microphone, ``mdf_db`` the MDF's output, ``loud`` the speaker
        playing loud, ``floor_db`` the microphone's floor. Called while the speaker sounds."""
        proved = self.proved  # judged before this frame counts: an onset keeps its own bar
        reduction = mic_db - mdf_db
        self._recent[self._k % _RECENT] = mic_db
        self._k += 1
        looks = (
            proved
            and not math.isinf(floor_db)
            and mic_db > floor_db + _ABOVE_FLOOR_DB
            and mic_db - self._near < mdf_db <= mic_db + _DIVERGED_DB
            and mdf_db > max(self._recent) - self._typical + _ABOVE_RESIDUAL_DB
        )
        self._streak = self._streak + 1 if looks else 0
        if self._streak >= _ONSET:
            self._hold = _HOLD + 1
        elif not looks and loud and self._hold == 0 and mic_db > floor_db + 2 * _AT_FLOOR_DB:
            # The proof follows the echo alone: the user's frames (judged, or held) leave it,
            # and so do frames with nothing to cancel (the echo path's delay at the start of
            # a run: the MDF's output is at the floor there whatever its filter).
            if mdf_db <= floor_db + _AT_FLOOR_DB:
                # Cancelled down to the room's noise: all that a faint echo can lose.
                reduction = max(reduction, _CONVERGED_DB + _AT_FLOOR_DB)
            # It falls four times slower than it rises: a user who starts talking while the
            # MDF is still converging (no frame judged theirs yet) must keep the other
            # canceller's output for the VAD's few hundred ms.
            rate = _PROVE_ALPHA if reduction > self._proved else _PROVE_ALPHA / 4
            self._proved += rate * (reduction - self._proved)
            self._proved_n += 1
        if loud and self._hold == 0:
            # What the MDF takes off the echo: the user's frames (judged, or held) leave it;
            # a single frame that looks like the user's is the echo's own worst (the bar's).
            self._reduction[self._n % _CONVERGE_FRAMES] = reduction
            self._n += 1
            if self.converged:  # the bar: what the converged filter takes off the echo
                self._echo[self._echo_n % _CONVERGE_FRAMES] = reduction
                self._echo_n += 1
            rechecking = self._converge_min == _RECONVERGE_MIN and not self.converged
            if self._n % (_RECHECK_EVERY if rechecking else _CHECK_EVERY) == 0:
                # What the filter does now: its last _converge_min frames, not the ones it
                # reconverged over (through the rate-adapting loops a kept filter was back at
                # 15-27 dB 1.5 s into a reply while the median since its reset, 6-12 dB, kept
                # a "stop" 2.7 s in from counting).
                recent = min(self._n, self._converge_min)
                window = np.arange(self._n - recent, self._n) % _CONVERGE_FRAMES
                self._typical = float(np.nanmedian(self._reduction[window]))
                if self._echo_n >= _BAR_MIN:
                    low = float(np.nanpercentile(self._echo, _LOW_PCT)) - _LOW_MARGIN_DB
                    self._near = max(0.0, min(_NEAR_DB, low))
                # Once converged, it stays so until the next reset: a path that moves under
                # it must prove itself again (``cancels``), not reconverge.
                self.converged = self.converged or (
                    self._n >= self._converge_min and self._typical >= _CONVERGED_DB
                )
        if self._hold == 0:
            return False
        self._hold -= 1
        self.frames += 1
        return True

    def dropout(self, mic_db: float, mdf_db: float, loud: bool, floor_db: float) -> bool:
        """Whether the echo path dropped out or jumped under the converged MDF (see
        ``_DROPOUT_DB``), from the second frame in a row that says so: the path must be
        found again (``moved``). One frame alone is a syllable's onset after a digitally
        silent pause, whose echo is not there yet while the filter's faint leading taps
        predict some (through the silent-floor loops: the MDF at -58..-64 dBFS over a
        microphone at -95)."""
        now = (
            self.converged
            and loud
            and mdf_db > mic_db + _DROPOUT_DB
            and mdf_db > floor_db + _AT_FLOOR_DB
        )
        dropped, self._dropping = now and self._dropping, now
        return dropped

    def echo_only(self, mic_db: float, mdf_db: float) -> bool:
        """Whether this frame is the echo alone (called when ``__call__`` said no)."""
        return self.converged and mic_db - mdf_db >= _ECHO_ONLY_DB

    def moved(self) -> None:
        """The echo path moved (a new playback run, the reference re-synchronised): no
        frame is the user's until the MDF has proved itself again, and any hold ends."""
        self._proved, self._proved_n, self._hold, self._streak = 0.0, 0, 0, 0

    def reset(self, quick: bool = False) -> None:
        """The echo path changed under the MDF (a new playback run, a new filter): what it
        took off the echo before says nothing about now, so it must converge again
        (``converged``) before a frame can be judged the user's. Through the real loop under
        load a fresh MDF "proved" itself 1.4 s into a reply, the old median said converged,
        and a frame it took 6 dB off (still converging) was judged the user's: the reply was
        cut. ``quick``: the filter was kept and its path restored (``_RECONVERGE_MIN``).
        The bar the echo's worst frames set stays until the MDF has converged again
        (``_BAR_MIN``)."""
        self._reduction[:] = np.nan
        self._n = 0
        self._echo[:] = np.nan
        self._echo_n = 0
        self._converge_min = _RECONVERGE_MIN if quick else _CONVERGE_MIN
        self._typical = 0.0
        self.converged = False
        self.moved()

    def silent(self) -> None:
        """The speaker is silent this frame: no decision, and any hold ends."""
        self._hold = self._streak = 0


# What the MDF let through at the onset of a frame judged the user's is checked against the
# reference: the user's voice is not in it, an echo the MDF no longer fits is. Through
# bench.echo_loop's two-clock relay the echo path jumped by a few ms after a digitally silent
# pause (a path the player's timing does not see), the converged MDF took 0-1 dB off the echo
# that came back, and 100 ms of it were judged the user's: the reply was cut. The check: a
# short filter of the reference (LEAK_TAPS_S either side of the lag where the two correlate
# best, at lags up to LEAK_LAG_S earlier: the echo lies 10 ms behind that reference while it
# is placed) is fitted to the MDF's output over the last LEAK_S (least squares), and if it
# explains LEAK or more of the output's last LEAK_ONSET_S (the onset: before it, what the
# MDF leaves of the echo may well be explained), that "voice" is the echo at another delay.
# A single lag's correlation told them apart only for jumps of a millisecond or more: what a
# smaller jump leaves is the echo less itself shifted by a few samples, two taps that no
# single lag fits (about 0.3 at 7 samples). The relay's path jumped 7 samples, and 60 in
# another reply, and both replies were cut; tests/test_aec.py's echo moved 0.4 ms was handed
# on at -27 dBFS. Explained there: 0.79 (0.4 ms), 0.84 (1 ms), 0.70 (3 ms), 0.82 (10 ms),
# 0.67 (2 ms earlier).
LEAK_S = 0.16
LEAK_LAG_S = 0.06
LEAK_TAPS_S = 0.002
LEAK_ONSET_S = 0.03
LEAK = 0.5
LEAK_FLOOR = 0.1  # lags whose reference holds less than this of the loudest one's energy


class Leak:
    """The MDF's output and the reference it was given, over the last ``LEAK_S``, and how
    much of the one the other explains (see ``LEAK``)."""

    def __init__(self, rate: int) -> None:
        self._n = int(LEAK_S * rate)
        self._lag = int(LEAK_LAG_S * rate)
        self._out = np.zeros(self._n, dtype=np.float32)
        self._far = np.zeros(self._n + self._lag, dtype=np.float32)
        self._taps = int(LEAK_TAPS_S * rate)
        self._onset = int(LEAK_ONSET_S * rate)
        self._fft = 1 << math.ceil(math.log2(2 * self._n + self._lag))
        self._filled = 0  # samples added since the rings were cleared

    def add(self, out: Samples, far: Samples) -> None:
        """The MDF's output frame and the reference frame it was given."""
        for ring, frame in ((self._out, out), (self._far, far)):
            k = len(frame)
            ring[:-k] = ring[k:]
            ring[-k:] = frame
        self._filled += len(far)

    def clear(self) -> None:
        self._out[:] = 0
        self._far[:] = 0
        self._filled = 0

    def explained(self) -> float:
        """The share of the output's energy over the last ``LEAK_ONSET_S`` that a filter of
        the reference fitted over the last ``LEAK_S`` explains (see ``LEAK``), 0-1; 0 until
        the rings have filled since they were cleared: 65 taps fitted to the few frames a
        ring held explained 0.5-0.9 of a voice (three "stops" through bench.echo_loop's
        loops, each said as the path's drift was first tracked, were taken for the echo)."""
        n, lag = self._n, self._lag
        out, far = self._out.astype(np.float64), self._far.astype(np.float64)
        onset = out[-self._onset :]
        judged = float(np.dot(onset, onset))  # what is judged: nothing there, nothing to say
        if judged <= 0.0 or self._filled < len(far):
            return 0.0
        # cross[k]: the output against the reference window starting k samples into _far,
        # i.e. (lag - k) samples earlier than the output.
        spectrum = np.fft.rfft(far, self._fft) * np.conj(np.fft.rfft(out, self._fft))
        cross = np.fft.irfft(spectrum, self._fft)[: lag + 1]
        squares = np.concatenate(([0.0], np.cumsum(far**2)))
        windows = squares[n : n + lag + 1] - squares[: lag + 1]
        # A lag whose reference is nearly silent (a pause) holds no echo to speak of, and
        # dividing by its energy would only scale rounding errors up.
        if windows.max() <= 0.0:
            return 0.0
        loud = windows >= LEAK_FLOOR * windows.max()
        rho = np.where(loud, np.abs(cross) / np.sqrt(np.maximum(windows, 1e-12)), 0.0)
        best = int(np.argmax(rho))
        lo, hi = max(0, best - self._taps), min(lag, best + self._taps)
        rows = sliding_window_view(far, n)[lo : hi + 1]  # the reference at each lag
        # Least squares by its normal equations (a tenth of lstsq's time: 0.6 ms here), a
        # hair of ridge for the near-collinear lags of a voiced reference.
        gram = rows @ rows.T
        gram += np.eye(len(rows)) * (1e-6 * np.trace(gram) / len(rows) + 1e-9)
        fit = np.linalg.solve(gram, rows @ out)
        left = onset - fit @ rows[:, -self._onset :]
        return float(max(0.0, 1.0 - np.dot(left, left) / judged))
