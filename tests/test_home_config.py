"""The [control] and [mqtt] tables: defaults, errors naming the key, and a reload."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from appliance.app.announcements import Announcements
from appliance.config import parse_config, session_settings
from appliance.core.session import Session
from appliance.errors import ConfigError


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_defaults_mqtt_off_socket_in_the_runtime_directory() -> None:
    c = parse_config({})
    assert c.control.enabled and c.control.socket == "/run/appliance/control.sock"
    assert c.control.group == "" and c.control.announce_earcon == "wake"
    assert not c.mqtt.enabled and c.mqtt.discovery_prefix == "homeassistant" and c.mqtt.port == 1883


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"control": {"socket": "run/x.sock"}}, 'control.socket: expected an absolute path, got "run/x.sock"'),
        ({"control": {"announce_earcon": "bell"}}, "control.announce_earcon: expected one of"),
        ({"control": {"announce_wait_s": 0}}, "control.announce_wait_s: expected a number from 1 to 3600, got 0"),
        ({"control": {"colour": 1}}, "control.colour: unknown key"),
        ({"mqtt": {"port": 0}}, "mqtt.port: expected a whole number from 1 to 65535, got 0"),
        ({"mqtt": {"node_id": "my device"}}, 'mqtt.node_id: expected letters, digits, _ or - (at most 64), got "my device"'),
        ({"mqtt": {"discovery_prefix": "ha/#"}}, 'mqtt.discovery_prefix: expected an MQTT topic without wildcards, got "ha/#"'),
        ({"mqtt": {"host": ""}}, 'mqtt.host: expected a host name or address, got ""'),
        ({"mqtt": {"password": "x"}}, "mqtt.password: unknown key"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], expected: str) -> None:
    assert error_of(data).startswith(expected)


def test_reload_applies_the_announcement_keys_and_warns_about_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    old = parse_config({})
    announcements = Announcements(
        old, Session(session_settings(old)), cue=lambda name: True, dispatch=lambda: None
    )
    with caplog.at_level(logging.WARNING):
        announcements.reload(old, parse_config({"control": {"announce_earcon": "", "announce_wait_s": 30}}))
    a = announcements.core
    assert (a.earcon, a.max_wait_s) == ("", 30.0)
    assert not caplog.records
    announcements.reload(old, parse_config({"mqtt": {"enabled": True}}))
    assert any("[mqtt] apply at the next restart" in r.getMessage() for r in caplog.records)
