"""Config validation: defaults, key paths in errors, unknown keys, the shipped example."""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from pathlib import Path
from typing import Any

import pytest

import appliance.config
from appliance.api_shapes import session_object, tool_object
from appliance.builtin_tools import BUILTIN_PARAMETERS, Builtin
from appliance.config import (
    BargeIn,
    GateMode,
    GateSettings,
    GpioSettings,
    LedKind,
    LedMode,
    LogLevel,
    TalkMode,
    Transport,
    WireFormat,
    load_config,
    parse_config,
)
from appliance.core.state import State
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def error_of(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config.audio.chunk_ms is None  # "auto": by the gate mode
    assert config.gate.mode == "vad"
    assert config.gate.preroll_ms == 300


def test_shipped_example_config_is_valid_and_complete() -> None:
    config = load_config(ROOT / "config" / "appliance.toml")
    assert config.realtime.url == "wss://api.inworld.ai/api/v1/realtime/session"


def test_wrong_type_names_the_key_path() -> None:
    msg = error_of({"session": {"audio": {"output": {"speed": "fast"}}}})
    assert msg == 'session.audio.output.speed: expected a number, got "fast"'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"audio": {"chunk_ms": 10}}, "audio.chunk_ms: expected a whole number from 20 to 100, got 10"),
        ({"audio": {"chunk_ms": 45}}, "audio.chunk_ms: must be a multiple of period_ms (10)"),
        ({"gate": {"mode": "loud"}}, 'gate.mode: expected one of "vad", "push_to_talk", "always", "wake", got "loud"'),
        ({"gate": {"vad_aggressiveness": True}}, "gate.vad_aggressiveness: expected a whole number, got true"),
        ({"audio": {"capture_device": 3}}, "audio.capture_device: expected a string, got 3"),
        ({"audio": {"channel": 1}}, "audio.channel: channel 1 does not exist with capture_channels = 1"),
        ({"realtime": {"url": "http://x"}}, 'realtime.url: expected a ws:// or wss:// URL, got "http://x"'),
        ({"session": {"output_modalities": ["video"]}}, 'session.output_modalities[0]: expected "audio" or "text", got "video"'),
        ({"session": {"max_output_tokens": "lots"}}, 'session.max_output_tokens: expected one of "inf", got "lots"'),
        ({"session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "eagerness": "low"}}}}},
         "session.audio.input.turn_detection.eagerness: unknown key"),
        ({"gate": "vad"}, 'gate: expected a table, got "vad"'),
        ({"gate": {"vad_aggressiveness": 3, "barge_in_aggressiveness": 2}},
         "gate.barge_in_aggressiveness: must not be below vad_aggressiveness (3): the guard asks for more evidence, not less"),
        ({"gate": {"barge_in_min_speech_ms": -1}},
         "gate.barge_in_min_speech_ms: expected a whole number from 0 to 2000, got -1"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], expected: str) -> None:
    assert error_of(data) == expected


def test_unknown_keys_are_errors() -> None:
    assert error_of({"audio": {"chunkms": 40}}) == "audio.chunkms: unknown key"
    assert error_of({"sesion": {}}) == "sesion: unknown key"


def test_session_to_api_shape() -> None:
    config = parse_config(
        {
            "session": {
                "model": "openai/gpt-4o-mini",
                "max_output_tokens": "inf",
                "audio": {
                    "output": {"voice": "Clive", "speed": 1.1},
                    "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000}},
                },
            }
        }
    )
    api = config.session.to_api(turn_detection_null=False)
    assert api["type"] == "realtime"
    assert api["model"] == "openai/gpt-4o-mini"
    assert api["max_output_tokens"] == "inf"
    assert api["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert api["audio"]["input"]["turn_detection"] == {"type": "server_vad", "idle_timeout_ms": 8000}
    assert api["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "Clive", "speed": 1.1}
    assert "instructions" not in api
    local = config.session.to_api(turn_detection_null=True)
    assert local["audio"]["input"]["turn_detection"] is None


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_example_config_documents_every_key() -> None:
    """Every key the example sets is commented, and the example sets every known key."""
    text = (ROOT / "config" / "appliance.toml").read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "[")) and "=" in stripped:
            assert lines[i - 1].strip().startswith("#"), f"key without a comment: {stripped}"
    assert set(data) >= {"realtime", "session", "audio", "gate", "gpio", "logging"}


# Every mode-like key: (table, key, its enum, the default member).
MODE_KEYS: list[tuple[tuple[str, ...], str, type[enum.Enum], enum.Enum]] = [
    (("realtime",), "transport", Transport, Transport.WEBSOCKET),
    (("audio",), "wire_format", WireFormat, WireFormat.PCM16),
    (("gate",), "mode", GateMode, GateMode.VAD),
    (("gate",), "barge_in", BargeIn, BargeIn.LOCAL),
    (("gpio",), "led", LedKind, LedKind.PWM),
    (("gpio",), "talk_mode", TalkMode, TalkMode.HOLD),
    (("gpio", "patterns", "ready"), "mode", LedMode, LedMode.OFF),
    (("logging",), "level", LogLevel, LogLevel.INFO),
]


def nest(tables: tuple[str, ...], key: str, value: object) -> dict[str, Any]:
    data: dict[str, Any] = {key: value}
    for name in reversed(tables):
        data = {name: data}
    return data


def mode_of(config: appliance.config.Config, tables: tuple[str, ...], key: str) -> object:
    node: Any = config
    for name in tables:
        if name == "ready":  # gpio.patterns.ready: what the LED shows for that state
            node = node.pattern(State.READY)
        elif name != "patterns":
            node = getattr(node, name)
    return getattr(node, key)


@pytest.mark.parametrize(("tables", "key", "kind", "default"), MODE_KEYS)
def test_every_mode_is_parsed_once_into_its_enum(
    tables: tuple[str, ...], key: str, kind: type[enum.Enum], default: enum.Enum
) -> None:
    assert mode_of(parse_config({}), tables, key) is default
    for member in kind:
        if tables[0] == "audio" and member is not WireFormat.PCM16:
            continue  # G.711 on the WebSocket only; the default transport is the WebSocket
        assert mode_of(parse_config(nest(tables, key, member.value)), tables, key) is member


@pytest.mark.parametrize(("tables", "key", "kind", "default"), MODE_KEYS)
def test_a_wrong_mode_names_the_key_and_every_allowed_value(
    tables: tuple[str, ...], key: str, kind: type[enum.Enum], default: enum.Enum
) -> None:
    allowed = ", ".join(f'"{m.value}"' for m in kind)
    path = ".".join((*tables, key))
    assert error_of(nest(tables, key, "Loud")) == f'{path}: expected one of {allowed}, got "Loud"'
    assert error_of(nest(tables, key, 1)) == f"{path}: expected a string, got 1"


def test_mode_error_messages_are_unchanged() -> None:
    """The spellings and their order are what users saw before the enums."""
    assert error_of({"realtime": {"transport": "sip"}}) == (
        'realtime.transport: expected one of "websocket", "webrtc", "voice-sdk", got "sip"'
    )
    assert error_of({"gate": {"barge_in": "always"}}) == (
        'gate.barge_in: expected one of "local", "server", "off", got "always"'
    )
    assert error_of({"gpio": {"led": "neon"}}) == (
        'gpio.led: expected one of "none", "led", "pwm", "rgb", got "neon"'
    )
    assert error_of({"logging": {"level": "trace"}}) == (
        'logging.level: expected one of "debug", "info", "warning", "error", got "trace"'
    )
    assert error_of({"audio": {"wire_format": "pcmu"}, "realtime": {"transport": "webrtc"}}) == (
        'audio.wire_format: "pcmu" needs realtime.transport = "websocket" '
        "(the webrtc transport has its own audio encoding)"
    )


def test_settings_built_in_code_hold_enum_members() -> None:
    gate = GateSettings(mode="wake", barge_in="off")  # type: ignore[arg-type]
    assert gate.mode is GateMode.WAKE and gate.barge_in is BargeIn.OFF
    assert dataclasses.replace(gate, mode="always").mode is GateMode.ALWAYS  # type: ignore[arg-type]
    gpio = GpioSettings(
        led="rgb",  # type: ignore[arg-type]
        talk_mode="toggle",  # type: ignore[arg-type]
        patterns={"error": GpioSettings.Pattern("blink")},  # type: ignore[arg-type, dict-item]
    )
    assert gpio.led is LedKind.RGB and gpio.talk_mode is TalkMode.TOGGLE
    assert gpio.pattern(State.ERROR).mode is LedMode.BLINK
    assert gpio.pattern("error") == gpio.pattern(State.ERROR)
    assert gpio == parse_config(
        {"gpio": {"led": "rgb", "talk_mode": "toggle", "patterns": {"error": {"mode": "blink"}}}}
    ).gpio
    with pytest.raises(ValueError, match="telepathy"):
        GateSettings(mode="telepathy")  # type: ignore[arg-type]


def test_modes_still_equal_their_spelling() -> None:
    """Code elsewhere that compares or converts the TOML text keeps working."""
    config = parse_config({"gate": {"mode": "wake", "barge_in": "server"}})
    assert config.gate.mode == "wake" and f"{config.gate.barge_in}" == "server"
    assert config.gate.local_turns
    assert not parse_config({"gate": {"mode": "always"}}).gate.local_turns


def test_led_defaults_per_kind() -> None:
    rgb = parse_config({"gpio": {"led": "rgb"}}).gpio
    single = parse_config({"gpio": {"led": "pwm"}}).gpio
    assert rgb.pattern(State.READY).mode is LedMode.ON
    assert rgb.pattern(State.READY).color == (0.0, 32 / 255, 0.0)
    assert single.pattern(State.READY).mode is LedMode.OFF
    assert single.pattern(State.MUTED) == GpioSettings.Pattern(
        LedMode.BLINK, on_time=0.1, off_time=2.9
    )
    assert rgb.pattern(State.THINKING) == GpioSettings.Pattern(
        LedMode.PULSE, fade_in=0.3, fade_out=0.3, color=(0.0, 1.0, 1.0)
    )


def test_builtin_tools_take_their_schema_from_builtin_tools() -> None:
    config = parse_config({"tools": [{"name": "set_volume"}, {"name": "mute", "description": "x"}]})
    volume, mute = config.tools
    assert volume.builtin and volume.parameters == BUILTIN_PARAMETERS[Builtin.SET_VOLUME]
    assert volume.description == "Set the speaker volume, in percent."
    assert mute.description == "x"
    api = volume.to_api()
    assert api == tool_object(volume)
    assert api["parameters"]["required"] == ["percent"]
    assert error_of({"tools": [{"name": "weather"}]}) == (
        "tools[0].command: missing: 'weather' is not a built-in tool (get_time, set_volume, mute, "
        "set_timer, set_alarm, cancel_timer, cancel_alarm, list_timers)"
    )


def test_session_to_api_is_the_api_shape() -> None:
    config = parse_config({"session": {"instructions": "Be brief", "audio": {"output": {"voice": "Ashley"}}}})
    for null in (True, False):
        assert config.session.to_api(turn_detection_null=null) == session_object(
            config.session, turn_detection_null=null
        )


def test_every_name_config_exported_before_the_split_still_imports() -> None:
    names = [
        *("AudioSettings", "BARGE_IN_SOURCES", "BUILTIN_DESCRIPTIONS", "BUILTIN_PARAMETERS"),
        *("BUILTIN_TOOLS", "Config", "DEFAULT_API_URL", "DEFAULT_URL", "EARCON_NAMES"),
        *("EarconSettings", "GATE_MODES", "GateSettings", "GpioSettings", "LOG_LEVELS"),
        *("LoggingSettings", "ProcessingSettings", "RealtimeSettings", "STT_MODELS"),
        *("SessionPolicySettings", "SessionSettings", "TRANSPORTS", "ToolSettings"),
        *("WIRE_FORMATS", "listen_settings", "load_config", "parse_config"),
    ]
    missing = [name for name in names if not hasattr(appliance.config, name)]
    assert missing == []
    assert appliance.config.GATE_MODES == ("vad", "push_to_talk", "always", "wake")
    assert appliance.config.TRANSPORTS == ("websocket", "webrtc", "voice-sdk")
