"""Home Assistant through MQTT against a real broker: Debian's mosquitto, started here on a
free loopback port with a temporary config (no service). The daemon runs in this process
against the loopback simulator with ALSA file devices; a second MQTT client plays Home
Assistant: it reads the discovery configs and states and sends commands."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import numpy as np
import pytest
from daemon_env import running
from waiting import accepts, until, wait_until

from appliance.config import Config, parse_config
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.ha_discovery import Topics, entities
from appliance.mqtt import CREDENTIAL_NAME, ENV_NAME, load_password
from appliance.settings_home import MqttSettings
from appliance.timer_tools import TimerTools
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env"]

KEY = "dGVzdDptcXR0LWtleQ=="
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# What Home Assistant's MQTT integration requires of a discovery config, per component
# (home-assistant.io/integrations/<component>.mqtt: the keys marked Required), and of every
# entity that belongs to a device: a unique_id, and device.identifiers (or connections).
REQUIRED = {
    "sensor": {"state_topic"},
    "switch": {"command_topic"},
    "number": {"command_topic"},
    "text": {"command_topic"},
    "binary_sensor": {"state_topic"},
    "button": {"command_topic"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """mosquitto on 127.0.0.1:``port``; ``restart`` keeps the port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        assert wait_until(lambda: accepts(self.port), 10), "mosquitto did not start"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def silent_mic(alsa_env: AlsaEnv) -> Iterator[None]:
    alsa_env.write_mic(np.zeros(16000 * 60, dtype=np.int16))
    yield


def config(url: str, port: int, tmp: Path, *, transcripts: bool = True, **gpio: Any) -> Config:
    return parse_config({
        "realtime": {"url": url},
        "audio": {"capture_device": "mic", "playback_device": "spk"},
        "gate": {"mode": "push_to_talk"},
        "gpio": {"enabled": False, "state_dir": str(tmp / "state"), **gpio},
        "logging": {"transcripts": transcripts},
        "control": {"enabled": False},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "device_name": "Kitchen"},
    })


class HomeAssistant:
    """A second client: every message on the device's topics, latest per topic."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latest: dict[str, str] = {}
        self.history: list[tuple[str, str]] = []
        self.client: aiomqtt.Client | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[HomeAssistant]:
        async with aiomqtt.Client("127.0.0.1", port=self.port, identifier="ha-test") as client:
            self.client = client
            await client.subscribe("homeassistant/#")
            await client.subscribe("appliance/#")
            reader = asyncio.create_task(self._read(client))
            try:
                yield self
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _read(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker stopped under the test
            await self._read_all(client)

    async def _read_all(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            text = payload.decode() if isinstance(payload, bytes) else str(payload)
            self.latest[str(message.topic)] = text
            self.history.append((str(message.topic), text))

    async def send(self, topic: str, payload: str) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1)


def configs(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in ha.latest.items() if t.endswith("/config") and p}


def test_discovery_state_commands_and_a_broker_restart(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=20) as sim:
            daemon = Daemon(config(sim.url, broker.port, tmp_path), ApiKey(KEY, "test"))
            ha = HomeAssistant(broker.port)
            async with running(daemon), ha.connected():
                await until(lambda: ha.latest.get("appliance/state") == "ready", 15, "state ready")
                await until(lambda: len(configs(ha)) == 11, 5, "eleven discovery configs")
                seen["configs"] = configs(ha)
                seen["availability"] = ha.latest.get("appliance/availability")
                # Commands act at once, and the new state comes back.
                await ha.send("appliance/mute/set", "ON")
                await until(lambda: daemon.levels.muted, 5, "the mute")
                await until(lambda: ha.latest.get("appliance/mute") == "ON", 5, "mute ON")
                await until(lambda: ha.latest.get("appliance/state") == "muted", 5, "state muted")
                await ha.send("appliance/mute/set", "OFF")
                # The state and the mute are two messages: wait for both.
                await until(lambda: ha.latest.get("appliance/state") == "ready" and ha.latest.get("appliance/mute") == "OFF", 5, "unmuted")
                seen["mute_states"] = [p for t, p in ha.history if t == "appliance/mute"]
                await ha.send("appliance/announce/set", "The washing machine is done")
                await until(
                    lambda: any(e["type"] == "response.create" and "response" in e for e in sim.received),
                    10, "the announcement's response.create",
                )
                await until(lambda: ha.latest.get("appliance/agent_text") == "The washing machine is done", 10, "the agent transcript")
                seen["states"] = [p for t, p in ha.history if t == "appliance/state"]
                seen["oob"] = next(e for e in sim.received if e["type"] == "response.create")["response"]
            # A stop says offline (retained), as the last will would on a lost connection.
            async with aiomqtt.Client("127.0.0.1", port=broker.port, identifier="after") as c:
                await c.subscribe("appliance/availability")
                async with asyncio.timeout(5):
                    async for m in c.messages:
                        seen["after_stop"] = m.payload.decode() if isinstance(m.payload, bytes) else m.payload
                        break
        return seen

    seen = asyncio.run(scenario())
    assert seen["availability"] == "online"
    cfgs = seen["configs"]
    by_key = {}
    for topic, cfg in cfgs.items():
        prefix, component, node, key, _ = topic.split("/")
        assert (prefix, node) == ("homeassistant", "appliance")
        for required in REQUIRED[component]:
            assert required in cfg, f"{topic} lacks {required}"
        assert cfg["unique_id"] == f"appliance_{key}"
        assert cfg["device"]["identifiers"] == ["appliance"] and cfg["device"]["name"] == "Kitchen"
        assert cfg["availability_topic"] == "appliance/availability"
        by_key[key] = (component, cfg)
    assert sorted(by_key) == [
        "agent_text", "announce", "ask", "latency", "mute", "next_timer", "ringing", "state",
        "stop_ringing", "user_text", "volume",
    ]
    assert by_key["state"][1]["device_class"] == "enum" and "listening" in by_key["state"][1]["options"]
    assert by_key["next_timer"][1]["device_class"] == "timestamp"
    assert by_key["next_timer"][1]["json_attributes_topic"] == "appliance/next_timer/attributes"
    assert by_key["ringing"][0] == "binary_sensor" and by_key["stop_ringing"][0] == "button"
    assert "state_topic" not in by_key["stop_ringing"][1]
    assert by_key["mute"][0] == "switch" and by_key["volume"][0] == "number" and by_key["announce"][0] == "text"
    assert seen["mute_states"][-2:] == ["ON", "OFF"]
    assert "thinking" in seen["states"] and "speaking" in seen["states"]
    assert seen["oob"]["conversation"] == "none"
    assert seen["oob"]["instructions"] == "Say exactly: The washing machine is done"
    assert seen["after_stop"] == "offline"


def test_the_bridge_survives_a_broker_restart_while_running(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> tuple[str | None, Daemon, State]:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            daemon = Daemon(config(sim.url, broker.port, tmp_path), ApiKey(KEY, "test"))
            async with running(daemon):
                ha = HomeAssistant(broker.port)
                async with ha.connected():
                    await until(lambda: ha.latest.get("appliance/availability") == "online", 15, "online")
                broker.stop()
                await asyncio.sleep(0.5)
                down_state = daemon.session.state  # the broker is not the voice path's business
                broker.start()  # empty: no retained configs, no subscriptions
                ha = HomeAssistant(broker.port)
                async with ha.connected():
                    # Back within the backoff (first retries within 1 s, then 2 s, ...).
                    await until(lambda: len(configs(ha)) == 11 and ha.latest.get("appliance/state") == "ready", 15, "republished")
                    await ha.send("appliance/mute/set", "ON")
                    await until(lambda: daemon.levels.muted, 5, "a command after the restart")
                    return ha.latest.get("appliance/availability"), daemon, down_state
        raise AssertionError("unreachable")

    availability, daemon, down_state = asyncio.run(scenario())
    assert availability == "online" and daemon.levels.muted
    assert down_state is State.READY


def test_timers_ring_and_stop_in_home_assistant_and_a_button_volume_at_once(
    broker: Broker, tmp_path: Path, pulse_env: PulseEnv
) -> None:
    """The timer entities follow the alarm clock; a ring is seen by a second client and
    stopped by the button entity; a volume step (as the volume button makes it, on the
    ``pmixer`` ALSA control) reaches Home Assistant with no other state change."""
    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            cfg = config(sim.url, broker.port, tmp_path, mixer_control="Master", mixer_device="pmixer")
            daemon = Daemon(cfg, ApiKey(KEY, "test"))
            ha = HomeAssistant(broker.port)
            async with running(daemon), ha.connected():
                await until(lambda: ha.latest.get("appliance/state") == "ready", 15, "state ready")
                await until(lambda: ha.latest.get("appliance/ringing") == "OFF", 5, "not ringing")
                seen["none"] = ha.latest.get("appliance/next_timer")
                tools = TimerTools(daemon.alarms)  # the tools the model calls
                seen["set_at"] = time.time()
                tools.call("set_timer", {"seconds": 600, "label": "stew"})
                await until(lambda: ha.latest.get("appliance/next_timer") not in (None, "None"), 5, "next timer")
                seen["next"] = ha.latest["appliance/next_timer"]
                await until(lambda: "stew" in ha.latest.get("appliance/next_timer/attributes", ""), 5, "attributes")
                seen["attributes"] = json.loads(ha.latest["appliance/next_timer/attributes"])
                tools.call("set_timer", {"seconds": 1, "label": "egg"})
                await until(lambda: ha.latest.get("appliance/ringing") == "ON", 10, "ringing ON")
                seen["ringing"] = daemon.alarms.is_ringing
                await ha.send("appliance/stop_ringing/set", "PRESS")
                await until(lambda: ha.latest.get("appliance/ringing") == "OFF", 5, "ringing OFF")
                seen["stopped"] = not daemon.alarms.is_ringing and daemon.alarms.rings == ["egg timer"]
                seen["next_after"] = ha.latest["appliance/next_timer"]
                # A volume button's step, no state change: Home Assistant has it at once.
                before = ha.latest.get("appliance/volume")
                stepped = daemon.levels.step_volume(-10)
                seen["volume"] = (before, stepped)
                await until(lambda: ha.latest.get("appliance/volume") == str(stepped), 5, "the new volume")
        return seen

    pulse_env.pactl("set-sink-volume", "spk", "50%")
    try:
        seen = asyncio.run(scenario())
    finally:
        pulse_env.pactl("set-sink-volume", "spk", "100%")  # as the other tests expect it
    assert seen["none"] == "None"
    due = dt.datetime.fromisoformat(seen["next"])
    assert due.tzinfo is not None
    assert seen["set_at"] + 599 <= due.timestamp() <= seen["set_at"] + 602
    assert seen["attributes"] == {"name": "stew timer", "label": "stew", "kind": "timer"}
    assert seen["ringing"] and seen["stopped"]
    assert seen["next_after"] == seen["next"]  # the stew timer is still the next one
    before, stepped = seen["volume"]
    assert stepped == 40 and before != str(stepped)


def test_transcript_sensors_only_when_transcripts_are_logged() -> None:
    keys = {e.key for e in entities(transcripts=False)}
    assert "user_text" not in keys and "agent_text" not in keys and "announce" in keys
    assert {"user_text", "agent_text"} <= {e.key for e in entities(transcripts=True)}
    t = Topics(MqttSettings(node_id="hall", discovery_prefix="ha/"))
    assert t.availability == "hall/availability" and t.command("mute") == "hall/mute/set"


def test_password_from_the_credential_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / CREDENTIAL_NAME).write_text("s3cret\n")
    assert load_password({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "s3cret"
    (tmp_path / CREDENTIAL_NAME).write_text("\n")  # the unit's empty fallback
    assert load_password({"CREDENTIALS_DIRECTORY": str(tmp_path), ENV_NAME: "x"}) == "x"
    assert load_password({}) is None
