"""What the status LED shows: the LED kinds, pattern modes, colours and default patterns.

Owns the data behind ``[gpio] led`` and ``[gpio.patterns.<state>]``: ``LedKind``,
``LedMode``, ``LedPattern``, the colour names, and the default pattern of every ``State``
for a single LED and for an RGB LED. ``appliance.gpio`` drives the hardware from it;
``appliance.config`` validates the TOML into it. Imports only the standard library and
``appliance.core.state``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.core.state import State

Color = tuple[float, float, float]


class LedKind(enum.StrEnum):
    """The status LED's hardware (``[gpio] led``)."""

    NONE = "none"
    """No LED."""
    LED = "led"
    """On/off only: a pulse is shown as a blink with the same timing."""
    PWM = "pwm"
    """One dimmable LED."""
    RGB = "rgb"
    """A three-pin RGB LED: each state in its own colour."""


class LedMode(enum.StrEnum):
    """How a pattern lights the LED (``[gpio.patterns.<state>] mode``)."""

    OFF = "off"
    ON = "on"
    BLINK = "blink"
    """``on_time`` lit, ``off_time`` dark."""
    PULSE = "pulse"
    """Fades up over ``fade_in`` and down over ``fade_out``."""


@dataclass(frozen=True)
class LedPattern:
    """How the LED shows one state. ``color`` is (r, g, b) from 0 to 1, RGB LEDs only."""

    mode: LedMode = LedMode.OFF
    """``off``, ``on``, ``blink`` (on_time, off_time) or ``pulse`` (fade_in, fade_out)."""
    on_time: float = 0.5
    """Blink: seconds lit."""
    off_time: float = 0.5
    """Blink: seconds dark."""
    fade_in: float = 0.5
    """Pulse: seconds fading up."""
    fade_out: float = 0.5
    """Pulse: seconds fading down."""
    color: Color = (1.0, 1.0, 1.0)
    """(r, g, b) from 0 to 1 (RGB LEDs only)."""

    def __post_init__(self) -> None:
        # Built in code with the TOML spelling ("blink"): still an enum member afterwards.
        object.__setattr__(self, "mode", LedMode(self.mode))


COLORS: Mapping[str, str] = {
    "white": "#ffffff",
    "red": "#ff0000",
    "green": "#00ff00",
    "blue": "#0000ff",
    "yellow": "#ffff00",
    "cyan": "#00ffff",
    "magenta": "#ff00ff",
    "orange": "#ff4000",
    "purple": "#8000ff",
}
"""The colour names a pattern may use besides "#rrggbb"."""


def parse_color(text: str) -> Color | None:
    """A colour name or "#rrggbb" as (r, g, b) from 0 to 1; None when it is neither."""
    text = COLORS.get(text.lower(), text)
    if len(text) != 7 or text[0] != "#":
        return None
    try:
        r, g, b = (int(text[i : i + 2], 16) / 255 for i in (1, 3, 5))
    except ValueError:
        return None
    return (r, g, b)


def _rgb(color: str) -> Color:
    rgb = parse_color(color)
    assert rgb is not None, color
    return rgb


def _on(color: str = "white") -> LedPattern:
    return LedPattern(LedMode.ON, color=_rgb(color))


def _blink(on_time: float, off_time: float, color: str = "white") -> LedPattern:
    return LedPattern(LedMode.BLINK, on_time=on_time, off_time=off_time, color=_rgb(color))


def _pulse(fade_in: float, fade_out: float, color: str = "white") -> LedPattern:
    return LedPattern(LedMode.PULSE, fade_in=fade_in, fade_out=fade_out, color=_rgb(color))


# A single LED stays dark when idle and only lights for the user's turn; an RGB LED shows
# every state in its own colour.
SINGLE_DEFAULTS: Mapping[State, LedPattern] = {
    State.STARTING: _blink(0.05, 0.45),
    State.CONNECTING: _blink(0.5, 0.5),
    State.READY: LedPattern(LedMode.OFF),
    State.LISTENING: _on(),
    State.THINKING: _pulse(0.3, 0.3),
    State.SPEAKING: _pulse(0.8, 0.8),
    State.MUTED: _blink(0.1, 2.9),
    State.OFFLINE: _blink(0.2, 1.8),
    State.ERROR: _blink(0.1, 0.1),
}
RGB_DEFAULTS: Mapping[State, LedPattern] = {
    State.STARTING: _on("white"),
    State.CONNECTING: _pulse(0.8, 0.8, "yellow"),
    State.READY: _on("#002000"),
    State.LISTENING: _on("blue"),
    State.THINKING: _pulse(0.3, 0.3, "cyan"),
    State.SPEAKING: _pulse(0.8, 0.8, "green"),
    State.MUTED: _on("red"),
    State.OFFLINE: _blink(0.5, 1.5, "orange"),
    State.ERROR: _blink(0.2, 0.2, "red"),
}


RINGING = "ringing"
"""``[gpio.patterns.ringing]``: a timer or alarm rings (over whatever the state shows)."""
RINGING_DEFAULTS: Mapping[LedKind, LedPattern] = {
    LedKind.RGB: _blink(0.25, 0.25, "purple"),
}
"""An even 4 Hz-ish blink, unlike any state's (an RGB LED in purple)."""


def default_ringing(kind: LedKind) -> LedPattern:
    """The ``ringing`` pattern when ``[gpio.patterns]`` does not set one."""
    return RINGING_DEFAULTS.get(kind, _blink(0.25, 0.25))


def default_pattern(kind: LedKind, state: State) -> LedPattern:
    """The pattern a state has when ``[gpio.patterns]`` does not set one."""
    defaults = RGB_DEFAULTS if kind is LedKind.RGB else SINGLE_DEFAULTS
    return defaults.get(state, LedPattern(LedMode.OFF))
