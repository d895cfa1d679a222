"""Turn endpointing, sans I/O: per-frame speech probability in, turn decisions out.

Owns when a turn opens, when it ends and whether it was a request at all:

- **Onset with noise rejection.** A turn opens (``START``) once ``onset_ms`` of the last
  ``onset_window_ms`` were voiced (probability >= ``speech_threshold``). A neural VAD gives
  stationary noise (fans, hum, pink/brown/white) a low probability, so this rule alone keeps
  room noise out; the window only stops single clicks. ``onset_lag_ms`` tells the caller how
  far back the speech began, so its pre-roll can be checked to hold the first syllable.
- **Adaptive end of turn.** Inside a turn a frame is silent below ``silence_threshold``, or,
  when the caller passes frame levels, when it is within ``floor_margin_db`` of the room's
  floor (a neural VAD's probability lingers for a few hundred ms after the last word; the
  level does not). ``hint_lead_ms`` before ``complete_ms`` of silence the core asks once per
  pause for an end-of-turn hint (``HINT``: run the end-of-turn model on the turn's audio and
  pass its "complete" probability to :meth:`Endpointer.hint`): no earlier, since only a pause
  that lasts ``complete_ms`` needs the answer (most pauses between words end sooner, and then
  the model is not run at all). A complete phrase ends after
  ``complete_ms`` of silence; an incomplete one (or one whose hint has not come back) only
  after ``incomplete_ms``, which is what keeps "set a timer for ... twelve minutes" one turn.
  Without a hint model (``use_hint=False``) every pause ends after ``silence_ms``.
- **Levels where the VAD is slow.** With levels, two more rules use them where a neural VAD
  lags 100-300 ms in noise (and misses some words outright): a turn's start is dated back to
  where the sound rose above the floor's margin (``rise_max_ms``), so the pre-roll holds the
  first syllable; and in a pause, sound after a quiet stretch holds the pause open and, once
  it lasts ``resume_ms``, resumes the speech (for at most ``resume_max_ms`` unless the VAD
  agrees), so the second half of "set a timer for ... twelve minutes" is not cut off while
  the VAD catches up. Neither opens a turn: only the VAD does.
- **Minimum voiced speech.** A turn that ends with less than ``min_voiced_ms`` of voiced
  frames is ``DISCARD``-ed (the caller clears what it sent and asks for no answer).
- After a turn ends no new one opens until the VAD's probability has dropped below
  ``speech_threshold`` once, and a turn is stopped after ``max_turn_ms`` whatever the audio.

The defaults are tuned for pymicro-vad (10 ms frames) with levels and the prosodic hint
(``appliance.audio.prosody``); ``python -m bench.turns`` measures them.

Time is an input: each frame carries its duration in ms, nothing reads a clock. Imports only
the standard library.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

RISE_GAP_MS = 100.0
"""Quiet that ends a stretch of sound (``EndpointSettings.rise_max_ms``): longer than a
stop consonant's closure, shorter than a pause between words."""


class Decision(enum.Enum):
    START = "start"
    """A turn opened: send the pre-roll and every frame from here on."""
    HINT = "hint"
    """A pause in the turn: run the end-of-turn model now and call ``hint()`` with its answer."""
    STOP = "stop"
    """The turn is complete: commit it."""
    DISCARD = "discard"
    """The turn ended with too little voiced speech to be a request: clear it, never answer."""


class Phase(enum.Enum):
    IDLE = "idle"
    SPEECH = "speech"
    PAUSE = "pause"


@dataclass(frozen=True)
class EndpointSettings:
    speech_threshold: float = 0.3
    """A frame is voiced at or above this probability (onset, and speech resuming a pause)."""
    silence_threshold: float = 0.35
    """Inside a turn a frame is silent below this probability. Below ``speech_threshold`` it
    is hysteresis; above, it cuts a VAD whose probability lingers after speech (pymicro-vad)."""
    onset_ms: int = 40
    """Voiced audio that opens a turn, within ``onset_window_ms``."""
    onset_window_ms: int = 100
    """The window ``onset_ms`` is counted over."""
    min_voiced_ms: int = 200
    """A turn with less voiced audio than this is discarded, not committed."""
    use_hint: bool = True
    """Ask for an end-of-turn hint at each pause (a semantic model is present)."""
    hint_lead_ms: int = 50
    """The hint is asked for this long before ``complete_ms`` of silence: the time its answer
    may take (the prosodic hint: about 1.5 ms on x86, an assumed 12 ms on a Pi Zero 2 W)."""
    hint_threshold: float = 0.5
    """A hint at or above this says the phrase is complete."""
    complete_ms: int = 250
    """Silence that ends a turn whose hint says complete."""
    incomplete_ms: int = 1000
    """Silence that ends a turn whose hint says incomplete or has not answered."""
    silence_ms: int = 800
    """Silence that ends a turn when ``use_hint`` is off."""
    floor_margin_db: float = 5.0
    """With levels given: inside a turn, a frame less than this above the room's floor is
    silence. At 10 dB SNR a weak stretch inside a phrase sinks within 6 dB of the floor for
    250 ms and more (``bench.turns``: 3 of 4 false cut-offs); 5 dB was the widest margin that
    cut off none of the requests of the hint's tuning voices (4 dB: p95 end of turn 450 ms)."""
    floor_ms: int = 1000
    """With levels given: the floor is the average level (dB) of the last ~this long of
    frames outside turns that the VAD calls non-speech."""
    max_turn_ms: int = 30000
    """A turn is stopped after this long whatever the audio (music, television)."""
    resume_ms: int = 40
    """With levels given: in a pause that has had a quiet frame, this long of frames above the
    floor's margin resumes the speech whatever the VAD says (0: off). A neural VAD takes
    100-200 ms to rise again on speech in noise, and misses some words; the level does not."""
    rise_max_ms: int = 500
    """With levels given: a turn's start is dated back to where the level last rose above the
    floor's margin, at most this long before the onset decision (0: off). In noise the VAD
    calls a first syllable 100-300 ms late; the pre-roll, counted from that start, holds it."""
    resume_max_ms: int = 400
    """Speech resumed by level alone lasts while the level stays up, at most this long unless
    the VAD agrees (a noise that rises inside a turn cannot hold it open)."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.speech_threshold <= 1.0 and 0.0 <= self.silence_threshold <= 1.0):
            raise ValueError("thresholds are probabilities: 0 to 1")
        if not 0 < self.onset_ms <= self.onset_window_ms:
            raise ValueError("need 0 < onset_ms <= onset_window_ms")
        if self.use_hint and not (self.hint_lead_ms >= 0 and self.complete_ms <= self.incomplete_ms):
            raise ValueError("need hint_lead_ms >= 0 and complete_ms <= incomplete_ms")


class Endpointer:
    """One stream's turns. Feed every frame to :meth:`process`, in order."""

    def __init__(self, settings: EndpointSettings | None = None) -> None:
        self.settings = settings or EndpointSettings()
        self.phase = Phase.IDLE
        self._window: deque[tuple[float, bool]] = deque()
        self._window_ms = 0.0
        self._window_voiced_ms = 0.0
        self.turn_ms = 0.0
        """Time since the turn opened (0 outside a turn)."""
        self.voiced_ms = 0.0
        """Voiced audio in the current turn, including the onset window's."""
        self.silence_ms = 0.0
        """Silence so far in the current pause."""
        self.onset_lag_ms = 0.0
        """At START: how long before the decision the turn's speech began (the first voiced
        frame of the window, or with levels where the sound rose, if earlier)."""
        self._hint_asked = False
        self._complete: bool | None = None
        self._armed = True
        self._stale = False
        self._loud_ms = 0.0
        self._quiet_seen = False
        self._held_ms = 0.0
        self._rise_ms = self._rise_quiet_ms = 0.0
        self.floor_db: float | None = None
        """The room's level, from the frames' levels outside turns (None until one came).
        A caller that skips frames outside turns (a detector asleep in a quiet room) sets
        it from its own estimate."""
        self.ended_silence_ms = 0.0
        """At STOP or DISCARD: the silence the turn ended on (end of speech -> decision)."""
        self._onset_ms = float(self.settings.onset_ms)
        self._onset_window_ms = float(self.settings.onset_window_ms)
        self._onset_threshold = self.settings.speech_threshold

    def process(
        self, frame_ms: float, probability: float, level_db: float | None = None
    ) -> Decision | None:
        """One frame of ``frame_ms`` with the VAD's speech ``probability`` and, optionally,
        its level (dB, any fixed reference: dBFS of the frame's RMS)."""
        s = self.settings
        quiet = level_db is not None and self._track_floor(frame_ms, level_db, probability)
        if self.phase is Phase.IDLE:
            # Levels do not gate the onset: at 10 dB SNR a first syllable's frames are often
            # within the margin of the floor, and the VAD alone keeps noise out. After a turn
            # the VAD must let go first (its probability lingers past the end levels saw).
            voiced = probability >= self._onset_threshold
            if self._stale:
                self._stale = voiced
                voiced = voiced and not quiet
            self._armed = self._armed or not voiced
            if level_db is not None:
                self._rise(frame_ms, quiet)
            return self._onset(frame_ms, voiced) if self._armed else None
        if quiet:
            probability = 0.0
        self.turn_ms += frame_ms
        if self.phase is Phase.SPEECH:
            if probability >= s.silence_threshold:
                self.voiced_ms += frame_ms
                self._held_ms = 0.0
            elif self._held_ms and not quiet and self._held_ms < s.resume_max_ms:
                self._held_ms += frame_ms  # resumed by level, the VAD not yet agreeing
            else:
                self.phase = Phase.PAUSE
                self.silence_ms = frame_ms
                self._hint_asked = False
                self._complete = None
                self._loud_ms = 0.0
                self._quiet_seen = quiet
        elif probability >= max(s.speech_threshold, s.silence_threshold):
            self._resume()
            self.voiced_ms += frame_ms
        else:
            self.silence_ms += frame_ms
            if level_db is not None and s.resume_ms > 0:
                self._sound_in_pause(frame_ms, quiet)
        if self.turn_ms >= s.max_turn_ms:
            return self._end()
        if self.phase is Phase.PAUSE and self._loud_ms == 0.0:
            return self._pause()
        return None

    def _sound_in_pause(self, frame_ms: float, quiet: bool) -> None:
        """Sound after a quiet stretch of a pause is speech coming back before the VAD says
        so: it holds the pause open, and resumes the speech once it lasts ``resume_ms``."""
        if quiet:
            self._quiet_seen = True
            self._loud_ms = 0.0
        elif self._quiet_seen:
            self._loud_ms += frame_ms
            if self._loud_ms >= self.settings.resume_ms:
                self._resume()
                self._held_ms = frame_ms

    def _rise(self, frame_ms: float, quiet: bool) -> None:
        """Follow the current stretch of sound above the floor (IDLE): it ends at
        ``RISE_GAP_MS`` of quiet, so a stop consonant's closure does not restart it."""
        if not quiet:
            self._rise_ms += frame_ms
            self._rise_quiet_ms = 0.0
        elif self._rise_ms:
            self._rise_quiet_ms += frame_ms
            if self._rise_quiet_ms >= RISE_GAP_MS:
                self._rise_ms = self._rise_quiet_ms = 0.0
            else:
                self._rise_ms += frame_ms

    def _resume(self) -> None:
        self.phase = Phase.SPEECH
        self.silence_ms = 0.0
        self._loud_ms = 0.0
        self._held_ms = 0.0

    def _track_floor(self, frame_ms: float, level_db: float, probability: float) -> bool:
        """Follow the room's floor outside turns; True if this frame is within
        ``floor_margin_db`` of it: no speech, whatever the VAD says (a neural VAD's
        probability lingers for a few hundred ms after the last word)."""
        s = self.settings
        if self.floor_db is None:
            self.floor_db = level_db
        elif self.phase is Phase.IDLE and probability < s.speech_threshold:
            self.floor_db += (level_db - self.floor_db) * min(1.0, frame_ms / s.floor_ms)
        return level_db < self.floor_db + s.floor_margin_db

    def require(self, onset_ms: float, threshold: float | None = None) -> None:
        """From now on ``onset_ms`` of audio voiced at ``threshold`` (default: the
        settings') open a turn, with the settings' slack (the echo guard asks for more, and
        surer, speech while the speaker plays: the canceller's residue is speech too)."""
        s = self.settings
        self._onset_threshold = s.speech_threshold if threshold is None else threshold
        self._onset_ms = max(1.0, onset_ms)
        self._onset_window_ms = self._onset_ms + s.onset_window_ms - s.onset_ms

    def hint(self, complete: float) -> Decision | None:
        """The end-of-turn model's probability that the phrase is complete, for the pause
        that asked. Ignored if speech resumed since. May end the turn at once."""
        if self.phase is not Phase.PAUSE or not self._hint_asked:
            return None
        self._complete = complete >= self.settings.hint_threshold
        return self._pause()

    def gap(self) -> None:
        """The frames stop coming here for a while (the echo guard's gate has them while the
        speaker plays). A VAD not run across the gap comes back with the state it was left
        in: pymicro-vad, stopped while its probability lingered after a turn, goes on saying
        "speech" over the silence after it, and the next request would open no turn (the
        VAD never let go in between). So after a gap the next turn is armed, and until the
        VAD's probability has dropped once, a frame is voiced only if its level says so too."""
        self._armed = True
        self._stale = True
        self._window.clear()
        self._window_ms = self._window_voiced_ms = 0.0

    def reset(self) -> None:
        """Forget any turn in progress (mute, reconnect, push-to-talk took over, a wake
        window opened). The VAD was not run meanwhile, as across a ``gap``."""
        self._armed = self._stale = True
        self.phase = Phase.IDLE
        self._window.clear()
        self._window_ms = self._window_voiced_ms = 0.0
        self.turn_ms = self.voiced_ms = self.silence_ms = 0.0
        self._hint_asked = False
        self._complete = None
        self._loud_ms = self._held_ms = self._rise_ms = self._rise_quiet_ms = 0.0
        self._quiet_seen = False

    @property
    def undecided_ms(self) -> float:
        """Inside a turn: how much more audio no frame can bring a decision in (``HINT``,
        ``STOP``, ``DISCARD``), whatever it holds: the pause must first last to the hint's or
        the end's threshold (a new pause, after speech resumes, to the first of them), or the
        turn reach ``max_turn_ms``. 0 outside a turn. A caller may gather this much before it
        feeds the frames without deciding any later."""
        if self.phase is Phase.IDLE:
            return 0.0
        s = self.settings
        first = float(s.complete_ms - s.hint_lead_ms if s.use_hint else s.silence_ms)
        until = first
        if self.phase is Phase.PAUSE:
            if s.use_hint and not self._hint_asked:
                target = first
            elif s.use_hint and self._complete is None:
                target = s.complete_ms  # an answer still to come may end the pause at once
            else:
                target = self.end_silence_ms
            until = min(first, target - self.silence_ms)
        return max(0.0, min(until, s.max_turn_ms - self.turn_ms))

    @property
    def end_silence_ms(self) -> float:
        """The silence that ends the current pause as things stand."""
        s = self.settings
        if not s.use_hint:
            return s.silence_ms
        return s.complete_ms if self._complete else s.incomplete_ms

    def _onset(self, frame_ms: float, voiced: bool) -> Decision | None:
        self._window.append((frame_ms, voiced))
        self._window_ms += frame_ms
        self._window_voiced_ms += frame_ms if voiced else 0.0
        while self._window_ms > self._onset_window_ms and len(self._window) > 1:
            old_ms, old_voiced = self._window.popleft()
            self._window_ms -= old_ms
            self._window_voiced_ms -= old_ms if old_voiced else 0.0
        if not voiced or self._window_voiced_ms < self._onset_ms:
            return None
        lag = 0.0
        for ms, was_voiced in reversed(self._window):
            lag += ms
            if was_voiced:
                self.onset_lag_ms = lag
        self.onset_lag_ms = max(self.onset_lag_ms, min(self._rise_ms, self.settings.rise_max_ms))
        self.phase = Phase.SPEECH
        self.turn_ms = self.onset_lag_ms
        self.voiced_ms = self._window_voiced_ms
        self.silence_ms = 0.0
        self._window.clear()
        self._window_ms = self._window_voiced_ms = 0.0
        return Decision.START

    def _pause(self) -> Decision | None:
        s = self.settings
        if s.use_hint and not self._hint_asked and self.silence_ms >= s.complete_ms - s.hint_lead_ms:
            self._hint_asked = True
            return Decision.HINT
        if self.silence_ms >= self.end_silence_ms:
            return self._end()
        return None

    def _end(self) -> Decision:
        decision = Decision.STOP if self.voiced_ms >= self.settings.min_voiced_ms else Decision.DISCARD
        self.ended_silence_ms = self.silence_ms
        self.reset()
        self._armed = self._stale = False  # no new turn until the VAD has let go of this one
        return decision
