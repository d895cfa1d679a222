"""GPIO LEDs and buttons through gpiozero: the only module that imports gpiozero.

Owns the gpiozero devices: the status LED (``Leds``: a ``State`` shown as a pattern) and the
buttons (``Buttons``: edges handed to ``appliance.controls.Controls`` on the event loop; mute
and volume, and their persistence, belong to the daemon's ``appliance.controls.Levels``),
and the decision "no GPIO here" (one warning, or an error with ``[gpio] required = true``).
Pins go to gpiozero as configured ("GPIO17", "BOARD11", 17) and the pin factory is
gpiozero's own choice ($GPIOZERO_PIN_FACTORY), never picked here.

Threads: gpiozero runs blink/pulse in its own background threads, so ``Leds.show`` returns
at once; button callbacks arrive on gpiozero's threads and only ``call_soon_threadsafe``.
Imports: ``gpiozero``, ``appliance.config``, ``appliance.led_patterns``,
``appliance.controls``, ``appliance.core``, ``appliance.errors``.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

from gpiozero import LED, PWMLED, RGBLED, Button, Device
from gpiozero.exc import BadPinFactory, GPIOZeroError, GPIOZeroWarning, PinFactoryFallback

from appliance.config import GpioSettings
from appliance.controls import Controls, Cue, Levels, Target
from appliance.core.session import Action, StateChanged
from appliance.core.state import State
from appliance.errors import ConfigError
from appliance.led_patterns import LedKind, LedMode, LedPattern

log = logging.getLogger(__name__)

MIN_PHASE_S = 0.02  # a zero blink phase would make gpiozero's blink thread spin
Post = Callable[[Callable[[], None]], None]


def _build(key: str, pin: object, make: Callable[[], Any]) -> Any:
    """Build one device; a bad pin is a ``ConfigError`` naming ``gpio.<key>``."""
    try:
        return make()
    except BadPinFactory:
        raise
    except (GPIOZeroError, ValueError) as exc:  # gpiozero raises ValueError for bad names too
        raise ConfigError(f"gpio.{key}", f"cannot use pin {pin!r}: {exc}") from exc


class Leds:
    """The status LED: ``show(state)`` applies that state's pattern and returns at once.

    Defaults (``led_patterns.SINGLE_DEFAULTS`` / ``RGB_DEFAULTS``): one LED is dark when
    ready, on while listening, pulses while thinking (fast) and speaking (slow), and blinks
    while starting, connecting, muted (short flash every 3 s), offline and on error (fast).
    An RGB LED shows each state in a colour: dim green ready, blue listening, cyan thinking,
    green speaking, red muted, yellow connecting, orange offline, blinking red error. A plain
    ``led`` cannot fade, so it shows pulse as a blink with the same timing.
    """

    def __init__(self, settings: GpioSettings) -> None:
        self._settings = settings
        s = settings
        self.device: LED | PWMLED | RGBLED
        if s.led is LedKind.RGB:
            self.device = _build(
                "red_pin",
                (s.red_pin, s.green_pin, s.blue_pin),
                lambda: RGBLED(s.red_pin, s.green_pin, s.blue_pin, active_high=s.active_high),
            )
        elif s.led is LedKind.PWM:
            self.device = _build(
                "led_pin", s.led_pin, lambda: PWMLED(s.led_pin, active_high=s.active_high)
            )
        else:
            self.device = _build(
                "led_pin", s.led_pin, lambda: LED(s.led_pin, active_high=s.active_high)
            )
        self.state: State | None = None
        self.ringing = False
        self.show(State.STARTING)

    def show(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        if not self.ringing:  # a ring keeps the LED; the state shows again when it ends
            self._apply(self._settings.pattern(state))

    def show_ringing(self, ringing: bool) -> None:
        """A timer or alarm rings: the ``ringing`` pattern over any state until it stops."""
        if ringing == self.ringing:
            return
        self.ringing = ringing
        if ringing:
            self._apply(self._settings.ringing_pattern())
        elif self.state is not None:
            self._apply(self._settings.pattern(self.state))

    def _apply(self, p: LedPattern) -> None:
        dev = self.device
        on_t, off_t = max(p.on_time, MIN_PHASE_S), max(p.off_time, MIN_PHASE_S)
        if isinstance(dev, RGBLED):
            if p.mode is LedMode.ON:
                dev.color = p.color
            elif p.mode is LedMode.BLINK:
                dev.blink(on_t, off_t, on_color=p.color)
            elif p.mode is LedMode.PULSE:
                dev.pulse(p.fade_in, p.fade_out, on_color=p.color)
            else:
                dev.off()
        elif p.mode is LedMode.ON:
            dev.on()
        elif p.mode is LedMode.BLINK:
            dev.blink(on_t, off_t)
        elif p.mode is LedMode.PULSE and isinstance(dev, PWMLED):
            dev.pulse(p.fade_in, p.fade_out)
        elif p.mode is LedMode.PULSE:
            dev.blink(max(p.fade_in, MIN_PHASE_S), max(p.fade_out, MIN_PHASE_S))
        else:
            dev.off()

    def close(self) -> None:
        self.device.close()


class Buttons:
    """The talk, mute and volume buttons; a pin of "" is not wired.

    Callbacks come on gpiozero's threads; each one only posts the matching ``Controls``
    method to the loop, so those threads never wait for the loop.
    """

    def __init__(self, settings: GpioSettings, controls: Controls, post: Post) -> None:
        s = settings
        self.devices: dict[str, Button] = {}
        wiring: list[tuple[str, str | int, dict[str, Callable[[], None]]]] = [
            (
                "talk_pin",
                s.talk_pin,
                {
                    "when_pressed": controls.talk_pressed,
                    "when_released": controls.talk_released,
                    "when_held": controls.talk_held,
                },
            ),
            ("mute_pin", s.mute_pin, {"when_pressed": controls.mute_pressed}),
            ("volume_up_pin", s.volume_up_pin, {"when_pressed": controls.volume_up}),
            ("volume_down_pin", s.volume_down_pin, {"when_pressed": controls.volume_down}),
        ]
        try:
            for key, pin, handlers in wiring:
                if pin == "":
                    continue
                button: Button = _build(
                    key,
                    pin,
                    partial(
                        Button,
                        pin,
                        pull_up=s.pull_up,
                        bounce_time=s.bounce_time or None,
                        hold_time=s.hold_time,
                    ),
                )
                self.devices[key] = button
                for event, handler in handlers.items():
                    setattr(button, event, partial(post, handler))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for button in self.devices.values():
            button.close()
        self.devices.clear()


class Gpio:
    """LEDs, buttons and the controls behind them; ``on_action`` is a daemon observer."""

    def __init__(self, leds: Leds | None, buttons: Buttons | None, controls: Controls) -> None:
        self.leds = leds
        self.buttons = buttons
        self.controls = controls

    def on_action(self, action: Action) -> None:
        if isinstance(action, StateChanged) and self.leds is not None:
            self.leds.show(action.state)

    def show_ringing(self, ringing: bool) -> None:
        if self.leds is not None:
            self.leds.show_ringing(ringing)

    def close(self) -> None:
        if self.buttons is not None:
            self.buttons.close()
        if self.leds is not None:
            self.leds.close()


def _poster(loop: asyncio.AbstractEventLoop) -> Post:
    def post(fn: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop closed under a late press at shutdown
            pass

    return post


def open_gpio(
    settings: GpioSettings,
    target: Target,
    loop: asyncio.AbstractEventLoop,
    *,
    levels: Levels,
    cue: Cue | None = None,
) -> Gpio | None:
    """Build the LEDs and buttons (mute and volume buttons act on ``levels``).

    Returns None when ``enabled`` is false, or when this machine has no GPIO (one warning),
    unless ``required``: then a ``ConfigError`` naming ``gpio.required``. A wrong pin is a
    ``ConfigError`` naming its key. Call on the loop thread.
    """
    if not settings.enabled:
        return None
    s = settings
    leds: Leds | None = None
    buttons: Buttons | None = None
    controls = Controls(target, s, levels, cue=cue)
    with warnings.catch_warnings(record=True) as caught:
        # gpiozero warns for each pin factory it falls back from; under `-W error` (and in
        # pytest) that warning would abort the search before it ends in BadPinFactory.
        warnings.simplefilter("always", GPIOZeroWarning)
        try:
            leds = Leds(s) if s.led is not LedKind.NONE else None
            buttons = Buttons(s, controls, _poster(loop))
        except BadPinFactory as exc:
            if leds is not None:
                leds.close()
            tried = "; ".join(
                str(w.message) for w in caught if issubclass(w.category, PinFactoryFallback)
            )
            reason = f"{exc}{f' ({tried})' if tried else ''}"
            if s.required:
                raise ConfigError(
                    "gpio.required", f"GPIO is required but not available: {reason}"
                ) from exc
            log.warning("no GPIO on this machine, running without LEDs and buttons: %s", reason)
            return None
        except BaseException:
            if leds is not None:
                leds.close()
            raise
    for w in caught:
        if not issubclass(w.category, PinFactoryFallback):
            log.warning("gpio: %s", w.message)
    log.info("gpio: pin factory %s", type(Device.pin_factory).__name__)
    controls.start()
    return Gpio(leds, buttons, controls)
