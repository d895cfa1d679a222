"""GPIO LEDs and buttons through real gpiozero on its MockFactory (no hardware, no Mock())."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from waiting import until

from appliance.config import GpioSettings, LedKind, LedMode, parse_config
from appliance.controls import Levels
from appliance.core.session import StateChanged
from appliance.core.state import State
from appliance.errors import AudioDeviceError, ConfigError
from appliance.gpio import Gpio, open_gpio
from appliance.mixer import Mixer
from appliance.persist import SavedControls, state_dir

if TYPE_CHECKING:
    from alsa_env import PulseEnv

# pulse_env: a real ALSA mixer (PulseAudio's ctl plugin); mock_pins: gpiozero's MockFactory
pytest_plugins = ["alsa_env", "gpio_env"]


class Daemonish:
    """The daemon's talk inputs and its mute itself, recording what reached the loop thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.loop_thread_only = True

    def _record(self, name: str, value: object) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.loop_thread_only = False
        self.calls.append((name, value))

    def set_talking(self, held: bool) -> None:
        self._record("talking", held)

    def apply_muted(self, muted: bool) -> None:
        self._record("muted", muted)

    def reconnect(self) -> None:
        self._record("reconnect", None)


def settings(tmp_path: Path, **kw: object) -> GpioSettings:
    base = GpioSettings(state_dir=str(tmp_path / "state"), bounce_time=0.0, hold_time=0.2)
    return replace(base, **kw)  # type: ignore[arg-type]


def levels_for(s: GpioSettings, target: Daemonish) -> Levels:
    """Mute and volume as the daemon builds them, from the same ``[gpio]`` keys."""
    return Levels(
        SavedControls(state_dir(s.state_dir)),
        apply_muted=target.apply_muted,
        mixer=partial(Mixer, s.mixer_control, s.mixer_card, s.mixer_device),
    )


def with_gpio(s: GpioSettings, body: Callable[[Gpio, Daemonish], object]) -> Daemonish:
    """Start as the daemon does (persisted mute and volume, then the GPIO) inside a running
    loop, run ``body`` (sync or async), close it all."""
    target = Daemonish()

    async def main() -> None:
        levels = levels_for(s, target)
        levels.start()
        gpio = open_gpio(s, target, asyncio.get_running_loop(), levels=levels)
        assert gpio is not None
        try:
            result = body(gpio, target)
            if asyncio.iscoroutine(result):
                await result
        finally:
            gpio.close()
            levels.close()

    asyncio.run(main())
    return target


async def press(pin: MockPWMPin, target: Daemonish, *, hold_s: float = 0.0) -> None:
    """Press and release a pull-up button from another thread, as real edges arrive."""
    await asyncio.to_thread(pin.drive_low)
    await asyncio.sleep(max(hold_s, 0.02))
    await asyncio.to_thread(pin.drive_high)
    await asyncio.sleep(0.02)


def levels(pin: MockPWMPin) -> list[float]:
    return [float(s.state) for s in pin.states]


# --- LEDs ------------------------------------------------------------------------------------


def test_single_led_default_patterns(tmp_path: Path, mock_pins: MockFactory) -> None:
    s = settings(tmp_path, led="led", led_pin="GPIO25", talk_pin="")

    async def body(gpio: Gpio, _: Daemonish) -> None:
        pin = mock_pins.pin(25)
        gpio.on_action(StateChanged(State.LISTENING))
        assert pin.state == 1
        gpio.on_action(StateChanged(State.READY))
        assert pin.state == 0
        pin.clear_states()
        gpio.on_action(StateChanged(State.ERROR))  # blink 0.1 / 0.1
        await until(lambda: len(pin.states) >= 4, 2, "two blinks")
        gpio.on_action(StateChanged(State.READY))
        seen = levels(pin)
        assert seen[:4] == [0.0, 1.0, 0.0, 1.0]
        assert seen[-1] == 0.0
        # a plain LED cannot fade: thinking (pulse 0.3/0.3) blinks with that timing
        pin.clear_states()
        gpio.on_action(StateChanged(State.THINKING))
        await until(lambda: len(pin.states) >= 3, 2, "one blink")
        pin.assert_states([False, True, False])

    with_gpio(s, body)


def test_pwm_led_pulses_through_intermediate_levels(tmp_path: Path, mock_pins: MockFactory) -> None:
    pulse = GpioSettings.Pattern(LedMode.PULSE, fade_in=0.1, fade_out=0.1)
    s = settings(tmp_path, led="pwm", led_pin=25, talk_pin="", patterns={"speaking": pulse})

    async def body(gpio: Gpio, _: Daemonish) -> None:
        pin = mock_pins.pin(25)
        pin.clear_states()
        gpio.on_action(StateChanged(State.SPEAKING))

        def faded_in() -> bool:  # a level on the way up, then the peak
            seen = levels(pin)
            up = next((i for i, v in enumerate(seen) if 0.2 < v < 0.8), len(seen))
            return any(v == pytest.approx(1.0) for v in seen[up:])

        await until(faded_in, 2, "the pulse's fade in and peak")
        gpio.on_action(StateChanged(State.READY))
        seen = levels(pin)
        assert any(0.2 < v < 0.8 for v in seen), seen
        assert max(seen) == pytest.approx(1.0)
        assert pin.state == 0

    with_gpio(s, body)


def test_rgb_led_colours_and_polarity(tmp_path: Path, mock_pins: MockFactory) -> None:
    custom = {"error": GpioSettings.Pattern(LedMode.ON, color=(1.0, 0.5, 0.0))}
    s = settings(tmp_path, led="rgb", talk_pin="", patterns=custom)

    def body(gpio: Gpio, _: Daemonish) -> None:
        r, g, b = mock_pins.pin(5), mock_pins.pin(6), mock_pins.pin(13)
        gpio.on_action(StateChanged(State.LISTENING))  # default: solid blue
        assert (r.state, g.state, b.state) == (0, 0, 1)
        gpio.on_action(StateChanged(State.READY))  # default: dim green #002000
        assert (r.state, b.state) == (0, 0)
        assert g.state == pytest.approx(0x20 / 255)
        gpio.on_action(StateChanged(State.ERROR))
        assert (r.state, g.state, b.state) == (1, 0.5, 0)

    with_gpio(s, body)

    inverted = settings(tmp_path, led="rgb", talk_pin="", active_high=False)

    def body2(gpio: Gpio, _: Daemonish) -> None:
        gpio.on_action(StateChanged(State.MUTED))  # default: solid red
        assert (mock_pins.pin(5).state, mock_pins.pin(6).state, mock_pins.pin(13).state) == (0, 1, 1)

    with_gpio(inverted, body2)


def test_every_state_has_a_pattern_for_both_kinds() -> None:
    for kind in (LedKind.PWM, LedKind.RGB):
        s = GpioSettings(led=kind)
        for state in State:
            assert s.pattern(state.value).mode in ("off", "on", "blink", "pulse")


# --- buttons ---------------------------------------------------------------------------------


def test_push_to_talk_and_long_press(tmp_path: Path, mock_pins: MockFactory) -> None:
    s = settings(tmp_path, talk_pin="GPIO17", led="none")

    async def body(gpio: Gpio, target: Daemonish) -> None:
        pin = mock_pins.pin(17)
        await asyncio.to_thread(pin.drive_low)
        await until(lambda: target.calls == [("talking", True)])
        await asyncio.to_thread(pin.drive_high)
        await until(lambda: len(target.calls) == 2)
        assert target.calls[1] == ("talking", False)
        # held past hold_time: talking is dropped and the connection reopened
        target.calls.clear()
        await asyncio.to_thread(pin.drive_low)
        await until(lambda: ("reconnect", None) in target.calls)
        await asyncio.to_thread(pin.drive_high)
        await asyncio.sleep(0.05)
        assert target.calls == [("talking", True), ("talking", False), ("reconnect", None)]

    target = with_gpio(s, body)
    assert target.loop_thread_only


def test_toggle_talk_mode(tmp_path: Path, mock_pins: MockFactory) -> None:
    s = settings(tmp_path, talk_pin=17, talk_mode="toggle", led="none", hold_time=5.0)

    async def body(gpio: Gpio, target: Daemonish) -> None:
        pin = mock_pins.pin(17)
        await press(pin, target)
        await until(lambda: target.calls == [("talking", True)])
        await press(pin, target)
        await until(lambda: target.calls == [("talking", True), ("talking", False)])

    with_gpio(s, body)


def test_mute_toggles_persists_and_is_reapplied(tmp_path: Path, mock_pins: MockFactory) -> None:
    s = settings(tmp_path, talk_pin="", mute_pin="GPIO27", led="none")

    async def body(gpio: Gpio, target: Daemonish) -> None:
        await press(mock_pins.pin(27), target)
        await until(lambda: target.calls == [("muted", True)])

    with_gpio(s, body)
    saved = json.loads((tmp_path / "state" / "controls.json").read_text())
    assert saved["muted"] is True
    assert SavedControls(tmp_path / "state").muted is True

    # after a restart the mute is on again before anything is captured, and a press lifts it
    async def body2(gpio: Gpio, target: Daemonish) -> None:
        assert target.calls == [("muted", True)]
        await press(mock_pins.pin(27), target)
        await until(lambda: target.calls[-1] == ("muted", False))

    with_gpio(s, body2)
    assert SavedControls(tmp_path / "state").muted is False


def test_state_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/sd:{tmp_path}/other")
    assert state_dir("") == tmp_path / "sd"
    assert state_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir("") == tmp_path / "xdg" / "appliance"


def test_unreadable_state_file_gives_defaults(tmp_path: Path) -> None:
    (tmp_path / "controls.json").write_text("{not json")
    state = SavedControls(tmp_path)
    assert (state.muted, state.volume) == (False, None)
    state.muted = True
    state.save()
    assert SavedControls(tmp_path).muted is True
    assert [p.name for p in tmp_path.iterdir()] == ["controls.json"]  # no temp files left


# --- errors and the no-GPIO path -------------------------------------------------------------


def test_bad_and_shared_pins_name_the_key(tmp_path: Path, mock_pins: MockFactory) -> None:
    loop = asyncio.new_event_loop()
    levels = levels_for(settings(tmp_path), Daemonish())
    try:
        with pytest.raises(ConfigError) as err:
            open_gpio(settings(tmp_path, talk_pin="GPIO99"), Daemonish(), loop, levels=levels)
        assert err.value.key == "gpio.talk_pin"
        with pytest.raises(ConfigError) as err:
            open_gpio(settings(tmp_path, mute_pin="GPIO17"), Daemonish(), loop, levels=levels)
        assert err.value.key == "gpio.mute_pin"
        # nothing stays claimed after a failed start
        gpio = open_gpio(settings(tmp_path), Daemonish(), loop, levels=levels)
        assert gpio is not None
        gpio.close()
    finally:
        loop.close()


@pytest.fixture
def no_gpio(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine as it is: no pin factory configured and none that can load."""
    for lib in ("lgpio", "RPi", "pigpio"):
        if importlib.util.find_spec(lib) is not None:
            pytest.skip(f"{lib} is installed: this machine may have GPIO")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    old = Device.pin_factory
    Device.pin_factory = None
    try:
        yield
    finally:
        Device.pin_factory = old


def test_without_gpio_warns_once_and_runs_without(
    tmp_path: Path, no_gpio: None, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            gpio = open_gpio(
                settings(tmp_path, led="rgb"), Daemonish(), loop, levels=levels_for(settings(tmp_path), Daemonish())
            )
    finally:
        loop.close()
    assert gpio is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "running without LEDs and buttons" in warnings[0].getMessage()


def test_without_gpio_required_is_an_error(tmp_path: Path, no_gpio: None) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigError) as err:
            open_gpio(settings(tmp_path, required=True), Daemonish(), loop, levels=levels_for(settings(tmp_path), Daemonish()))
    finally:
        loop.close()
    assert err.value.key == "gpio.required"
    assert "gpio.required" in str(err.value)


def test_disabled_touches_no_pins(tmp_path: Path, no_gpio: None) -> None:
    loop = asyncio.new_event_loop()
    try:
        levels = levels_for(settings(tmp_path), Daemonish())
        assert open_gpio(settings(tmp_path, enabled=False), Daemonish(), loop, levels=levels) is None
    finally:
        loop.close()
    assert Device.pin_factory is None


# --- volume ----------------------------------------------------------------------------------


def test_missing_mixer_control_is_named() -> None:
    # No ALSA control device here (no sound card, no PulseAudio): the error path only.
    with pytest.raises(AudioDeviceError) as err:
        Mixer("NoSuchControl", 7)
    assert "NoSuchControl" in str(err.value)
    assert "card 7" in str(err.value)


def sink_volume(pulse: PulseEnv) -> int:
    """The ``spk`` sink's volume in percent, as PulseAudio itself reports it."""
    found = re.search(r"/\s*(\d+)%", pulse.pactl("get-sink-volume", "spk"))
    assert found is not None
    return int(found.group(1))


def test_volume_buttons_change_a_real_alsa_mixer_and_persist(
    tmp_path: Path, mock_pins: MockFactory, pulse_env: PulseEnv
) -> None:
    """The ALSA ``pulse`` ctl plugin exposes the sink volume as ``Master`` (``pmixer``)."""
    s = settings(
        tmp_path,
        talk_pin="",
        led="none",
        volume_up_pin=22,
        volume_down_pin=23,
        mixer_device="pmixer",
        volume_step=5,
    )
    pulse_env.pactl("set-sink-volume", "spk", "50%")
    try:

        async def body(gpio: Gpio, target: Daemonish) -> None:
            await press(mock_pins.pin(22), target)
            await until(lambda: sink_volume(pulse_env) == 55)
            for _ in range(2):
                await press(mock_pins.pin(23), target)
            await until(lambda: sink_volume(pulse_env) == 45)
            assert target.calls == []  # volume is the mixer's business, not the daemon's

        with_gpio(s, body)
        saved = json.loads((tmp_path / "state" / "controls.json").read_text())
        assert saved["volume"] == 45
        # After a restart the persisted volume is applied again, whatever the mixer says.
        pulse_env.pactl("set-sink-volume", "spk", "80%")
        with_gpio(s, lambda gpio, target: None)
        assert sink_volume(pulse_env) == 45
    finally:
        pulse_env.pactl("set-sink-volume", "spk", "100%")  # as the other tests expect it


def test_volume_buttons_without_mixer_warn_and_do_nothing(
    tmp_path: Path, mock_pins: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, talk_pin="", led="none", volume_up_pin=22, mixer_control="NoSuchCtl")

    async def body(gpio: Gpio, target: Daemonish) -> None:
        await press(mock_pins.pin(22), target)
        assert target.calls == []

    with caplog.at_level(logging.WARNING):
        with_gpio(s, body)
    assert any("NoSuchCtl" in r.getMessage() for r in caplog.records)


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpio", "key"),
    [
        ({"led": "neon"}, "gpio.led"),
        ({"talk_mode": "hold_on"}, "gpio.talk_mode"),
        ({"talk_pin": 1.5}, "gpio.talk_pin"),
        ({"hold_time": 0}, "gpio.hold_time"),
        ({"volume_step": 0}, "gpio.volume_step"),
        ({"patterns": {"ready": {"mode": "strobe"}}}, "gpio.patterns.ready.mode"),
        ({"patterns": {"ready": {"color": "puce"}}}, "gpio.patterns.ready.color"),
        ({"patterns": {"ready": {"on_time": -1}}}, "gpio.patterns.ready.on_time"),
        ({"patterns": {"ready": {"speed": 1}}}, "gpio.patterns.ready.speed"),
        ({"patterns": {"sleeping": {}}}, "gpio.patterns.sleeping"),
    ],
)
def test_gpio_config_errors_name_the_key(gpio: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"gpio": gpio})
    assert err.value.key == key


def test_gpio_config_values() -> None:
    g = parse_config(
        {
            "gpio": {
                "led": "rgb",
                "talk_pin": 17,
                "mute_pin": "BOARD13",
                "patterns": {"ready": {"mode": "blink", "on_time": 0.1, "color": "#ff8000"}},
            }
        }
    ).gpio
    assert (g.talk_pin, g.mute_pin) == (17, "BOARD13")
    ready = g.pattern("ready")
    assert (ready.mode, ready.on_time) == ("blink", 0.1)
    assert ready.color == pytest.approx((1.0, 0x80 / 255, 0.0))
    assert g.pattern("listening").color == (0.0, 0.0, 1.0)  # default for rgb


# --- end to end through the daemon -----------------------------------------------------------

PTT_SCRIPT = r"""
import asyncio, json, sys, time
from pathlib import Path
from gpiozero import Device
from appliance.config import parse_config
from appliance.core.session import StateChanged
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import DEMO_KEY, demo_config
from realtime_sim.server import RealtimeSimulator

async def main() -> None:
    ready = asyncio.Event()
    states = []

    def observe(action):
        if isinstance(action, StateChanged):
            states.append(action.state.value)
            if action.state is State.READY:
                ready.set()

    async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
        data = demo_config(sim.url)
        data["gate"] = {"mode": "push_to_talk"}
        data["gpio"] = {"talk_pin": "GPIO17", "led": "rgb", "state_dir": sys.argv[1]}
        daemon = Daemon(parse_config(data), ApiKey(DEMO_KEY, "test"), observers=[observe])
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(ready.wait(), 20)
        pin = Device.pin_factory.pin(17)
        await asyncio.to_thread(pin.drive_low)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pin.drive_high)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(e.get("type") == "response.create" for e in sim.received):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(runner, 10)
        print(json.dumps({"types": [e.get("type") for e in sim.received], "states": states}))

asyncio.run(main())
"""


def test_held_talk_button_sends_a_turn_end_to_end(tmp_path: Path) -> None:
    """The real daemon, MockFactory pins, ALSA file devices and the loopback simulator."""
    from appliance.demo import alsa_config_path, speech_recording, write_file_devices

    pcm, _ = speech_recording()
    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    mic.write_bytes(pcm)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env.update(
        ALSA_CONFIG_PATH=alsa_config_path(write_file_devices(tmp_path, mic, spk)),
        GPIOZERO_PIN_FACTORY="mock",
        GPIOZERO_MOCK_PIN_CLASS="mockpwmpin",
    )
    # A process of its own: alsa-lib reads its configuration once per process.
    proc = subprocess.run(
        [sys.executable, "-c", PTT_SCRIPT, str(tmp_path / "state")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    types = result["types"]
    assert types[0] == "session.update"
    assert "input_audio_buffer.append" in types
    assert types.count("input_audio_buffer.commit") == 1
    assert types.count("response.create") == 1
    assert types.index("input_audio_buffer.commit") < types.index("response.create")
    assert "listening" in result["states"]
    # The press played the "listening" earcon on the speaker before the turn streamed.
    import numpy as np

    from appliance.config import EarconSettings
    from appliance.earcons import load_earcons

    cue = np.frombuffer(load_earcons(EarconSettings())["listening"], dtype=np.int16) / 1.0
    played = np.fromfile(spk, dtype="<i2") / 1.0
    assert len(played) > len(cue)
    window = np.lib.stride_tricks.sliding_window_view(played[: 24000 * 5], len(cue))
    scores = window @ cue / (np.linalg.norm(window, axis=1) * np.linalg.norm(cue) + 1e-9)
    assert scores.max() > 0.99
