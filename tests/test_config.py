"""Config validation: defaults, key paths in errors, unknown keys, the shipped example."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.config import load_config, parse_config
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def error_of(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config.audio.chunk_ms == 40
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
