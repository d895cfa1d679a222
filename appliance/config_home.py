"""The readers of ``[control]`` (the local control socket, announcements) and ``[mqtt]``
(Home Assistant), beside ``appliance.config``, which calls them.

Imports only the standard library, ``appliance.config_table``, ``appliance.settings_home`` and
``appliance.errors``.
"""

from __future__ import annotations

import re

from appliance.config_table import Table, describe
from appliance.errors import ConfigError
from appliance.settings_home import EARCON_NAMES, ControlSettings, MqttSettings


def read_control(t: Table) -> ControlSettings:
    earcon = t.text("announce_earcon", "wake", ("", *EARCON_NAMES))
    s = ControlSettings(
        enabled=t.flag("enabled", True),
        socket=t.text("socket", ControlSettings.socket),
        group=t.text("group", ""),
        announce_earcon=earcon,
        announce_wait_s=t.number("announce_wait_s", 120.0, 1, 3600),
    )
    if not s.socket.startswith("/"):
        raise ConfigError(t.key("socket"), f"expected an absolute path, got {describe(s.socket)}")
    t.done()
    return s


_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def read_mqtt(t: Table) -> MqttSettings:
    s = MqttSettings(
        enabled=t.flag("enabled", False),
        host=t.text("host", "localhost"),
        port=t.whole("port", 1883, 1, 65535),
        tls=t.flag("tls", False),
        username=t.text("username", ""),
        discovery_prefix=t.text("discovery_prefix", "homeassistant"),
        device_name=t.text("device_name", MqttSettings.device_name),
        node_id=t.text("node_id", "appliance"),
        keepalive_s=t.whole("keepalive_s", 30, 5, 3600),
    )
    if not s.host:
        raise ConfigError(t.key("host"), "expected a host name or address, got \"\"")
    if not _NODE_ID.match(s.node_id):
        raise ConfigError(
            t.key("node_id"),
            f"expected letters, digits, _ or - (at most 64), got {describe(s.node_id)}",
        )
    if not s.discovery_prefix or any(c in s.discovery_prefix for c in "#+"):
        raise ConfigError(
            t.key("discovery_prefix"),
            f"expected an MQTT topic without wildcards, got {describe(s.discovery_prefix)}",
        )
    t.done()
    return s
