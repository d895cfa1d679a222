"""The built-in tools as the model sees them: names, descriptions, argument schemas.

Owns ``Builtin`` and the function definitions of ``get_time``, ``set_volume`` and ``mute``:
``appliance.config`` fills a ``[[tools]]`` entry without ``command`` from here, and
``appliance.tools`` runs them; the timer and alarm tools' are ``appliance.timer_tools``'
(registered here). Imports only the standard library and ``appliance.timer_tools``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from appliance.timer_tools import TIMER_DESCRIPTIONS, TIMER_PARAMETERS, TIMER_TOOLS


class Builtin(enum.StrEnum):
    """A tool the daemon answers itself (a ``[[tools]]`` entry with this name and no command)."""

    GET_TIME = "get_time"
    SET_VOLUME = "set_volume"
    MUTE = "mute"


BUILTIN_TOOLS: tuple[str, ...] = (*(b.value for b in Builtin), *TIMER_TOOLS)
"""Every built-in, the timer and alarm ones (``appliance.timer_tools``) included."""

BUILTIN_DESCRIPTIONS: Mapping[str, str] = {
    Builtin.GET_TIME: "Get the current local date, time and time zone of the device.",
    Builtin.SET_VOLUME: "Set the speaker volume, in percent.",
    Builtin.MUTE: "Turn the microphone privacy mute on (the device stops listening until the "
    "user presses the mute button) or off.",
    **TIMER_DESCRIPTIONS,
}

BUILTIN_PARAMETERS: Mapping[str, Mapping[str, Any]] = {
    Builtin.GET_TIME: {"type": "object", "properties": {}, "additionalProperties": False},
    Builtin.SET_VOLUME: {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "minimum": 0, "maximum": 100, "description": "0 to 100"}
        },
        "required": ["percent"],
        "additionalProperties": False,
    },
    Builtin.MUTE: {
        "type": "object",
        "properties": {"muted": {"type": "boolean", "description": "true to stop listening"}},
        "required": ["muted"],
        "additionalProperties": False,
    },
    **TIMER_PARAMETERS,
}
