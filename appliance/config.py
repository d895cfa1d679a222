"""Configuration: one TOML file read and validated into frozen settings.

Owns the file format: which keys each table has, their defaults and bounds, the checks
across keys, and ``parse_config`` / ``load_config`` / ``listen_settings``. Every error names
the dotted key path (``session.audio.output.speed: expected a number, got "fast"``);
unknown keys are errors. This is the only module that reads the TOML.

The rest lives beside it and is re-exported here, so ``from appliance.config import X``
keeps working for every name it had:

    config_table   Table: the typed reader of one table (key paths in errors)
    config_home    the [control] and [mqtt] tables' readers
    settings       the frozen settings dataclasses and the adapter-side mode enums
    settings_home  the [earcons], [control] and [mqtt] settings
    api_shapes     the settings in the realtime API's shape (``session.update``)
    led_patterns   LED kinds, pattern modes, colours, the default pattern per state
    builtin_tools  the built-in tools' names, descriptions and argument schemas

Imports only the standard library, those modules, ``appliance.errors`` and
``appliance.core`` (``listen``, ``schema``, ``settings``, ``state``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.builtin_tools import BUILTIN_DESCRIPTIONS, BUILTIN_PARAMETERS, BUILTIN_TOOLS
from appliance.config_home import read_control, read_mqtt
from appliance.config_table import Table, describe
from appliance.core.listen import Detector, GateMode
from appliance.core.schema import SchemaError, check_schema
from appliance.core.settings import BargeIn
from appliance.core.state import State
from appliance.core.timers import TimerSettings
from appliance.core_options import (
    GATED_CHUNK_MS,
    STREAMED_CHUNK_MS,
    listen_settings,
    session_settings,
    upstream_chunk_ms,
)
from appliance.errors import ConfigError
from appliance.led_patterns import COLORS, RINGING, LedKind, LedMode, LedPattern, parse_color
from appliance.settings import (
    DEFAULT_API_URL,
    DEFAULT_URL,
    AudioSettings,
    Config,
    GateSettings,
    GpioSettings,
    LoggingSettings,
    LogLevel,
    ProcessingSettings,
    RealtimeSettings,
    SessionPolicySettings,
    SessionSettings,
    TalkMode,
    ToolSettings,
    Transport,
    WireFormat,
)
from appliance.settings_home import EARCON_NAMES, EarconSettings

# Every name other modules import from here; most are re-exported from their own module.
__all__ = [
    "BARGE_IN_SOURCES", "BUILTIN_DESCRIPTIONS", "BUILTIN_PARAMETERS", "BUILTIN_TOOLS",
    "DEFAULT_API_URL", "DEFAULT_URL", "EARCON_NAMES", "GATE_MODES", "LOG_LEVELS", "STT_MODELS",
    "TRANSPORTS", "WIRE_FORMATS", "AudioSettings", "BargeIn", "Config", "EarconSettings",
    "GateMode", "GateSettings", "GpioSettings", "LedKind", "LedMode", "LedPattern", "LogLevel",
    "LoggingSettings", "ProcessingSettings", "RealtimeSettings", "SessionPolicySettings",
    "SessionSettings", "TalkMode", "ToolSettings", "Transport", "WireFormat", "listen_settings",
    "load_config", "parse_config", "session_settings", "GATED_CHUNK_MS", "STREAMED_CHUNK_MS",
    "upstream_chunk_ms",
]

# The allowed spellings, in the order error messages list them.
TRANSPORTS = tuple(m.value for m in Transport)
WIRE_FORMATS = tuple(m.value for m in WireFormat)
GATE_MODES = tuple(m.value for m in GateMode)
BARGE_IN_SOURCES = tuple(m.value for m in BargeIn)
LOG_LEVELS = tuple(m.value for m in LogLevel)
STT_MODELS = (
    "assemblyai/u3-rt-pro",
    "assemblyai/universal-streaming-multilingual",
    "assemblyai/universal-streaming-english",
    "inworld/inworld-stt-1",
    "soniox/stt-rt-v4",
)


def _realtime(t: Table) -> RealtimeSettings:
    url = t.text("url", DEFAULT_URL)
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(t.key("url"), f"expected a ws:// or wss:// URL, got {describe(url)}")
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
        transport=t.choice("transport", Transport.WEBSOCKET),
        api_url=t.text("api_url", DEFAULT_API_URL),
    )
    if not settings.api_url.startswith(("http://", "https://")) or "?" in settings.api_url:
        raise ConfigError(
            t.key("api_url"),
            f"expected an http:// or https:// URL without a query, got {describe(settings.api_url)}",
        )
    t.done()
    return settings


def _turn_detection(t: Table) -> dict[str, Any]:
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


def _session(t: Table) -> SessionSettings:
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
    provider_data = t.raw("providerData")  # free-form: the service owns its meaning
    if provider_data is not None and not isinstance(provider_data, Mapping):
        raise ConfigError(t.key("providerData"), f"expected a table, got {describe(provider_data)}")
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
        provider_data=provider_data,
    )
    out_t.done()
    audio.done()
    t.done()
    return settings


def _audio(t: Table) -> AudioSettings:
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
        chunk_ms=_chunk_ms(t),
        prefill_ms=t.whole("prefill_ms", 60, 0, 1000),
        wire_format=t.choice("wire_format", WireFormat.PCM16),
        processing=_processing(t.table("processing")),
    )
    if s.channel >= s.capture_channels:
        raise ConfigError(
            t.key("channel"),
            f"channel {s.channel} does not exist with capture_channels = {s.capture_channels}",
        )
    if s.chunk_ms is not None and s.chunk_ms % s.period_ms:
        raise ConfigError(t.key("chunk_ms"), f"must be a multiple of period_ms ({s.period_ms})")
    t.done()
    return s


def _chunk_ms(t: Table) -> int | None:
    """``chunk_ms``: "auto" (the default, None: by the gate mode) or 20 to 100 ms."""
    raw = t.peek("chunk_ms")
    if raw == "auto":
        t.raw("chunk_ms")
        return None
    if isinstance(raw, str):
        raise ConfigError(t.key("chunk_ms"), f'expected "auto" or a whole number, got {describe(raw)}')
    value: int | None = t.whole("chunk_ms", None, 20, 100)
    return value


def _processing(t: Table) -> ProcessingSettings:
    s = ProcessingSettings(
        echo_cancellation=t.flag("echo_cancellation", True),
        noise_suppression=t.flag("noise_suppression", False),
        auto_gain=t.flag("auto_gain", False),
        double_talk=t.flag("double_talk", True),
    )
    t.done()
    return s


def _gate(t: Table) -> GateSettings:
    s = GateSettings(
        mode=t.choice("mode", GateMode.VAD),
        detector=t.choice("detector", Detector.MICRO),
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
        barge_in=t.choice("barge_in", BargeIn.LOCAL),
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


def _gpio(t: Table) -> GpioSettings:
    def pin(name: str, default: str) -> str | int:
        if isinstance(t.peek(name), int) and not isinstance(t.peek(name), bool):
            value: str | int = t.whole(name, None, 0, 1023)
        else:
            value = t.text(name, default)
        return value

    def pattern(p: Table) -> LedPattern:
        color_text = p.text("color", "white")
        color = parse_color(color_text)
        if color is None:
            names = ", ".join(COLORS)
            raise ConfigError(
                p.key("color"), f'expected "#rrggbb" or one of {names}, got {describe(color_text)}'
            )
        s = LedPattern(
            mode=p.choice("mode", LedMode.OFF),
            on_time=p.number("on_time", 0.5, 0.01, 60),
            off_time=p.number("off_time", 0.5, 0.01, 60),
            fade_in=p.number("fade_in", 0.5, 0.0, 60),
            fade_out=p.number("fade_out", 0.5, 0.0, 60),
            color=color,
        )
        if s.mode is LedMode.PULSE and s.fade_in + s.fade_out <= 0:
            raise ConfigError(p.key("fade_in"), "fade_in + fade_out must be more than 0")
        p.done()
        return s

    pt = t.table("patterns")
    patterns = {state: pattern(pt.table(state.value)) for state in State if pt.has(state.value)}
    ringing = pattern(pt.table(RINGING)) if pt.has(RINGING) else None
    pt.done()
    s = GpioSettings(
        enabled=t.flag("enabled", True),
        required=t.flag("required", False),
        state_dir=t.text("state_dir", ""),
        led=t.choice("led", LedKind.PWM),
        led_pin=pin("led_pin", "GPIO25"),
        red_pin=pin("red_pin", "GPIO5"),
        green_pin=pin("green_pin", "GPIO6"),
        blue_pin=pin("blue_pin", "GPIO13"),
        active_high=t.flag("active_high", True),
        patterns=patterns,
        ringing=ringing,
        talk_pin=pin("talk_pin", "GPIO17"),
        mute_pin=pin("mute_pin", ""),
        volume_up_pin=pin("volume_up_pin", ""),
        volume_down_pin=pin("volume_down_pin", ""),
        pull_up=t.flag("pull_up", True),
        bounce_time=t.number("bounce_time", 0.05, 0.0, 1.0),
        hold_time=t.number("hold_time", 5.0, 0.5, 60.0),
        talk_mode=t.choice("talk_mode", TalkMode.HOLD),
        mixer_control=t.text("mixer_control", "Master"),
        mixer_card=t.whole("mixer_card", -1, -1, 31),
        mixer_device=t.text("mixer_device", "default"),
        volume_step=t.whole("volume_step", 5, 1, 50),
    )
    t.done()
    return s


def _earcons(t: Table) -> EarconSettings:
    sounds: dict[str, str] = {}
    for name in EARCON_NAMES:
        value = t.text(name, "default")
        if value not in ("", "default") and not value.startswith(("/", "~")):
            raise ConfigError(
                t.key(name),
                f'expected "default", "" (silent) or an absolute path to a WAV file, '
                f"got {describe(value)}",
            )
        sounds[name] = value
    s = EarconSettings(enabled=t.flag("enabled", True), **sounds)
    t.done()
    return s


def _logging(t: Table) -> LoggingSettings:
    s = LoggingSettings(
        level=t.choice("level", LogLevel.INFO), transcripts=t.flag("transcripts", True)
    )
    t.done()
    return s


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tools(root: Table, name: str) -> tuple[ToolSettings, ...]:
    value = root.raw(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(name, f"expected an array of tables ([[tools]]), got {describe(value)}")
    tools: list[ToolSettings] = []
    for i, entry in enumerate(value):
        t = Table(entry, f"{name}[{i}]")
        tools.append(_tool(t))
        if any(other.name == tools[-1].name for other in tools[:-1]):
            raise ConfigError(t.key("name"), f"duplicate tool name {describe(tools[-1].name)}")
    return tuple(tools)


def _tool(t: Table) -> ToolSettings:
    tool_name = t.text("name")
    if tool_name is None:
        raise ConfigError(t.key("name"), "missing (every tool needs a name)")
    if not _TOOL_NAME.match(tool_name):
        raise ConfigError(
            t.key("name"),
            f"expected letters, digits, _ or - (at most 64), got {describe(tool_name)}",
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


def _session_policy(t: Table) -> SessionPolicySettings:
    s = SessionPolicySettings(
        greeting=t.text("greeting", ""),
        fresh_after_idle_s=t.number("fresh_after_idle_s", 600.0, 0, 7 * 86400),
        max_turns=t.whole("max_turns", 20, 0, 1000),
    )
    t.done()
    return s


def _timers(t: Table) -> TimerSettings:
    s = TimerSettings(
        max_ring_s=t.number("max_ring_s", 60.0, 5.0, 3600.0),
        ring_interval_s=t.number("ring_interval_s", 2.5, 1.0, 30.0),
    )
    t.done()
    return s


def parse_config(data: Mapping[str, Any], source: str = "<string>") -> Config:
    """Validate a parsed TOML document into a ``Config``; raises ``ConfigError``."""
    root = Table(data, "")
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
        timers=_timers(root.table("timers")),
        control=read_control(root.table("control")),
        mqtt=read_mqtt(root.table("mqtt")),
        source=source,
    )
    root.done()
    if (
        config.audio.wire_format is not WireFormat.PCM16
        and config.realtime.transport is not Transport.WEBSOCKET
    ):
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
