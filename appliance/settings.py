"""The validated configuration: frozen settings dataclasses and the modes they choose.

Owns the settings types (one per TOML table, a docstring per field, derived properties) and
the enums of the adapter-side modes: ``Transport``, ``WireFormat``, ``TalkMode``,
``LogLevel``. The core's own modes are the core's (``GateMode``, ``BargeIn``), the LED's are
``appliance.led_patterns``'. Every enum is a ``StrEnum`` whose values are the TOML spellings;
a settings object built in code with a spelling ("wake") holds the member all the same.
Reading the TOML is ``appliance.config``'s; the API shapes are ``appliance.api_shapes``'.
The home-facing tables (``[earcons]``, ``[control]``, ``[mqtt]``) are
``appliance.settings_home``'s. Imports only the standard library, ``appliance.api_shapes``,
``appliance.led_patterns``, ``appliance.settings_home`` and ``appliance.core`` (``[timers]``
is the core's ``TimerSettings``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance import api_shapes
from appliance.core.listen import Detector, GateMode
from appliance.core.settings import BargeIn
from appliance.core.state import State
from appliance.core.timers import TimerSettings
from appliance.led_patterns import LedKind, LedPattern, default_pattern, default_ringing
from appliance.settings_home import ControlSettings, EarconSettings, MqttSettings

DEFAULT_URL = "wss://api.inworld.ai/api/v1/realtime/session"
DEFAULT_API_URL = "https://api.inworld.ai"


class Transport(enum.StrEnum):
    """How the daemon reaches the realtime service (``[realtime] transport``)."""

    WEBSOCKET = "websocket"
    """The realtime WebSocket at ``url``."""
    WEBRTC = "webrtc"
    """WebRTC (aiortc) through ``api_url``."""
    VOICE_SDK = "voice-sdk"
    """The Voice SDK token socket through ``api_url``."""


class WireFormat(enum.StrEnum):
    """Audio on the realtime WebSocket (``[audio] wire_format``)."""

    PCM16 = "pcm16"
    """24 kHz 16-bit PCM."""
    PCMU = "pcmu"
    """8 kHz G.711 mu-law."""
    PCMA = "pcma"
    """8 kHz G.711 A-law."""


class TalkMode(enum.StrEnum):
    """How the talk button works (``[gpio] talk_mode``)."""

    HOLD = "hold"
    """Talk while held, release to send."""
    TOGGLE = "toggle"
    """Press to talk, press again to send."""


class LogLevel(enum.StrEnum):
    """The journal's minimum level (``[logging] level``); ``.upper()`` is ``logging``'s name."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _coerce(settings: object, name: str, kind: type[enum.Enum]) -> None:
    """Hold the enum member even when built in code with its spelling; an unknown spelling
    is a ``ValueError`` here rather than a wrong branch later."""
    object.__setattr__(settings, name, kind(getattr(settings, name)))


@dataclass(frozen=True)
class RealtimeSettings:
    """Where and how to reach the realtime service."""

    url: str = DEFAULT_URL
    """WebSocket endpoint; the client adds ``key=<session id>&protocol=realtime``."""
    connect_timeout_s: float = 10.0
    """Seconds allowed for TCP + TLS + WebSocket handshake."""
    open_timeout_s: float = 10.0
    """Seconds allowed between the handshake and ``session.created``."""
    ping_interval_s: float = 20.0
    """WebSocket ping interval that keeps idle connections (and NAT entries) alive."""
    response_timeout_s: float = 15.0
    """No server event for this long while a response is expected: the connection is dead."""
    renew_after_s: float = 3300.0
    """Renew the session (a fresh connection) at the first quiet moment after this age; the
    service caps a session's duration (OpenAI: 60 minutes)."""
    transport: Transport = Transport.WEBSOCKET
    """``websocket`` (``url``), ``webrtc`` or ``voice-sdk`` (both reach ``api_url``)."""
    api_url: str = DEFAULT_API_URL
    """HTTPS base of the WebRTC (``/v1/realtime/calls``, ``/v1/realtime/ice-servers``) and
    Voice SDK (``/api/v1/sdk/token``) endpoints."""

    def __post_init__(self) -> None:
        _coerce(self, "transport", Transport)


@dataclass(frozen=True)
class SessionSettings:
    """The ``[session]`` table: sent as ``session.update`` in the API's own shape.

    ``None`` means "not set": the server's default applies and the field is not sent.
    """

    model: str | None = None
    """The LLM, as ``provider/model`` ("openai/gpt-4o-mini")."""
    instructions: str | None = None
    """The system prompt."""
    output_modalities: tuple[str, ...] | None = None
    """``audio`` and/or ``text``."""
    temperature: float | None = None
    """Sampling temperature, 0 to 2."""
    max_output_tokens: int | str | None = None
    """Tokens per response, 1 to 4096, or "inf"."""
    tool_choice: str | None = None
    """``auto``, ``none`` or ``required`` (passed to the API as it is)."""
    voice: str | None = None
    """``session.audio.output.voice``: the TTS voice."""
    tts_model: str | None = None
    """``session.audio.output.model``: the TTS model."""
    speed: float | None = None
    """``session.audio.output.speed``: speech rate, 0.5 to 1.5."""
    transcription: Mapping[str, str] | None = None
    """``session.audio.input.transcription``: model, prompt, language."""
    turn_detection: Mapping[str, Any] | None = None
    """The configured turn detection; the gate mode may override it (see ``to_api``)."""
    provider_data: Mapping[str, Any] | None = None
    """``[session.providerData]``: Inworld's extensions, copied into ``session.providerData``
    (the daemon adds the keys it depends on: ``appliance.core.confirmed``)."""

    def to_api(self, *, turn_detection_null: bool) -> dict[str, Any]:
        """The ``session`` object for ``session.update`` (``api_shapes.session_object``)."""
        return api_shapes.session_object(self, turn_detection_null=turn_detection_null)


@dataclass(frozen=True)
class ProcessingSettings:
    """``[audio.processing]``: the WebRTC audio processing module on the microphone
    (``appliance.audio.aec``; needs the optional ``pywebrtc-audio`` package)."""

    echo_cancellation: bool = True
    """Cancel the speaker's own voice (the played reply) before the VAD and upstream."""
    noise_suppression: bool = False
    """Suppress steady background noise."""
    auto_gain: bool = False
    """Automatic gain control for quiet or distant talkers."""
    double_talk: bool = True
    """With echo cancellation: speexdsp's linear canceller beside it finds the user talking
    over a loud reply (``appliance.audio.nearend``; needs Debian's libspeexdsp1)."""

    @property
    def enabled(self) -> bool:
        """Any processing at all (otherwise the module is not loaded)."""
        return self.echo_cancellation or self.noise_suppression or self.auto_gain

    @property
    def always_on(self) -> bool:
        """Processing that must see every frame, not only while the speaker plays."""
        return self.noise_suppression or self.auto_gain


@dataclass(frozen=True)
class AudioSettings:
    """ALSA devices and the audio path's timing."""

    capture_device: str = "default"
    """ALSA PCM for the microphone (``appliance devices`` lists them)."""
    capture_rate: int = 16000
    """Rate the microphone is opened at (Hz). 16 kHz HATs, 44.1/48 kHz USB mics all work."""
    capture_channels: int = 1
    """Channels the microphone is opened with."""
    channel: int = 0
    """Which captured channel is the voice (0-based), for stereo mics and arrays."""
    playback_device: str = "default"
    """ALSA PCM for the speaker."""
    playback_rate: int = 24000
    """Rate the speaker is opened at (Hz); reply audio (24 kHz) is resampled to it."""
    playback_channels: int = 1
    """Channels the speaker is opened with (mono is duplicated)."""
    period_ms: int = 10
    """ALSA period for capture and playback, in ms."""
    chunk_ms: int | None = None
    """Length of each upstream audio chunk, in ms (20 to 100); None ("auto"): by the gate
    mode (``upstream_chunk_ms``)."""
    prefill_ms: int = 60
    """Reply audio buffered before playback starts (jitter buffer), in ms."""
    wire_format: WireFormat = WireFormat.PCM16
    """Audio on the realtime WebSocket: ``pcm16`` (24 kHz) or G.711 ``pcmu`` / ``pcma`` (8 kHz)."""
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    """``[audio.processing]``: echo cancellation, noise suppression, gain control."""

    def __post_init__(self) -> None:
        _coerce(self, "wire_format", WireFormat)

    @property
    def capture_period_frames(self) -> int:
        """Frames per ALSA period on the microphone."""
        return self.capture_rate * self.period_ms // 1000

    @property
    def playback_period_frames(self) -> int:
        """Frames per ALSA period on the speaker."""
        return self.playback_rate * self.period_ms // 1000


@dataclass(frozen=True)
class GateSettings:
    """How local audio is gated before anything is sent."""

    mode: GateMode = GateMode.VAD
    """``vad`` (local voice activity), ``push_to_talk`` (button), ``always`` (server VAD) or
    ``wake`` (nothing until the wake word, then as ``vad``)."""
    detector: Detector = Detector.MICRO
    """The turn decision in ``vad`` mode and the wake-mode windows: ``micro`` (pymicro-vad,
    woken by a level stage, with an adaptive end of turn; noise opens no turn) or ``webrtc``
    (webrtcvad with the fixed ``hangover_ms``, the behaviour before)."""
    end_complete_ms: int = 250
    """``micro``: silence that ends a turn whose last phrase sounds complete."""
    end_incomplete_ms: int = 1000
    """``micro``: silence that ends a turn whose last phrase sounds unfinished (on the turn
    bench 1000 keeps 85 % of requests with a 600-800 ms pause one turn, 1200: 90 %)."""
    min_speech_ms: int = 200
    """``micro``: a turn with less voiced speech is discarded (cleared, never answered)."""
    vad_aggressiveness: int = 2
    """webrtcvad aggressiveness, 0 (permissive) to 3 (strict)."""
    vad_frame_ms: int = 30
    """webrtcvad frame length: 10, 20 or 30 ms."""
    start_frames: int = 3
    """Speech starts when this many of the last ``start_window`` frames are voiced."""
    start_window: int = 5
    """Window of frames for the start decision."""
    preroll_ms: int = 300
    """Audio from before the trigger that is sent first, so the onset is never cut."""
    hangover_ms: int = 700
    """Unvoiced time after which speech is over (and the turn is committed)."""
    warmup_ms: int = 150
    """Ignored at the start of a VAD: webrtcvad reports speech while it adapts."""
    barge_in: BargeIn = BargeIn.LOCAL
    """Who may interrupt the agent: ``local`` VAD/button, ``server`` speech_started, ``off``."""
    barge_in_aggressiveness: int = 3
    """Echo guard: webrtcvad aggressiveness while the speaker plays (>= ``vad_aggressiveness``)."""
    barge_in_min_speech_ms: int = 120
    """Echo guard: voiced time the start window must hold while the speaker plays."""
    wake_word: str = "okay_nabu"
    """Wake mode: a built-in microWakeWord model ("okay_nabu", "hey_jarvis", "hey_mycroft",
    "alexa") or the path of a custom model (its JSON manifest or a bare ``.tflite``)."""
    wake_cutoff: float = 0.0
    """Wake mode: probability above which the wake word is detected; 0 = the model's own."""
    wake_refractory_ms: int = 2000
    """Wake mode: after a detection, nothing is detected for this long."""
    wake_listen_s: float = 5.0
    """Wake mode: after the wake word, how long the device waits for the request to start."""
    send_wake_word: bool = False
    """Wake mode: send the wake word itself upstream at the start of the turn."""
    follow_up_s: float = 8.0
    """Wake mode: after a reply, how long the user may answer without the wake word (0: off)."""

    def __post_init__(self) -> None:
        _coerce(self, "mode", GateMode)
        _coerce(self, "detector", Detector)
        _coerce(self, "barge_in", BargeIn)

    @property
    def barge_in_start(self) -> tuple[int, int]:
        """(start_frames, start_window) while the speaker plays: at least
        ``barge_in_min_speech_ms`` of voiced frames, with the same slack as ``start_window``."""
        need = max(self.start_frames, -(-self.barge_in_min_speech_ms // self.vad_frame_ms))
        return need, need + self.start_window - self.start_frames

    @property
    def local_turns(self) -> bool:
        """True when the device, not the server, decides where a turn ends."""
        return self.mode in (GateMode.VAD, GateMode.PUSH_TO_TALK, GateMode.WAKE)


@dataclass(frozen=True)
class GpioSettings:
    """GPIO LEDs and buttons (see docs/gpio.md). A pin is "" (not wired), a number or a gpiozero
    name ("GPIO17", "BOARD11"); ``patterns`` map a ``State`` to an ``LedPattern``."""

    Pattern = LedPattern  # the name tests and older callers know

    enabled: bool = True
    """Use GPIO at all; without GPIO hardware the daemon warns once and runs without it."""
    required: bool = False
    """Fail at start when GPIO is not available, instead of running without it."""
    state_dir: str = ""
    """Where mute and volume persist; "" means $STATE_DIRECTORY, else ~/.local/state/appliance."""
    led: LedKind = LedKind.PWM
    """``none``, ``led`` (on/off; pulse shown as blink), ``pwm`` (dimmable) or ``rgb``."""
    led_pin: str | int = "GPIO25"
    """The pin of a ``led`` or ``pwm`` LED."""
    red_pin: str | int = "GPIO5"
    """The red pin of an ``rgb`` LED."""
    green_pin: str | int = "GPIO6"
    """The green pin of an ``rgb`` LED."""
    blue_pin: str | int = "GPIO13"
    """The blue pin of an ``rgb`` LED."""
    active_high: bool = True
    """LED polarity: false for LEDs wired to 3.3 V (common-anode RGB)."""
    patterns: Mapping[State, LedPattern] = field(default_factory=dict)
    """One pattern per state; states not configured use the defaults for ``led``."""
    ringing: LedPattern | None = None
    """``[gpio.patterns.ringing]``: while a timer or alarm rings; None: the default."""
    talk_pin: str | int = "GPIO17"
    """Talk button; a long press (``hold_time``) reconnects."""
    mute_pin: str | int = ""
    """Privacy mute button (toggles)."""
    volume_up_pin: str | int = ""
    """Volume up button."""
    volume_down_pin: str | int = ""
    """Volume down button."""
    pull_up: bool = True
    """Buttons connect the pin to ground (internal pull-up); false: to 3.3 V (pull-down)."""
    bounce_time: float = 0.05
    """Debounce time in seconds (0 turns debouncing off)."""
    hold_time: float = 5.0
    """Seconds the talk button is held for a reconnect."""
    talk_mode: TalkMode = TalkMode.HOLD
    """``hold``: talk while held, release to send; ``toggle``: press to talk, press to send."""
    mixer_control: str = "Master"
    """ALSA simple mixer control the volume buttons change (``amixer scontrols`` lists them)."""
    mixer_card: int = -1
    """ALSA card index of the mixer; -1: the control device ``mixer_device``."""
    mixer_device: str = "default"
    """ALSA control device of the mixer when ``mixer_card`` is -1 ("default", "pulse",
    "hw:CARD=Headphones")."""
    volume_step: int = 5
    """Percent the volume changes per press."""

    def __post_init__(self) -> None:
        _coerce(self, "led", LedKind)
        _coerce(self, "talk_mode", TalkMode)
        if any(not isinstance(state, State) for state in self.patterns):
            object.__setattr__(self, "patterns", {State(k): v for k, v in self.patterns.items()})

    def pattern(self, state: State | str) -> LedPattern:
        """The pattern for a state: the configured one, else the default for ``led``."""
        state = State(state)
        configured = self.patterns.get(state)
        return configured if configured is not None else default_pattern(self.led, state)

    def ringing_pattern(self) -> LedPattern:
        """The pattern while a timer or alarm rings."""
        return self.ringing if self.ringing is not None else default_ringing(self.led)


@dataclass(frozen=True)
class ToolSettings:
    """One ``[[tools]]`` entry: a function the model may call. No ``command``: a built-in."""

    name: str
    """Function name the model calls (letters, digits, ``_`` and ``-``, at most 64)."""
    description: str = ""
    """What the tool does and when to use it; the model reads this."""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """JSON schema of the arguments (the subset in ``appliance.core.schema``)."""
    command: tuple[str, ...] = ()
    """argv of the program to run (never a shell); the arguments arrive as JSON on stdin."""
    timeout_s: float = 10.0
    """The program is killed after this many seconds and the model is told it timed out."""
    max_output_bytes: int = 16384
    """Stdout beyond this is an error reported to the model (the program is killed)."""

    @property
    def builtin(self) -> bool:
        """Answered by the daemon itself (``appliance.builtin_tools``), not a program."""
        return not self.command

    def to_api(self) -> dict[str, Any]:
        """The function definition for ``session.tools`` (``api_shapes.tool_object``)."""
        return api_shapes.tool_object(self)


@dataclass(frozen=True)
class SessionPolicySettings:
    """How the conversation starts and how long it is kept."""

    greeting: str = ""
    """Sent as a user text item plus ``response.create`` once the first session is ready
    (e.g. "Greet the user"); "" = no greeting."""
    fresh_after_idle_s: float = 600.0
    """After this long with no turn, the conversation's items are deleted; 0 = never."""
    max_turns: int = 20
    """Keep at most this many turns (a user item and what follows it); 0 = no limit."""


@dataclass(frozen=True)
class LoggingSettings:
    """What goes to the journal."""

    level: LogLevel = LogLevel.INFO
    """Minimum level: debug, info, warning, error."""
    transcripts: bool = True
    """Log user and agent transcripts at info level (turn off for privacy)."""

    def __post_init__(self) -> None:
        _coerce(self, "level", LogLevel)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    earcons: EarconSettings = field(default_factory=EarconSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    tools: tuple[ToolSettings, ...] = ()
    """``[[tools]]``: functions offered to the model, in order."""
    session_policy: SessionPolicySettings = field(default_factory=SessionPolicySettings)
    timers: TimerSettings = field(default_factory=TimerSettings)
    """``[timers]``: how timers and alarms ring (``appliance.core.timers``)."""
    control: ControlSettings = field(default_factory=ControlSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    source: str = "<defaults>"
    """The file this was read from."""
