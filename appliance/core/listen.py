"""The capture-side listening policy, sans I/O: when a turn starts and ends, what it sends.

``Listener`` owns the gate modes (``GateMode``), mute, push-to-talk, the wake window and the
follow-up window, the wake word's lookback, the echo guard, the earcon hold, the pre-roll and
the pacing of the capture thread. The front end (``appliance.audio.frontend``) does the DSP
and the buffers and feeds it, on the capture thread:

- control messages (``Control``), posted by the loop thread and drained by the front end;
- ``block(now)`` once per block of audio written to the history, ``now`` being the history's
  write position in source-rate samples (time is that count; nothing reads a clock);
- ``frame(speech, rest, level_db=...)`` per speech-detector frame: a speech probability
  (webrtcvad gives 1.0 or 0.0; pymicro-vad its own) and the frame's level;
- ``hint(complete)`` when a turn's pause asked for an end-of-turn hint (``Hint``);
- ``wake_heard(energies)`` when the wake-word detector fires;
- ``block_end()`` after the block's frames;
- ``pace(canceller_busy)``: how much audio to gather before the next call.

It answers with typed decisions (``StartTurn``, ``EndTurn``, ``Hint``, ``WakeWindow``,
``Guard``) and a ``Route`` saying what the block's audio is for.

The turn decision in ``vad`` mode and the wake-mode windows (``Detector``): ``MICRO``, the
endpoint core (``appliance.core.endpoint``) on 10 ms frames of pymicro-vad, or ``WEBRTC``,
the hang-over gate (``appliance.core.gate``) on webrtcvad's yes/no, the behaviour before. Imports: the standard library and
``appliance.core`` only.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.core.endpoint import Decision as EndpointDecision
from appliance.core.endpoint import Endpointer, EndpointSettings
from appliance.core.gate import Edge, VadGate

# Listening (no turn, nothing voiced in the last frame): speech frames are handed over in
# blocks this long, one capture wake-up per block (see ``Listener.pace``).
LISTEN_BATCH_MS = 240
# Wake mode waiting for its word: shorter blocks, since the listening window opens at the end
# of the block the word was heard in (what follows it there is not sent).
WAKE_BATCH_MS = 120
# Wake mode with ``send_wake_word``: how far back from a detection the wake word may begin.
WAKE_LOOKBACK_S = 1.5
# The wake word begins at the first 10 ms block within 20 dB of its loudest, less 50 ms.
WAKE_BLOCK_MS = 10
_WAKE_MARGIN_MS = 50
_WAKE_RANGE = 100.0  # 20 dB in energy


class GateMode(enum.StrEnum):
    """How local audio is gated before anything is sent."""

    VAD = "vad"
    PUSH_TO_TALK = "push_to_talk"
    ALWAYS = "always"
    WAKE = "wake"


class Detector(enum.StrEnum):
    """Which turn decision runs in ``vad`` mode and the wake-mode windows."""

    MICRO = "micro"  # pymicro-vad probabilities + the endpoint core
    WEBRTC = "webrtc"  # webrtcvad yes/no + the hang-over gate


class Control(enum.Enum):
    """What the loop thread tells the capture side (one message per change)."""

    TALK_PRESSED = "talk pressed"
    TALK_RELEASED = "talk released"
    MUTE_ON = "mute on"
    MUTE_OFF = "mute off"
    SPEAKER_PLAYING = "speaker playing"
    SPEAKER_IDLE = "speaker idle"
    EARCON_HOLD = "earcon hold"
    EARCON_RELEASE = "earcon release"
    FOLLOW_UP = "follow-up"  # a reply ended: wake mode listens without the wake word


class Route(enum.Enum):
    """What the front end does with the block it just wrote to the history."""

    DROP = "drop"  # nothing (muted, waiting for the button)
    SEND = "send"  # all of it upstream (a turn streams with no detector: always, push-to-talk)
    WAKE = "wake"  # to the wake-word detector
    DETECT = "detect"  # upstream if a turn streams, then frame by frame to the speech detector


class Pace(enum.Enum):
    """How much audio the capture thread gathers before the next call."""

    PERIOD = "period"  # every period, as soon as the device has it
    FRAME = "frame"  # one speech-detector frame
    BLOCK = "block"  # ``Listener.block_frames`` frames
    CHUNK = "chunk"  # the rest of the upstream chunk being filled


@dataclass(frozen=True, slots=True)
class ListenSettings:
    """The listening policy's settings (``appliance.config.listen_settings`` maps ``[gate]``)."""

    mode: GateMode = GateMode.VAD
    """How local audio is gated."""
    detector: Detector = Detector.WEBRTC
    """The turn decision (``MICRO`` takes 10 ms frames)."""
    endpoint: EndpointSettings = EndpointSettings()
    """``MICRO``: the endpoint core's settings."""
    gate_frame_ms: int = 30
    """``MICRO``: webrtcvad's frame for the echo guard. While the speaker plays a turn opens
    (and then ends) as with ``WEBRTC``: the canceller's residue is speech to pymicro-vad, and
    webrtcvad's onset is the faster barge-in."""
    frame_ms: int = 30
    """The speech detector's frame (``MICRO``: 10)."""
    start_frames: int = 3
    """Speech starts when this many of the last ``start_window`` frames are voiced."""
    start_window: int = 5
    """Window of frames for the start decision."""
    preroll_ms: int = 300
    """Audio from before the trigger that is sent first."""
    hangover_ms: int = 700
    """Unvoiced time after which speech is over."""
    warmup_ms: int = 150
    """Ignored at the start: webrtcvad reports speech while it adapts."""
    aggressiveness: int = 2
    """webrtcvad aggressiveness while the speaker is idle."""
    guard_aggressiveness: int = 3
    """Echo guard: webrtcvad aggressiveness while the speaker plays."""
    guard_start: tuple[int, int] = (4, 6)
    """Echo guard: (start_frames, start_window) while the speaker plays."""
    speech_threshold: float = 0.5
    """A frame whose speech probability reaches this is voiced."""
    wake_listen_s: float = 5.0
    """Wake mode: after the wake word, how long to wait for the request to start."""
    follow_up_s: float = 8.0
    """Wake mode: after a reply, how long the user may answer without the wake word."""
    send_wake_word: bool = False
    """Wake mode: send the wake word itself at the start of the turn."""

    @property
    def uses_detector(self) -> bool:
        """The speech detector runs in this mode."""
        return self.mode in (GateMode.VAD, GateMode.WAKE)

    @property
    def history_s(self) -> float:
        """How much audio the front end must keep for pre-roll and a late wake word."""
        return 2 + (WAKE_LOOKBACK_S + self.wake_listen_s if self.send_wake_word else 0)


@dataclass(frozen=True, slots=True)
class StartTurn:
    """A turn begins: send ``lead`` (history positions [start, end): the wake word), then the
    last ``back`` samples of the history."""

    back: int
    lead: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class EndTurn:
    """The turn ended (``cancelled``: by mute, nothing more is sent; ``discarded``: too
    little voiced speech to be a request, cleared and never answered). ``silence_ms``: how
    long before the end of the block the speech ended (end of speech -> this decision)."""

    cancelled: bool = False
    discarded: bool = False
    silence_ms: int = 0


@dataclass(frozen=True, slots=True)
class Hint:
    """A pause in the turn: call ``Listener.hint`` with P(the phrase so far is complete)."""


@dataclass(frozen=True, slots=True)
class WakeWindow:
    """Wake mode: the device listens without the wake word (``open``), because the wake
    word was just heard (``wake_word``: show listening, play the wake earcon, interrupt
    the agent) or a reply just ended (the follow-up window); or it stopped listening
    (``open`` false: the window ran out with no speech, or mute). A turn that starts in
    the window closes it without a ``WakeWindow(False)``."""

    open: bool
    wake_word: bool = False


@dataclass(frozen=True, slots=True)
class Guard:
    """Echo guard switched: run the speech detector at ``aggressiveness`` from now on."""

    aggressiveness: int


Decision = StartTurn | EndTurn | WakeWindow | Guard

_STOP = EndTurn()
_HINT = Hint()
_CANCEL = EndTurn(cancelled=True)
_CLOSE = WakeWindow(False)
_NONE: tuple[Decision, ...] = ()


def wake_word_start(energies: Sequence[float], rate: int) -> int:
    """Samples back from a detection where the wake word began, given the energies of the
    last ``WAKE_LOOKBACK_S`` in ``WAKE_BLOCK_MS`` blocks (oldest first, ending at the
    detection): the first block within 20 dB of the loudest, less a 50 ms margin."""
    if not energies:
        return 0
    block = rate * WAKE_BLOCK_MS // 1000
    floor = max(energies) / _WAKE_RANGE
    first = next((i for i, e in enumerate(energies) if e > floor), 0)
    return len(energies) * block - max(0, first * block - rate * _WAKE_MARGIN_MS // 1000)


class Listener:
    """The listening policy for one front end; positions are source-rate samples."""

    def __init__(self, settings: ListenSettings, rate: int) -> None:
        self.settings = settings
        self.rate = rate
        self.mode = settings.mode
        micro = settings.detector is Detector.MICRO
        self._gate = VadGate(
            frame_ms=settings.gate_frame_ms if micro else settings.frame_ms,
            start_frames=settings.start_frames,
            start_window=settings.start_window,
            hangover_ms=settings.hangover_ms,
            warmup_ms=settings.warmup_ms,
        )
        self._threshold = settings.speech_threshold
        self._ep: Endpointer | None = None
        self._gate_turn = False  # MICRO: this turn was opened by the echo guard's gate
        if micro:
            self._ep = Endpointer(settings.endpoint)
            self._threshold = settings.endpoint.speech_threshold
        self._preroll = rate * settings.preroll_ms // 1000
        batch_ms = WAKE_BATCH_MS if settings.mode is GateMode.WAKE else LISTEN_BATCH_MS
        self.block_frames = max(1, batch_ms // settings.frame_ms)
        """Frames in a listening block (``Pace.BLOCK``)."""
        # What the loop thread said (drained from its messages).
        self.talking = False
        self.muted = False
        self.playing = False
        self.earcon = False
        self._follow_up_asked = False
        self.streaming = False
        self.guarded = False
        self._last_voiced = False
        self._now = 0
        # Wake mode: window bounds are history positions; None: no window open.
        self._listen = int(rate * settings.wake_listen_s)
        self._follow_up = int(rate * settings.follow_up_s)
        self._window_start = 0
        self._window_end: int | None = None
        self._wake_start: int | None = None  # where the wake word began, if it is to be sent
        self._wake_end = 0  # where it was detected

    # -- the loop thread's messages ---------------------------------------------------------------

    def control(self, msg: Control) -> None:
        """Take in one message; what it changes is decided at the next ``block``."""
        if msg is Control.TALK_PRESSED or msg is Control.TALK_RELEASED:
            self.talking = msg is Control.TALK_PRESSED
        elif msg is Control.MUTE_ON or msg is Control.MUTE_OFF:
            self.muted = msg is Control.MUTE_ON
        elif msg is Control.SPEAKER_PLAYING or msg is Control.SPEAKER_IDLE:
            self.playing = msg is Control.SPEAKER_PLAYING
        elif msg is Control.EARCON_HOLD or msg is Control.EARCON_RELEASE:
            self.earcon = msg is Control.EARCON_HOLD
        elif msg is Control.FOLLOW_UP and self.mode is GateMode.WAKE:
            self._follow_up_asked = True

    # -- per block ------------------------------------------------------------------------------

    def pace(self, canceller_busy: bool = False) -> Pace:
        """How much the capture thread may gather before the next call (the capture CPU is
        per wake-up). A canceller at work times the microphone by each read: every period.
        Muted: blocks. Streaming: the rest of the upstream chunk (it cannot go out sooner).
        Push-to-talk: every period while the button is held before its turn starts, else
        blocks. Speaker playing (local barge-in must be fast) or an earcon (its audio must be
        judged while the hold still covers it): every period. Listening: blocks while the last
        frame was unvoiced (a turn needs several voiced frames, and its pre-roll is taken back
        from the frame that opens it, so a block costs no audio), else frame by frame."""
        if canceller_busy:
            return Pace.PERIOD
        if self.muted:
            return Pace.BLOCK
        if self.streaming:
            return Pace.CHUNK
        if self.mode is GateMode.PUSH_TO_TALK:
            return Pace.PERIOD if self.talking else Pace.BLOCK
        if self.playing or self.earcon:
            return Pace.PERIOD
        return Pace.FRAME if self._last_voiced else Pace.BLOCK

    def undecided(self) -> int:
        """While a turn streams under the endpoint core: samples of audio in which no frame
        can bring a decision (``Endpointer.undecided_ms``), so ``Pace.CHUNK`` may gather them
        in one block without the turn's end coming late; 0 otherwise."""
        if self._ep is None or not self.streaming or self.uses_gate:
            return 0
        return int(self._ep.undecided_ms) * self.rate // 1000

    def block(self, now: int) -> tuple[Route, tuple[Decision, ...]]:
        """A block was written to the history, which now ends at ``now``."""
        self._now = now
        if self.muted:
            self._follow_up_asked = False
            return Route.DROP, self._mute()
        mode = self.mode
        if mode is GateMode.ALWAYS:
            if self.streaming:
                return Route.SEND, _NONE
            self.streaming = True
            return Route.SEND, (StartTurn(0),)
        if mode is GateMode.PUSH_TO_TALK:
            if self.talking and not self.streaming and not self.earcon:
                self.streaming = True
                return Route.DROP, (StartTurn(0),)  # after the "speak now" cue: not sent
            if self.streaming and not self.talking:
                self.streaming = False
                return Route.DROP, (_STOP,)
            return (Route.SEND if self.streaming else Route.DROP), _NONE
        out: tuple[Decision, ...] = _NONE
        if mode is GateMode.WAKE:
            if self._follow_up_asked:
                self._follow_up_asked = False
                if not self.streaming and self._follow_up:
                    out = (self._open_window(self._follow_up, wake_word=False),)
            if self._window_end is None and not self.streaming:
                return Route.WAKE, out
            if self._window_end is not None and self.earcon:
                self._window_start = now  # the cue is never pre-roll
        if self.playing is not self.guarded:
            out = (*out, self._set_guard(self.playing))
        return Route.DETECT, out

    def frame(
        self, speech: float, rest: int, level_db: float | None = None
    ) -> StartTurn | EndTurn | Hint | None:
        """One speech-detector frame (``speech``: its probability; ``level_db``: its level,
        for the endpoint core's floor), ``rest`` samples before ``now`` (the rest of the
        block, already in the history)."""
        if not (self.streaming or not self.earcon):
            speech = 0.0  # the earcon is never a turn's start
        voiced = speech >= self._threshold
        self._last_voiced = voiced
        ep = self._ep
        if ep is not None and not self.uses_gate:
            d = ep.process(self.settings.frame_ms, speech, level_db)
            if d is None:
                return None
            if d is EndpointDecision.START:
                return self._start(rest)
            if d is EndpointDecision.HINT:
                return _HINT
            return self._ended(d, rest)
        edge = self._gate.process(speech >= self.settings.speech_threshold)
        if edge is None:
            return None
        self._gate_turn = edge is Edge.START and ep is not None
        if edge is Edge.STOP:
            self.streaming = False
            return EndTurn(silence_ms=self._gate.silence_ms + rest * 1000 // self.rate)
        return self._start(rest)

    @property
    def uses_gate(self) -> bool:
        """The next frame goes to the hang-over gate (webrtcvad's yes/no): ``WEBRTC``, or
        ``MICRO`` while the echo guard is on outside a turn, and until a turn it opened ends."""
        return self._ep is None or self._gate_turn or (self.guarded and not self.streaming)

    def hint(self, complete: float, rest: int = 0) -> EndTurn | None:
        """The answer to ``Hint``: the probability that the phrase is complete."""
        if self._ep is None or not self.streaming or self._gate_turn:
            return None
        d = self._ep.hint(complete)
        return None if d is None else self._ended(d, rest)

    def set_room_floor(self, level_db: float) -> None:
        """``MICRO``: the room's level (dB) the endpoint core judges silence against."""
        if self._ep is not None:
            self._ep.floor_db = level_db

    @property
    def in_turn(self) -> bool:
        """The detector is inside a turn, or in the middle of judging an onset."""
        return self.streaming or self._last_voiced

    def _ended(self, d: EndpointDecision, rest: int) -> EndTurn:
        assert self._ep is not None
        self.streaming = False
        silence = int(self._ep.ended_silence_ms) + rest * 1000 // self.rate
        return EndTurn(discarded=d is EndpointDecision.DISCARD, silence_ms=silence)

    def _start(self, rest: int) -> StartTurn:
        self.streaming = True
        # The pre-roll is counted back from the first voiced frame of the onset (webrtcvad:
        # the frame that opened the turn), the rest rides with it; in wake mode never from
        # before the window (the wake word, its earcon).
        if self._ep is not None and not self._gate_turn:
            rest += int(self._ep.onset_lag_ms) * self.rate // 1000 - self.rate // 100
        if self.mode is GateMode.WAKE:
            back = min(self._preroll + rest, self._now - self._window_start)
            lead = None
            if self._wake_start is not None:
                lead = (self._wake_start, self._wake_end)
                self._wake_start = None
            return StartTurn(back, lead)
        return StartTurn(self._preroll + rest)

    def block_end(self) -> WakeWindow | None:
        """After the block's frames: a turn took the window, or the window ran out."""
        if self._window_end is None:
            return None
        if self.streaming:
            self._window_end = None
        elif self._now >= self._window_end:
            self._window_end = None
            return _CLOSE
        return None

    @property
    def wants_wake_start(self) -> bool:
        """``wake_heard`` needs the energies of the lookback (the wake word is sent)."""
        return self.settings.send_wake_word

    def wake_heard(self, energies: Sequence[float] | None = None) -> WakeWindow:
        """The wake word ended at ``now``; ``energies``: see ``wake_word_start``."""
        window = self._open_window(self._listen, wake_word=True)
        if energies is not None and self.settings.send_wake_word:
            self._wake_start = self._now - wake_word_start(energies, self.rate)
        return window

    # -- internals ------------------------------------------------------------------------------

    def _mute(self) -> tuple[Decision, ...]:
        out: tuple[Decision, ...] = _NONE
        if self.streaming:
            self.streaming = False
            out = (_CANCEL,)
        self._reset_detector()
        if self._window_end is not None:
            self._window_end = None
            out = (*out, _CLOSE)
        return out

    def _open_window(self, length: int, *, wake_word: bool) -> WakeWindow:
        now = self._now
        self._window_start, self._window_end = now, now + length
        self._wake_start = None
        self._wake_end = now
        self._reset_detector()
        return WakeWindow(True, wake_word)

    def _reset_detector(self) -> None:
        self._gate.reset()
        self._gate_turn = False
        if self._ep is not None:
            self._ep.reset()
        self._last_voiced = False

    def _set_guard(self, on: bool) -> Guard:
        """Echo guard on (speaker playing) or off: detector level and start evidence."""
        self.guarded = on
        if on and self._ep is not None:
            self._ep.gap()  # the gate has the frames until the speaker stops
        s = self.settings
        frames, window = s.guard_start if on else (s.start_frames, s.start_window)
        self._gate.require(frames, window)
        return Guard(s.guard_aggressiveness if on else s.aggressiveness)

