"""Configuration: one TOML file validated into frozen dataclasses.

Owns the file format, defaults and validation. Every error names the dotted key path
(``session.audio.output.speed: expected a number, got "fast"``). Unknown keys are errors.
Imports only the standard library, ``appliance.errors`` and ``appliance.core.schema``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core.endpoint import EndpointSettings
from appliance.core.listen import Detector, GateMode, ListenSettings
from appliance.core.schema import SchemaError, check_schema
from appliance.core.settings import BargeIn, SessionOptions
from appliance.errors import ConfigError

DEFAULT_URL = "wss://api.inworld.ai/api/v1/realtime/session"
DEFAULT_API_URL = "https://api.inworld.ai"
TRANSPORTS = ("websocket", "webrtc", "voice-sdk")
WIRE_FORMATS = ("pcm16", "pcmu", "pcma")
GATE_MODES = ("vad", "push_to_talk", "always", "wake")
BARGE_IN_SOURCES = ("local", "server", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
STT_MODELS = (
    "assemblyai/u3-rt-pro",
    "assemblyai/universal-streaming-multilingual",
    "assemblyai/universal-streaming-english",
    "inworld/inworld-stt-1",
    "soniox/stt-rt-v4",
)


def _describe(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escaped: the error stays one line
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Table:
    """Reads one TOML table, checking types and bounds; ``done()`` rejects unknown keys."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"expected a table, got {_describe(data)}")
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        if not _BARE_KEY.fullmatch(name):
            name = json.dumps(name)  # as TOML quotes it: a key with a newline stays one line
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._data

    def peek(self, name: str) -> Any:
        return self._data.get(name)

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def table(self, name: str) -> _Table:
        value = self._get(name)
        return _Table({} if value is None else value, self.key(name))

    def text(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {_describe(value)}")
        if choices and value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise ConfigError(self.key(name), f"expected one of {options}, got {_describe(value)}")
        return value

    def flag(self, name: str, default: bool | None = None) -> Any:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {_describe(value)}")
        return value

    def number(
        self, name: str, default: float | None = None, lo: float = -math.inf, hi: float = math.inf
    ) -> Any:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(self.key(name), f"expected a number, got {_describe(value)}")
        if not lo <= value <= hi:
            raise ConfigError(
                self.key(name), f"expected a number from {lo:g} to {hi:g}, got {value:g}"
            )
        return float(value)

    def whole(
        self,
        name: str,
        default: int | None = None,
        lo: int | None = None,
        hi: int | None = None,
        choices: tuple[int, ...] = (),
    ) -> Any:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"expected a whole number, got {_describe(value)}")
        if choices and value not in choices:
            raise ConfigError(
                self.key(name), f"expected one of {', '.join(map(str, choices))}, got {value}"
            )
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(
                self.key(name), f"expected a whole number from {lo} to {hi}, got {value}"
            )
        return value

    def texts(self, name: str, choices: tuple[str, ...] = ()) -> tuple[str, ...] | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ConfigError(self.key(name), f"expected a non-empty array, got {_describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or (choices and item not in choices):
                allowed = " or ".join(f'"{c}"' for c in choices) or "a string"
                raise ConfigError(
                    f"{self.key(name)}[{i}]", f"expected {allowed}, got {_describe(item)}"
                )
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


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
    transport: str = "websocket"
    """``websocket`` (``url``), ``webrtc`` or ``voice-sdk`` (both reach ``api_url``)."""
    api_url: str = DEFAULT_API_URL
    """HTTPS base of the WebRTC (``/v1/realtime/calls``, ``/v1/realtime/ice-servers``) and
    Voice SDK (``/api/v1/sdk/token``) endpoints."""


@dataclass(frozen=True)
class SessionSettings:
    """The ``[session]`` table: sent as ``session.update`` in the API's own shape.

    ``None`` means "not set": the server's default applies and the field is not sent.
    """

    model: str | None = None
    instructions: str | None = None
    output_modalities: tuple[str, ...] | None = None
    temperature: float | None = None
    max_output_tokens: int | str | None = None
    tool_choice: str | None = None
    voice: str | None = None
    tts_model: str | None = None
    speed: float | None = None
    transcription: Mapping[str, str] | None = None
    turn_detection: Mapping[str, Any] | None = None
    """The configured turn detection; the gate mode may override it (see ``session_update``)."""

    def to_api(self, *, turn_detection_null: bool) -> dict[str, Any]:
        """The ``session`` object for ``session.update`` (daemon-owned fields included)."""
        session: dict[str, Any] = {"type": "realtime"}
        for name in ("model", "instructions", "temperature", "tool_choice"):
            value = getattr(self, name)
            if value is not None:
                session[name] = value
        if self.output_modalities is not None:
            session["output_modalities"] = list(self.output_modalities)
        if self.max_output_tokens is not None:
            session["max_output_tokens"] = self.max_output_tokens
        audio_in: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": 24000}}
        if self.transcription is not None:
            audio_in["transcription"] = dict(self.transcription)
        if turn_detection_null:
            audio_in["turn_detection"] = None
        elif self.turn_detection is not None:
            audio_in["turn_detection"] = dict(self.turn_detection)
        audio_out: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": 24000}}
        for api_name, value in (
            ("voice", self.voice),
            ("model", self.tts_model),
            ("speed", self.speed),
        ):
            if value is not None:
                audio_out[api_name] = value
        session["audio"] = {"input": audio_in, "output": audio_out}
        return session


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
    chunk_ms: int = 40
    """Length of each upstream audio chunk, in ms (20 to 100)."""
    prefill_ms: int = 60
    """Reply audio buffered before playback starts (jitter buffer), in ms."""
    wire_format: str = "pcm16"
    """Audio on the realtime WebSocket: ``pcm16`` (24 kHz) or G.711 ``pcmu`` / ``pcma`` (8 kHz)."""
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    """``[audio.processing]``: echo cancellation, noise suppression, gain control."""

    @property
    def capture_period_frames(self) -> int:
        return self.capture_rate * self.period_ms // 1000

    @property
    def playback_period_frames(self) -> int:
        return self.playback_rate * self.period_ms // 1000


@dataclass(frozen=True)
class GateSettings:
    """How local audio is gated before anything is sent."""

    mode: str = "vad"
    """``vad`` (local voice activity), ``push_to_talk`` (button), ``always`` (server VAD) or
    ``wake`` (nothing until the wake word, then as ``vad``)."""
    detector: str = "micro"
    """The turn decision in ``vad`` mode and the wake-mode windows: ``micro`` (pymicro-vad,
    woken by a level stage, with an adaptive end of turn; noise opens no turn) or ``webrtc``
    (webrtcvad with the fixed ``hangover_ms``, the behaviour before)."""
    end_complete_ms: int = 250
    """``micro``: silence that ends a turn whose last phrase sounds complete."""
    end_incomplete_ms: int = 1000
    """``micro``: silence that ends a turn whose last phrase sounds unfinished."""
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
    barge_in: str = "local"
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

    @property
    def barge_in_start(self) -> tuple[int, int]:
        """(start_frames, start_window) while the speaker plays: at least
        ``barge_in_min_speech_ms`` of voiced frames, with the same slack as ``start_window``."""
        need = max(self.start_frames, -(-self.barge_in_min_speech_ms // self.vad_frame_ms))
        return need, need + self.start_window - self.start_frames

    @property
    def local_turns(self) -> bool:
        """True when the device, not the server, decides where a turn ends."""
        return self.mode in ("vad", "push_to_talk", "wake")


@dataclass(frozen=True)
class GpioSettings:
    """GPIO LEDs and buttons (see README). A pin is "" (not wired), a number or a gpiozero
    name ("GPIO17", "BOARD11"); patterns map a ``State`` value to a ``GpioSettings.Pattern``."""

    @dataclass(frozen=True)
    class Pattern:
        """How the LED shows one state. ``color`` is (r, g, b) from 0 to 1, RGB LEDs only."""

        mode: str = "off"
        """``off``, ``on``, ``blink`` (on_time, off_time) or ``pulse`` (fade_in, fade_out)."""
        on_time: float = 0.5
        off_time: float = 0.5
        fade_in: float = 0.5
        fade_out: float = 0.5
        color: tuple[float, float, float] = (1.0, 1.0, 1.0)

    enabled: bool = True
    """Use GPIO at all; without GPIO hardware the daemon warns once and runs without it."""
    required: bool = False
    """Fail at start when GPIO is not available, instead of running without it."""
    state_dir: str = ""
    """Where mute and volume persist; "" means $STATE_DIRECTORY, else ~/.local/state/appliance."""
    led: str = "pwm"
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
    patterns: Mapping[str, GpioSettings.Pattern] = field(default_factory=dict)
    """One pattern per state value; states not configured use the defaults for ``led``."""
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
    talk_mode: str = "hold"
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

    # Defaults: a single LED stays dark when idle and only lights for the user's turn; an RGB
    # LED shows every state in its own colour. Values are (mode, a, b, colour).
    SINGLE_DEFAULTS = {
        "starting": ("blink", 0.05, 0.45, "white"),
        "connecting": ("blink", 0.5, 0.5, "white"),
        "ready": ("off", 0.0, 0.0, "white"),
        "listening": ("on", 0.0, 0.0, "white"),
        "thinking": ("pulse", 0.3, 0.3, "white"),
        "speaking": ("pulse", 0.8, 0.8, "white"),
        "muted": ("blink", 0.1, 2.9, "white"),
        "offline": ("blink", 0.2, 1.8, "white"),
        "error": ("blink", 0.1, 0.1, "white"),
    }
    RGB_DEFAULTS = {
        "starting": ("on", 0.0, 0.0, "white"),
        "connecting": ("pulse", 0.8, 0.8, "yellow"),
        "ready": ("on", 0.0, 0.0, "#002000"),
        "listening": ("on", 0.0, 0.0, "blue"),
        "thinking": ("pulse", 0.3, 0.3, "cyan"),
        "speaking": ("pulse", 0.8, 0.8, "green"),
        "muted": ("on", 0.0, 0.0, "red"),
        "offline": ("blink", 0.5, 1.5, "orange"),
        "error": ("blink", 0.2, 0.2, "red"),
    }
    COLORS = {
        "white": "#ffffff",
        "red": "#ff0000",
        "green": "#00ff00",
        "blue": "#0000ff",
        "yellow": "#ffff00",
        "cyan": "#00ffff",
        "magenta": "#ff00ff",
        "orange": "#ff4000",
        "purple": "#8000ff",
    }

    def pattern(self, state: str) -> GpioSettings.Pattern:
        """The pattern for a state value: the configured one, else the default for ``led``."""
        if state in self.patterns:
            return self.patterns[state]
        defaults = self.RGB_DEFAULTS if self.led == "rgb" else self.SINGLE_DEFAULTS
        mode, a, b, color = defaults.get(state, ("off", 0.0, 0.0, "white"))
        rgb = self.parse_color(color)
        assert rgb is not None
        if mode == "blink":
            return self.Pattern(mode, on_time=a, off_time=b, color=rgb)
        if mode == "pulse":
            return self.Pattern(mode, fade_in=a, fade_out=b, color=rgb)
        return self.Pattern(mode, color=rgb)

    @classmethod
    def parse_color(cls, text: str) -> tuple[float, float, float] | None:
        """A colour name or "#rrggbb" as (r, g, b) from 0 to 1; None when it is neither."""
        text = cls.COLORS.get(text.lower(), text)
        if len(text) != 7 or text[0] != "#":
            return None
        try:
            r, g, b = (int(text[i : i + 2], 16) / 255 for i in (1, 3, 5))
        except ValueError:
            return None
        return (r, g, b)


EARCON_NAMES = ("listening", "mute", "unmute", "error", "too_short", "wake")


@dataclass(frozen=True)
class EarconSettings:
    """Short sounds for the user's cues (``appliance.earcons``). Each is "default" (the
    shipped sound), "" (silent) or the absolute path of a WAV file (PCM16, mono or stereo,
    any rate, at most ``earcons.MAX_SECONDS``)."""

    enabled: bool = True
    """Play earcons at all."""
    listening: str = "default"
    """Push-to-talk: the talk button was pressed, speak now."""
    mute: str = "default"
    """The privacy mute went on."""
    unmute: str = "default"
    """The privacy mute went off."""
    error: str = "default"
    """The connection was lost or an audio device failed (once until ready again)."""
    too_short: str = "default"
    """A push-to-talk press held too little audio to send."""
    wake: str = "default"
    """The wake word was heard (gate mode "wake")."""

    def sound(self, name: str) -> str:
        """The configured value for one earcon name ("" when earcons are off)."""
        value: str = getattr(self, name)
        return value if self.enabled else ""


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
        return not self.command

    def to_api(self) -> dict[str, Any]:
        """The function definition for ``session.tools``."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


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

    level: str = "info"
    """Minimum level: debug, info, warning, error."""
    transcripts: bool = True
    """Log user and agent transcripts at info level (turn off for privacy)."""


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
    source: str = "<defaults>"
    """The file this was read from."""


def _realtime(t: _Table) -> RealtimeSettings:
    url = t.text("url", DEFAULT_URL)
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(t.key("url"), f"expected a ws:// or wss:// URL, got {_describe(url)}")
    if "?" in url:
        raise ConfigError(
            t.key("url"), "must not contain a query; the client adds key and protocol"
        )
    settings = RealtimeSettings(
        url=url,
        connect_timeout_s=t.number("connect_timeout_s", 10.0, 0.5, 120),
        open_timeout_s=t.number("open_timeout_s", 10.0, 0.5, 120),
        ping_interval_s=t.number("ping_interval_s", 20.0, 1, 300),
        response_timeout_s=t.number("response_timeout_s", 15.0, 0.5, 600),
        renew_after_s=t.number("renew_after_s", 3300.0, 1, 86400),
        transport=t.text("transport", "websocket", TRANSPORTS),
        api_url=t.text("api_url", DEFAULT_API_URL),
    )
    if not settings.api_url.startswith(("http://", "https://")) or "?" in settings.api_url:
        raise ConfigError(
            t.key("api_url"),
            f"expected an http:// or https:// URL without a query, got {_describe(settings.api_url)}",
        )
    t.done()
    return settings


def _turn_detection(t: _Table) -> dict[str, Any]:
    kind = t.text("type", "semantic_vad", ("semantic_vad", "server_vad"))
    out: dict[str, Any] = {"type": kind}
    if kind == "semantic_vad":
        eagerness = t.text("eagerness", None, ("low", "medium", "high", "auto"))
        if eagerness is not None:
            out["eagerness"] = eagerness
    else:
        for name, lo, hi in (("prefix_padding_ms", 0, 5000), ("silence_duration_ms", 0, 10000)):
            value = t.whole(name, None, lo, hi)
            if value is not None:
                out[name] = value
        threshold = t.number("threshold", None, 0.0, 1.0)
        if threshold is not None:
            out["threshold"] = threshold
        idle = t.whole("idle_timeout_ms", None, 0, 3_600_000)
        if idle is not None:
            out["idle_timeout_ms"] = idle or None
    for name in ("create_response", "interrupt_response"):
        value = t.flag(name)
        if value is not None:
            out[name] = value
    t.done()
    return out


def _session(t: _Table) -> SessionSettings:
    max_tokens: int | str | None
    if t.has("max_output_tokens") and isinstance(t.peek("max_output_tokens"), str):
        max_tokens = t.text("max_output_tokens", None, ("inf",))
    else:
        max_tokens = t.whole("max_output_tokens", None, 1, 4096)
    audio = t.table("audio")
    out_t = audio.table("output")
    in_t = audio.table("input")
    trans: dict[str, str] | None = None
    if in_t.has("transcription"):
        tr = in_t.table("transcription")
        trans = {"model": tr.text("model", STT_MODELS[0], STT_MODELS)}
        for name in ("prompt", "language"):
            value = tr.text(name)
            if value is not None:
                trans[name] = value
        tr.done()
    turn = _turn_detection(in_t.table("turn_detection")) if in_t.has("turn_detection") else None
    in_t.done()
    settings = SessionSettings(
        model=t.text("model"),
        instructions=t.text("instructions"),
        output_modalities=t.texts("output_modalities", ("audio", "text")),
        temperature=t.number("temperature", None, 0.0, 2.0),
        max_output_tokens=max_tokens,
        tool_choice=t.text("tool_choice", None, ("auto", "none", "required")),
        voice=out_t.text("voice"),
        tts_model=out_t.text("model"),
        speed=out_t.number("speed", None, 0.5, 1.5),
        transcription=trans,
        turn_detection=turn,
    )
    out_t.done()
    audio.done()
    t.done()
    return settings


def _audio(t: _Table) -> AudioSettings:
    rates = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
    s = AudioSettings(
        capture_device=t.text("capture_device", "default"),
        capture_rate=t.whole("capture_rate", 16000, choices=rates),
        capture_channels=t.whole("capture_channels", 1, 1, 16),
        channel=t.whole("channel", 0, 0, 15),
        playback_device=t.text("playback_device", "default"),
        playback_rate=t.whole("playback_rate", 24000, choices=rates),
        playback_channels=t.whole("playback_channels", 1, 1, 8),
        period_ms=t.whole("period_ms", 10, choices=(5, 10, 20, 40)),
        chunk_ms=t.whole("chunk_ms", 40, 20, 100),
        prefill_ms=t.whole("prefill_ms", 60, 0, 1000),
        wire_format=t.text("wire_format", "pcm16", WIRE_FORMATS),
        processing=_processing(t.table("processing")),
    )
    if s.channel >= s.capture_channels:
        raise ConfigError(
            t.key("channel"),
            f"channel {s.channel} does not exist with capture_channels = {s.capture_channels}",
        )
    if s.chunk_ms % s.period_ms:
        raise ConfigError(t.key("chunk_ms"), f"must be a multiple of period_ms ({s.period_ms})")
    t.done()
    return s


def _processing(t: _Table) -> ProcessingSettings:
    s = ProcessingSettings(
        echo_cancellation=t.flag("echo_cancellation", True),
        noise_suppression=t.flag("noise_suppression", False),
        auto_gain=t.flag("auto_gain", False),
        double_talk=t.flag("double_talk", True),
    )
    t.done()
    return s


def _gate(t: _Table) -> GateSettings:
    s = GateSettings(
        mode=t.text("mode", "vad", GATE_MODES),
        detector=t.text("detector", "micro", ("micro", "webrtc")),
        end_complete_ms=t.whole("end_complete_ms", 250, 120, 5000),
        end_incomplete_ms=t.whole("end_incomplete_ms", 1000, 120, 10000),
        min_speech_ms=t.whole("min_speech_ms", 200, 0, 5000),
        vad_aggressiveness=t.whole("vad_aggressiveness", 2, 0, 3),
        vad_frame_ms=t.whole("vad_frame_ms", 30, choices=(10, 20, 30)),
        start_frames=t.whole("start_frames", 3, 1, 50),
        start_window=t.whole("start_window", 5, 1, 50),
        preroll_ms=t.whole("preroll_ms", 300, 0, 2000),
        hangover_ms=t.whole("hangover_ms", 700, 100, 5000),
        warmup_ms=t.whole("warmup_ms", 150, 0, 2000),
        barge_in=t.text("barge_in", "local", BARGE_IN_SOURCES),
        barge_in_aggressiveness=t.whole("barge_in_aggressiveness", 3, 0, 3),
        barge_in_min_speech_ms=t.whole("barge_in_min_speech_ms", 120, 0, 2000),
        wake_word=t.text("wake_word", "okay_nabu"),
        wake_cutoff=t.number("wake_cutoff", 0.0, 0.0, 0.999),
        wake_refractory_ms=t.whole("wake_refractory_ms", 2000, 0, 60000),
        wake_listen_s=t.number("wake_listen_s", 5.0, 0.5, 60),
        send_wake_word=t.flag("send_wake_word", False),
        follow_up_s=t.number("follow_up_s", 8.0, 0, 600),
    )
    if not s.wake_word:
        raise ConfigError(t.key("wake_word"), "must name a built-in wake word or a model file")
    if s.end_incomplete_ms < s.end_complete_ms:
        raise ConfigError(
            t.key("end_incomplete_ms"), f"must not be below end_complete_ms ({s.end_complete_ms})"
        )
    if s.start_frames > s.start_window:
        raise ConfigError(t.key("start_frames"), f"must not exceed start_window ({s.start_window})")
    if s.barge_in_aggressiveness < s.vad_aggressiveness:
        raise ConfigError(
            t.key("barge_in_aggressiveness"),
            f"must not be below vad_aggressiveness ({s.vad_aggressiveness}): "
            "the guard asks for more evidence, not less",
        )
    t.done()
    return s


def _gpio(t: _Table) -> GpioSettings:
    states = (
        *("starting", "connecting", "ready", "listening", "thinking"),
        *("speaking", "muted", "offline", "error"),
    )

    def pin(name: str, default: str) -> str | int:
        if isinstance(t.peek(name), int) and not isinstance(t.peek(name), bool):
            value: str | int = t.whole(name, None, 0, 1023)
        else:
            value = t.text(name, default)
        return value

    def pattern(p: _Table) -> GpioSettings.Pattern:
        color_text = p.text("color", "white")
        color = GpioSettings.parse_color(color_text)
        if color is None:
            names = ", ".join(GpioSettings.COLORS)
            raise ConfigError(
                p.key("color"), f'expected "#rrggbb" or one of {names}, got {_describe(color_text)}'
            )
        s = GpioSettings.Pattern(
            mode=p.text("mode", "off", ("off", "on", "blink", "pulse")),
            on_time=p.number("on_time", 0.5, 0.01, 60),
            off_time=p.number("off_time", 0.5, 0.01, 60),
            fade_in=p.number("fade_in", 0.5, 0.0, 60),
            fade_out=p.number("fade_out", 0.5, 0.0, 60),
            color=color,
        )
        if s.mode == "pulse" and s.fade_in + s.fade_out <= 0:
            raise ConfigError(p.key("fade_in"), "fade_in + fade_out must be more than 0")
        p.done()
        return s

    pt = t.table("patterns")
    patterns = {name: pattern(pt.table(name)) for name in states if pt.has(name)}
    pt.done()
    s = GpioSettings(
        enabled=t.flag("enabled", True),
        required=t.flag("required", False),
        state_dir=t.text("state_dir", ""),
        led=t.text("led", "pwm", ("none", "led", "pwm", "rgb")),
        led_pin=pin("led_pin", "GPIO25"),
        red_pin=pin("red_pin", "GPIO5"),
        green_pin=pin("green_pin", "GPIO6"),
        blue_pin=pin("blue_pin", "GPIO13"),
        active_high=t.flag("active_high", True),
        patterns=patterns,
        talk_pin=pin("talk_pin", "GPIO17"),
        mute_pin=pin("mute_pin", ""),
        volume_up_pin=pin("volume_up_pin", ""),
        volume_down_pin=pin("volume_down_pin", ""),
        pull_up=t.flag("pull_up", True),
        bounce_time=t.number("bounce_time", 0.05, 0.0, 1.0),
        hold_time=t.number("hold_time", 5.0, 0.5, 60.0),
        talk_mode=t.text("talk_mode", "hold", ("hold", "toggle")),
        mixer_control=t.text("mixer_control", "Master"),
        mixer_card=t.whole("mixer_card", -1, -1, 31),
        mixer_device=t.text("mixer_device", "default"),
        volume_step=t.whole("volume_step", 5, 1, 50),
    )
    t.done()
    return s


def _earcons(t: _Table) -> EarconSettings:
    sounds: dict[str, str] = {}
    for name in EARCON_NAMES:
        value = t.text(name, "default")
        if value not in ("", "default") and not value.startswith(("/", "~")):
            raise ConfigError(
                t.key(name),
                f'expected "default", "" (silent) or an absolute path to a WAV file, '
                f"got {_describe(value)}",
            )
        sounds[name] = value
    s = EarconSettings(enabled=t.flag("enabled", True), **sounds)
    t.done()
    return s


def _logging(t: _Table) -> LoggingSettings:
    s = LoggingSettings(
        level=t.text("level", "info", LOG_LEVELS), transcripts=t.flag("transcripts", True)
    )
    t.done()
    return s


BUILTIN_TOOLS = ("get_time", "set_volume", "mute")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tools(root: _Table, name: str) -> tuple[ToolSettings, ...]:
    value = root._get(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(name, f"expected an array of tables ([[tools]]), got {_describe(value)}")
    tools: list[ToolSettings] = []
    for i, entry in enumerate(value):
        t = _Table(entry, f"{name}[{i}]")
        tools.append(_tool(t))
        if any(other.name == tools[-1].name for other in tools[:-1]):
            raise ConfigError(t.key("name"), f"duplicate tool name {_describe(tools[-1].name)}")
    return tuple(tools)


def _tool(t: _Table) -> ToolSettings:
    tool_name = t.text("name")
    if tool_name is None:
        raise ConfigError(t.key("name"), "missing (every tool needs a name)")
    if not _TOOL_NAME.match(tool_name):
        raise ConfigError(
            t.key("name"),
            f"expected letters, digits, _ or - (at most 64), got {_describe(tool_name)}",
        )
    command: tuple[str, ...] = ()
    if t.has("command"):
        command = t.texts("command") or ()
    elif tool_name not in BUILTIN_TOOLS:
        builtins = ", ".join(BUILTIN_TOOLS)
        raise ConfigError(
            t.key("command"), f"missing: {tool_name!r} is not a built-in tool ({builtins})"
        )
    if command and tool_name in BUILTIN_TOOLS:
        raise ConfigError(
            t.key("command"), f"{tool_name!r} is a built-in tool; rename yours or drop command"
        )
    description = t.text("description", BUILTIN_DESCRIPTIONS.get(tool_name, ""))
    if t.has("parameters"):
        if tool_name in BUILTIN_TOOLS:
            raise ConfigError(t.key("parameters"), f"{tool_name!r} is a built-in tool")
        parameters = t.peek("parameters")
        t.table("parameters")  # type-checks the table and marks it seen
        try:
            check_schema(parameters)
        except SchemaError as exc:
            where = t.key("parameters") + (f".{exc.path}" if exc.path else "")
            raise ConfigError(where, exc.message) from None
        if parameters.get("type", "object") != "object":
            raise ConfigError(t.key("parameters") + ".type", 'must be "object"')
        parameters = {"type": "object", **parameters}
    else:
        parameters = BUILTIN_PARAMETERS.get(tool_name, {"type": "object", "properties": {}})
    settings = ToolSettings(
        name=tool_name,
        description=description,
        parameters=parameters,
        command=command,
        timeout_s=t.number("timeout_s", 10.0, 0.1, 600),
        max_output_bytes=t.whole("max_output_bytes", 16384, 16, 1024 * 1024),
    )
    t.done()
    return settings


BUILTIN_DESCRIPTIONS = {
    "get_time": "Get the current local date, time and time zone of the device.",
    "set_volume": "Set the speaker volume, in percent.",
    "mute": "Turn the microphone privacy mute on (the device stops listening until the "
    "user presses the mute button) or off.",
}
BUILTIN_PARAMETERS: dict[str, dict[str, Any]] = {
    "get_time": {"type": "object", "properties": {}, "additionalProperties": False},
    "set_volume": {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "minimum": 0, "maximum": 100, "description": "0 to 100"}
        },
        "required": ["percent"],
        "additionalProperties": False,
    },
    "mute": {
        "type": "object",
        "properties": {"muted": {"type": "boolean", "description": "true to stop listening"}},
        "required": ["muted"],
        "additionalProperties": False,
    },
}


def _session_policy(t: _Table) -> SessionPolicySettings:
    s = SessionPolicySettings(
        greeting=t.text("greeting", ""),
        fresh_after_idle_s=t.number("fresh_after_idle_s", 600.0, 0, 7 * 86400),
        max_turns=t.whole("max_turns", 20, 0, 1000),
    )
    t.done()
    return s


def parse_config(data: Mapping[str, Any], source: str = "<string>") -> Config:
    """Validate a parsed TOML document into a ``Config``; raises ``ConfigError``."""
    root = _Table(data, "")
    config = Config(
        realtime=_realtime(root.table("realtime")),
        session=_session(root.table("session")),
        audio=_audio(root.table("audio")),
        gate=_gate(root.table("gate")),
        gpio=_gpio(root.table("gpio")),
        earcons=_earcons(root.table("earcons")),
        logging=_logging(root.table("logging")),
        tools=_tools(root, "tools"),
        session_policy=_session_policy(root.table("session_policy")),
        source=source,
    )
    root.done()
    if config.audio.wire_format != "pcm16" and config.realtime.transport != "websocket":
        raise ConfigError(
            "audio.wire_format",
            f'"{config.audio.wire_format}" needs realtime.transport = "websocket" '
            f'(the {config.realtime.transport} transport has its own audio encoding)',
        )
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ``ConfigError`` naming the problem."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {str(p)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p))


def listen_settings(gate: GateSettings) -> ListenSettings:
    """The capture-side listening policy's settings (``appliance.core.listen``) from ``[gate]``."""
    micro = Detector(gate.detector) is Detector.MICRO
    endpoint = EndpointSettings(
        complete_ms=gate.end_complete_ms,
        incomplete_ms=gate.end_incomplete_ms,
        min_voiced_ms=gate.min_speech_ms,
    )
    return ListenSettings(
        mode=GateMode(gate.mode),
        detector=Detector(gate.detector),
        endpoint=endpoint,
        gate_frame_ms=gate.vad_frame_ms,
        frame_ms=10 if micro else gate.vad_frame_ms,
        start_frames=gate.start_frames,
        start_window=gate.start_window,
        preroll_ms=gate.preroll_ms,
        hangover_ms=gate.hangover_ms,
        warmup_ms=gate.warmup_ms,
        aggressiveness=gate.vad_aggressiveness,
        guard_aggressiveness=gate.barge_in_aggressiveness,
        guard_start=gate.barge_in_start,
        wake_listen_s=gate.wake_listen_s,
        follow_up_s=gate.follow_up_s,
        send_wake_word=gate.send_wake_word,
    )


def session_settings(config: Config) -> SessionOptions:
    """What the session core needs of ``config`` (the core does not import this module)."""
    local = config.gate.local_turns
    td = config.session.turn_detection or {}
    policy = config.session_policy
    return SessionOptions(
        session=config.session.to_api(turn_detection_null=local),
        tools=tuple(tool.to_api() for tool in config.tools),
        local_turns=local,
        barge_in=BargeIn(config.gate.barge_in),
        interrupt_response=bool(td.get("interrupt_response", True)),
        create_response=bool(td.get("create_response", True)),
        greeting=policy.greeting,
        fresh_after_idle_s=policy.fresh_after_idle_s,
        max_turns=policy.max_turns,
        response_timeout_s=config.realtime.response_timeout_s,
        renew_after_s=config.realtime.renew_after_s,
    )
