"""What the appliance looks like to Home Assistant: the MQTT topics, the discovery configs
and the state payloads, as plain data (the bridge, ``appliance.mqtt``, sends them).

One device (``[mqtt] node_id``, named ``device_name``) with these entities, each with a
``unique_id`` "<node_id>_<key>" and the device's availability topic:

    state        sensor (enum)  listening / thinking / speaking / ready / muted / ...
    latency      sensor (ms)    the last turn's end of speech to first reply audio
    mute         switch         the microphone's privacy mute
    volume       number         the speaker volume, 0-100 %
    announce     text           write a sentence: it is spoken as an announcement
    ask          text           write a prompt: the agent answers, the user may reply
    next_timer   sensor (timestamp)  when the next timer or alarm rings; its name, label and
                                kind in the attributes (``<node_id>/next_timer/attributes``)
    ringing      binary_sensor  on while a timer or alarm rings
    stop_ringing button         stops a ringing timer or alarm (as the talk button does)
    user_text    sensor         the last user transcript   (only with [logging] transcripts)
    agent_text   sensor         the last agent transcript  (only with [logging] transcripts)

Discovery topics are ``<prefix>/<component>/<node_id>/<key>/config`` (retained); states are
under ``<node_id>/`` (retained), commands under ``<node_id>/<key>/set``.
Imports the standard library and ``appliance`` settings and state.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.core.state import State
from appliance.settings_home import MqttSettings

if TYPE_CHECKING:
    from appliance.home import NextTimer

ONLINE, OFFLINE = "online", "offline"
PRESS = "PRESS"
NONE = "None"
"""A sensor payload Home Assistant takes as unknown (no timer set)."""
TEXT_MAX = 255
"""Home Assistant's longest text entity value."""


@dataclass(frozen=True, slots=True)
class Entity:
    key: str
    component: str
    name: str
    config: dict[str, Any]
    command: bool = False
    """It takes commands at ``<node_id>/<key>/set``."""
    state: bool = True
    """It has a state at ``<node_id>/<key>``."""
    attributes: bool = False
    """It has JSON attributes at ``<node_id>/<key>/attributes``."""


class Topics:
    """The topics of one device."""

    def __init__(self, settings: MqttSettings) -> None:
        self.node = settings.node_id
        self.prefix = settings.discovery_prefix.rstrip("/")
        self.availability = f"{self.node}/availability"

    def state(self, key: str) -> str:
        return f"{self.node}/{key}"

    def attributes(self, key: str) -> str:
        return f"{self.node}/{key}/attributes"

    def command(self, key: str) -> str:
        return f"{self.node}/{key}/set"

    def config(self, entity: Entity) -> str:
        return f"{self.prefix}/{entity.component}/{self.node}/{entity.key}/config"


def entities(*, transcripts: bool) -> list[Entity]:
    states = [s.value for s in State]
    found = [
        Entity("state", "sensor", "State", {
            "device_class": "enum", "options": states, "icon": "mdi:account-voice",
        }),
        Entity("latency", "sensor", "Last reply latency", {
            "device_class": "duration", "unit_of_measurement": "ms",
            "state_class": "measurement", "entity_category": "diagnostic",
        }),
        Entity("mute", "switch", "Microphone mute", {
            "payload_on": "ON", "payload_off": "OFF", "icon": "mdi:microphone-off",
        }, command=True),
        Entity("volume", "number", "Volume", {
            "min": 0, "max": 100, "step": 1, "mode": "slider", "unit_of_measurement": "%",
            "icon": "mdi:volume-high",
        }, command=True),
        Entity("announce", "text", "Announce", {
            "mode": "text", "max": TEXT_MAX, "icon": "mdi:bullhorn",
        }, command=True, state=False),
        Entity("ask", "text", "Ask", {
            "mode": "text", "max": TEXT_MAX, "icon": "mdi:chat-question",
        }, command=True, state=False),
        Entity("next_timer", "sensor", "Next timer", {
            "device_class": "timestamp", "icon": "mdi:timer-outline",
        }, attributes=True),
        Entity("ringing", "binary_sensor", "Ringing", {
            "payload_on": "ON", "payload_off": "OFF", "icon": "mdi:alarm-bell",
        }),
        Entity("stop_ringing", "button", "Stop ringing", {
            "payload_press": PRESS, "icon": "mdi:alarm-off",
        }, command=True, state=False),
    ]
    if transcripts:
        found += [
            Entity("user_text", "sensor", "Last user words", {"icon": "mdi:account"}),
            Entity("agent_text", "sensor", "Last agent words", {"icon": "mdi:robot"}),
        ]
    return found


def discovery(settings: MqttSettings, entity: Entity, topics: Topics) -> dict[str, Any]:
    """One entity's discovery config (the keys Home Assistant's MQTT integration requires:
    ``state_topic`` for a sensor, ``command_topic`` for a switch, number or text, and a
    ``unique_id`` and ``device.identifiers`` to group them under one device)."""
    config: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"{settings.node_id}_{entity.key}",
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": {
            "identifiers": [settings.node_id],
            "name": settings.device_name,
            "manufacturer": "appliance",
            "model": "Realtime voice appliance",
            "sw_version": __version__,
        },
        **entity.config,
    }
    if entity.state:
        config["state_topic"] = topics.state(entity.key)
    if entity.command:
        config["command_topic"] = topics.command(entity.key)
    if entity.attributes:
        config["json_attributes_topic"] = topics.attributes(entity.key)
    return config


def state_payloads(
    *, state: State, muted: bool, volume: int | None, latency_ms: int | None,
    user_text: str, agent_text: str, transcripts: bool,
    next_timer: NextTimer | None = None, ringing: str = "",
) -> dict[str, str]:
    """Each entity's state payload (key -> text; "<key>/attributes" for the attributes);
    an unknown value is left out."""
    out = {"state": state.value, "mute": "ON" if muted else "OFF"}
    if next_timer is None:
        out["next_timer"] = NONE
        out["next_timer/attributes"] = "{}"
    else:
        due = dt.datetime.fromtimestamp(next_timer.due, dt.UTC)
        out["next_timer"] = due.isoformat()
        out["next_timer/attributes"] = json.dumps({
            "name": next_timer.name, "label": next_timer.label, "kind": next_timer.kind,
        })
    out["ringing"] = "ON" if ringing else "OFF"
    if volume is not None:
        out["volume"] = str(volume)
    if latency_ms is not None:
        out["latency"] = str(latency_ms)
    if transcripts:
        out["user_text"] = user_text[:TEXT_MAX]
        out["agent_text"] = agent_text[:TEXT_MAX]
    return out
