"""Timers end to end: the simulated model sets one, it rings on the speaker offline, the talk
button stops it, and one set before a restart rings after it.

Real parts: the daemon in process against ``RealtimeSimulator``, ALSA ``file``-plugin devices
(the speaker file holds what was played), gpiozero's ``MockFactory`` for the talk button and
the LED, the state directory on disk.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from daemon_env import StateLog, running, statuses
from signals import best_match
from waiting import until

from appliance.config import Config, parse_config
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import DEMO_KEY, demo_config, speech_recording
from appliance.earcons import read_wav, shipped
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv
    from gpiozero.pins.mock import MockFactory

pytest_plugins = ["alsa_env", "gpio_env"]

TOOLS = ["set_timer", "set_alarm", "cancel_timer", "cancel_alarm", "list_timers"]


def config(url: str, state: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        **demo_config(url),
        "gpio": {"enabled": True, "state_dir": str(state), "talk_pin": "GPIO17", "led": "pwm",
                 "led_pin": "GPIO25"},
        "tools": [{"name": name} for name in TOOLS],
        "timers": {"max_ring_s": 30},
        **extra,
    }
    return parse_config(data)





def test_a_timer_set_by_the_model_rings_offline_stops_at_the_button_and_survives_a_restart(
    alsa_env: AlsaEnv, mock_pins: MockFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: STATUS= names the next one due and the ring; the restarted daemon is muted
    (the mute persists) and rings all the same."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    alsa_env.write_mic(np.zeros(16000 * 120, np.int16))  # a quiet room
    state = tmp_path / "state"
    script = SimScript(tool_calls=(ToolCall("set_timer", '{"seconds": 2, "label": "tea"}'),))
    alarm = np.frombuffer(read_wav(shipped("alarm"), "earcons.alarm"), dtype=np.int16)
    talk, led = mock_pins.pin(17), mock_pins.pin(25)
    found: dict[str, Any] = {}

    told: list[str] = []

    async def main() -> None:
        # Read STATUS= as it comes: an unread datagram socket would block the daemon's notify.
        asyncio.get_running_loop().add_reader(notify, lambda: told.extend(statuses(notify)))
        sim = RealtimeSimulator(api_key=DEMO_KEY, script=script, profile="fast")
        await sim.start()
        url = sim.url
        try:
            cfg = config(url, state, session_policy={"greeting": "Hello"})
            log = StateLog()
            daemon = Daemon(cfg, ApiKey(DEMO_KEY, "test"), observers=[log])
            async with running(daemon):
                # The greeting's reply is the model's set_timer call: the device answers it.
                await until(lambda: bool(daemon.alarms.timers.pending), 20)
                saved = json.loads((state / "timers.json").read_text())
                found["saved"] = [e["label"] for e in saved["pending"]]
                await sim.close()  # the network goes down before it rings
                await until(lambda: daemon.alarms.is_ringing, 10)
                found["state_at_ring"] = daemon.session.state
                ring_t = time.monotonic()
                led_before = len(led.states)
                await asyncio.sleep(3.0)  # two chimes, with a pause between them
                found["led_changes"] = len(led.states) - led_before
                found["still_ringing"] = daemon.alarms.is_ringing
                # The talk button stops it, and that press starts no turn.
                await asyncio.to_thread(talk.drive_low)
                await until(lambda: not daemon.alarms.is_ringing, 2)
                found["stopped_after"] = time.monotonic() - ring_t
                await asyncio.to_thread(talk.drive_high)
                await asyncio.sleep(0.3)
                found["listening"] = State.LISTENING in log.states
                found["ringing_led"] = daemon.gpio.leds.ringing if daemon.gpio and daemon.gpio.leds else None
                found["rings"] = list(daemon.alarms.rings)
                # One more, set through the same tool path, for the restart.
                answer = await daemon.toolbox.call("set_timer", '{"seconds": 3, "label": "eggs"}')
                found["answer"] = json.loads(answer)
                daemon.set_muted(True)  # kept for the next start: muting never silences a ring
            found["played"] = alsa_env.read_spk()
            # A new daemon, still offline: the eggs timer rings after the restart.
            daemon = Daemon(config(url, state), ApiKey(DEMO_KEY, "test"))
            async with running(daemon):
                await until(lambda: daemon.alarms.is_ringing, 10)
                found["muted"] = daemon.controls.muted
                found["after_restart"] = list(daemon.alarms.rings)
                await asyncio.sleep(1.5)
            found["played_again"] = alsa_env.read_spk()
        finally:
            await sim.close()

    try:
        asyncio.run(main())
    finally:
        notify.close()
    assert found["saved"] == ["tea"]  # written before it rang
    assert found["state_at_ring"] in (State.OFFLINE, State.CONNECTING)  # no network
    assert found["still_ringing"]
    assert found["led_changes"] >= 4  # the ringing pattern blinks
    assert found["stopped_after"] < 5
    assert not found["listening"]  # the press that stopped it was not a turn
    assert found["ringing_led"] is False
    assert found["rings"] == ["tea timer"]
    assert found["answer"]["set"] == "eggs timer set for 3 seconds"
    assert best_match(found["played"], alarm) > 0.99  # the chime reached the speaker
    assert found["after_restart"] == ["eggs timer"] and found["muted"]
    assert any(t.endswith("; ringing: tea timer") for t in told), told
    assert any("; next: tea timer at " in t for t in told), told
    assert any("; next: eggs timer at " in t for t in told), told
    assert best_match(found["played_again"], alarm) > 0.99
    assert json.loads((state / "timers.json").read_text())["pending"] == []


def test_a_ring_is_not_stopped_by_its_own_echo_but_by_the_users_voice(
    pulse_env: PulseEnv, tmp_path: Path
) -> None:
    """The microphone hears the speaker (``echomic``) and no echo canceller runs: the chimes
    alone never start a turn (the gate is held while each plays), and the user's voice in a
    pause stops the ring, without that speech going to the model."""
    speech, rate = speech_recording()
    found: dict[str, Any] = {}

    async def main() -> list[dict[str, Any]]:
        async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
            data = demo_config(sim.url)
            data["audio"] = {
                "capture_device": "echomic",
                "capture_rate": 16000,
                "playback_device": "spktap",
                "playback_rate": 24000,
                "processing": {
                    "echo_cancellation": False,
                    "noise_suppression": False,
                    "auto_gain": False,
                },
            }
            data["gpio"] = {"enabled": False, "state_dir": str(tmp_path / "state")}
            data["tools"] = [{"name": "set_timer"}]
            data["timers"] = {"max_ring_s": 15}
            log = StateLog()
            daemon = Daemon(parse_config(data), ApiKey(DEMO_KEY, "test"), observers=[log])
            async with running(daemon):
                await asyncio.wait_for(log.ready.wait(), 20)
                await asyncio.sleep(0.5)  # past the VAD's warm-up
                await daemon.toolbox.call("set_timer", '{"seconds": 1, "label": "tea"}')
                await until(lambda: daemon.alarms.is_ringing, 5)
                started = time.monotonic()
                await asyncio.sleep(6.0)  # three chimes, each heard by the microphone
                found["echo_survived"] = daemon.alarms.is_ringing
                found["listening_on_echo"] = State.LISTENING in log.states
                feed = pulse_env.feed(np.frombuffer(speech, np.int16), rate, sink="spk")
                try:
                    await until(lambda: not daemon.alarms.is_ringing, 6)
                    found["stopped_at"] = time.monotonic() - started
                finally:
                    feed.kill()
                    feed.wait()
                await asyncio.sleep(1.5)  # the swallowed turn ends
                found["listening"] = State.LISTENING in log.states
            return list(sim.received)

    received = asyncio.run(main())
    assert found["echo_survived"] and not found["listening_on_echo"]
    assert 6.0 <= found["stopped_at"] < 15  # the voice, not the 15 s limit
    assert not found["listening"]  # the speech that stopped it was not a turn
    types = [e["type"] for e in received]
    assert "input_audio_buffer.commit" not in types and "input_audio_buffer.append" not in types


def test_timers_survive_a_reload_which_applies_timers(alsa_env: AlsaEnv, tmp_path: Path) -> None:
    alsa_env.write_mic(np.zeros(16000 * 30, np.int16))
    state = tmp_path / "state"
    found: dict[str, Any] = {}

    async def main() -> None:
        async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
            data: dict[str, Any] = {
                **demo_config(sim.url),
                "gpio": {"enabled": False, "state_dir": str(state)},
                "tools": [{"name": "set_timer"}, {"name": "list_timers"}],
            }
            log = StateLog()
            daemon = Daemon(parse_config(data), ApiKey(DEMO_KEY, "test"), observers=[log])
            async with running(daemon):
                await asyncio.wait_for(log.ready.wait(), 20)
                await daemon.toolbox.call("set_timer", '{"seconds": 600, "label": "stew"}')
                await daemon.reload(parse_config({**data, "timers": {"max_ring_s": 20}}))
                found["settings"] = daemon.alarms.timers.settings
                found["listed"] = json.loads(await daemon.toolbox.call("list_timers", "{}"))

    asyncio.run(main())
    assert found["settings"].max_ring_s == 20
    assert [t["label"] for t in found["listed"]["timers"]] == ["stew"]
