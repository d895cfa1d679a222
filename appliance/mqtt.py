"""Home Assistant through an MQTT broker: discovery, state, commands and availability.

Owns the broker connection (aiomqtt, imported only when ``[mqtt] enabled``): connects with
the last will "offline" on the availability topic, publishes the discovery configs
(``appliance.ha_discovery``) and "online", all retained, then each state when it changes
(retained) and acts on commands at once through the ``Home`` (the same routes as the control
socket). A lost broker is retried with backoff (``appliance.core.backoff``); nothing here
waits on the voice path or makes it wait. The password is the systemd credential
``mqtt-password`` (``LoadCredential=``), or ``APPLIANCE_MQTT_PASSWORD`` when run by hand.
Imports the standard library, aiomqtt and ``appliance`` modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from appliance.core.backoff import Backoff
from appliance.credentials import read_credential
from appliance.errors import AudioDeviceError, CredentialError
from appliance.ha_discovery import (
    OFFLINE,
    ONLINE,
    Topics,
    discovery,
    entities,
    state_payloads,
)

if TYPE_CHECKING:
    import aiomqtt

    from appliance.home import Home, Snapshot
    from appliance.settings import Config
    from appliance.settings_home import MqttSettings

log = logging.getLogger(__name__)

CREDENTIAL_NAME = "mqtt-password"
ENV_NAME = "APPLIANCE_MQTT_PASSWORD"
HEALTHY_AFTER_S = 30.0
"""A connection this long resets the backoff."""


def load_password(env: Mapping[str, str] | None = None) -> str | None:
    """The broker password: the systemd credential, else the environment; None: none."""
    env = os.environ if env is None else env
    found = read_credential(CREDENTIAL_NAME, env)
    if found is not None and found[0]:
        return found[0]
    return env.get(ENV_NAME, "").strip() or None


async def run_bridge(config: Config, home: Home) -> None:
    """Keep the bridge up until cancelled; the broker being down only costs retries."""
    import aiomqtt

    settings = config.mqtt
    try:
        password = load_password() if settings.username else None
    except CredentialError as exc:
        log.error("mqtt: %s; not connecting", exc, extra={"ERROR_CODE": "config"})
        await asyncio.Event().wait()
        return
    bridge = Bridge(settings, home, transcripts=config.logging.transcripts)
    backoff = Backoff()
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await bridge.serve(aiomqtt, password)
        except aiomqtt.MqttError as exc:
            if loop.time() - started >= HEALTHY_AFTER_S:
                backoff.reset()
            delay = backoff.next()
            log.warning(
                "mqtt: broker %s:%d: %s; retrying in %.1f s",
                settings.host, settings.port, exc, delay,
            )
            await asyncio.sleep(delay)


class Bridge:
    """One device's discovery, states and commands (``serve`` runs one connection)."""

    def __init__(self, settings: MqttSettings, home: Home, *, transcripts: bool) -> None:
        self.settings = settings
        self.home = home
        self.transcripts = transcripts
        self.topics = Topics(settings)
        self.entities = entities(transcripts=transcripts)
        self._published: dict[str, str] = {}
        self._changed = asyncio.Event()

    async def serve(self, aiomqtt: Any, password: str | None) -> None:
        s = self.settings
        will = aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True)
        client: aiomqtt.Client = aiomqtt.Client(
            s.host,
            port=s.port,
            username=s.username or None,
            password=password,
            identifier=f"{s.node_id}-appliance",
            keepalive=s.keepalive_s,
            will=will,
            tls_context=ssl.create_default_context() if s.tls else None,
        )
        facts = self.home.facts
        async with client:
            log.info("mqtt: connected to %s:%d", s.host, s.port)
            self._published = {}
            for entity in self.entities:
                payload = json.dumps(discovery(s, entity, self.topics))
                await client.publish(self.topics.config(entity), payload, qos=1, retain=True)
            for entity in self.entities:
                if entity.command:
                    await client.subscribe(self.topics.command(entity.key), qos=1)
            await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
            facts.listen(self._on_change)
            tasks = [
                asyncio.create_task(self._publisher(client), name="mqtt publisher"),
                asyncio.create_task(self._commands(client), name="mqtt commands"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the broker went away: its MqttError
            finally:
                facts.unlisten(self._on_change)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # Leaving on purpose (a stop) says so; for a lost broker, its will does.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)

    def _on_change(self, _: Snapshot) -> None:
        self._changed.set()

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """Publish each state that differs from what the broker holds (retained)."""
        while True:
            self._changed.clear()
            now = self.home.facts.now
            muted, volume = self.home.levels()
            states = state_payloads(
                state=now.state, muted=muted, volume=volume,
                latency_ms=now.last_latency_ms, user_text=now.user_text,
                agent_text=now.agent_text, transcripts=self.transcripts,
                next_timer=now.next_timer, ringing=now.ringing,
            )
            for key, payload in states.items():
                if self._published.get(key) != payload:
                    await client.publish(self.topics.state(key), payload, qos=1, retain=True)
                    self._published[key] = payload
            await self._changed.wait()

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
            self.command(str(message.topic), text.strip())

    def command(self, topic: str, text: str) -> None:
        """One command from Home Assistant, acted on at once (bad payloads are logged)."""
        key = next((e.key for e in self.entities if self.topics.command(e.key) == topic), "")
        if key == "mute":
            if text not in ("ON", "OFF"):
                log.warning("mqtt: %s: expected ON or OFF, got %r", topic, text[:40])
                return
            self.home.set_muted(text == "ON")
        elif key == "volume":
            try:
                percent = round(float(text))
            except ValueError:
                log.warning("mqtt: %s: expected a number, got %r", topic, text[:40])
                return
            try:
                self.home.set_volume(max(0, min(100, percent)))
            except AudioDeviceError as exc:
                log.warning("mqtt: volume: %s", exc)
                self._published.pop("volume", None)  # Home Assistant gets the real one back
                self._changed.set()
        elif key == "stop_ringing":
            if not self.home.stop_ringing("Home Assistant"):
                log.info("mqtt: stop ringing: nothing rings")
        elif key in ("announce", "ask") and text:
            self.home.announce(text, ask=key == "ask")
