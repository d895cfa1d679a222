"""The timer and alarm built-in tools: their schemas for the model, and their answers.

Owns ``TIMER_TOOLS`` (names, descriptions, parameter schemas, registered as built-ins by
``appliance.config``) and ``TimerTools``, which turns one validated call into core calls on
``appliance.core.timers.Timers`` and a JSON answer the model can speak from ("tea timer set
for 4 minutes"). A request that cannot be done raises ``TimerError`` with the reason.
Imports the standard library and ``appliance.core.timers`` only (``appliance.config``
imports this module).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Protocol

from appliance.core.timers import (
    WEEKDAYS,
    Entry,
    Kind,
    TimerError,
    Timers,
    spoken_duration,
)

_LABEL = {
    "type": "string",
    "maxLength": 40,
    "description": "What it is for, in a word or two (\"tea\", \"pasta\"); optional.",
}
_WHICH = {
    "label": {"type": "string", "maxLength": 40, "description": "The label it was set with."},
    "all": {"type": "boolean", "description": "true: cancel every one."},
}
_REPEAT_WORDS = ("every_day", "weekdays", "weekends")

TIMER_DESCRIPTIONS = {
    "set_timer": "Start a countdown timer on the device; it rings when the time is up, even "
    "without a network. Give the duration in seconds.",
    "set_alarm": "Set an alarm at a local time (24-hour HH:MM) on the device: the next such "
    "time, or on a date, or repeating on weekdays. It rings even without a network.",
    "cancel_timer": "Cancel a timer (or stop one ringing) by its label, or all of them.",
    "cancel_alarm": "Cancel an alarm (or stop one ringing) by its label, or all of them.",
    "list_timers": "List the timers and alarms that are set, with the time left.",
}
TIMER_PARAMETERS: dict[str, dict[str, Any]] = {
    "set_timer": {
        "type": "object",
        "properties": {
            "seconds": {
                "type": "integer",
                "minimum": 1,
                "maximum": 7 * 86400,
                "description": "How long, in seconds (4 minutes is 240).",
            },
            "label": _LABEL,
        },
        "required": ["seconds"],
        "additionalProperties": False,
    },
    "set_alarm": {
        "type": "object",
        "properties": {
            "time": {
                "type": "string",
                "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
                "description": "Local time, 24-hour HH:MM.",
            },
            "date": {
                "type": "string",
                "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                "description": "YYYY-MM-DD for one particular day; omit for the next such time.",
            },
            "repeat": {
                "type": "array",
                "items": {"type": "string", "enum": [*WEEKDAYS, *_REPEAT_WORDS]},
                "maxItems": 7,
                "description": "Weekdays to ring on every week; omit to ring once.",
            },
            "label": _LABEL,
        },
        "required": ["time"],
        "additionalProperties": False,
    },
    "cancel_timer": {"type": "object", "properties": _WHICH, "additionalProperties": False},
    "cancel_alarm": {"type": "object", "properties": _WHICH, "additionalProperties": False},
    "list_timers": {"type": "object", "properties": {}, "additionalProperties": False},
}
TIMER_TOOLS = tuple(TIMER_PARAMETERS)


class TimerHost(Protocol):
    """What the tools act on (``appliance.alarms.AlarmClock``), on the loop thread."""

    @property
    def timers(self) -> Timers: ...

    def clocks(self) -> tuple[float, float]:
        """(monotonic, wall) now."""
        ...

    def changed(self) -> None:
        """Route the core's actions (save, reschedule, status)."""
        ...


class TimerTools:
    def __init__(self, host: TimerHost) -> None:
        self._host = host

    def call(self, name: str, args: dict[str, Any]) -> str:
        """Answer one validated call; raises ``TimerError`` with a reason for the model."""
        try:
            return json.dumps(self._call(name, args))
        finally:
            self._host.changed()

    def _call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        core = self._host.timers
        mono, wall = self._host.clocks()
        label = str(args.get("label", ""))
        if name == "set_timer":
            entry = core.add_timer(float(args["seconds"]), label, mono, wall)
            length = spoken_duration(entry.duration_s)
            return {
                "ok": True,
                "set": f"{entry.name} set for {length}",
                "rings_at": self._clock_text(wall + entry.duration_s),
            }
        if name == "set_alarm":
            return self._set_alarm(core, args, label, mono, wall)
        if name in ("cancel_timer", "cancel_alarm"):
            kind = Kind.TIMER if name == "cancel_timer" else Kind.ALARM
            gone = core.cancel(kind, label, bool(args.get("all", False)), mono, wall)
            return {"ok": True, "cancelled": [e.name for e in gone]}
        if name == "list_timers":
            return self.listing()
        raise TimerError(f"unknown timer tool {name!r}")

    def _set_alarm(
        self, core: Timers, args: dict[str, Any], label: str, mono: float, wall: float
    ) -> dict[str, Any]:
        hour, minute = (int(x) for x in str(args["time"]).split(":"))
        date = None
        if "date" in args:
            try:
                date = dt.date.fromisoformat(str(args["date"]))
            except ValueError:
                raise TimerError(f"{args['date']!r} is not a date") from None
        days: set[int] = set()
        for word in args.get("repeat", []):
            if word == "every_day":
                days.update(range(7))
            elif word == "weekdays":
                days.update(range(5))
            elif word == "weekends":
                days.update((5, 6))
            else:
                days.add(WEEKDAYS.index(word))
        entry = core.add_alarm(hour, minute, label, mono, wall, date=date, repeat=days)
        return {
            "ok": True,
            "set": f"{entry.name} set for {self._when(core, entry)}",
            "in": spoken_duration(core.remaining(entry, mono)),
        }

    def listing(self) -> dict[str, Any]:
        """What ``list_timers`` answers (also shown by ``appliance status``)."""
        core = self._host.timers
        mono, _ = self._host.clocks()
        timers = [
            {"label": e.label, "remaining": spoken_duration(core.remaining(e, mono))}
            for e in core.pending
            if e.kind is Kind.TIMER
        ]
        alarms = [
            {"label": e.label, "rings": self._when(core, e), "repeat": [WEEKDAYS[d] for d in e.repeat]}
            for e in core.pending
            if e.kind is Kind.ALARM
        ]
        ringing = [e.name for e in core.ringing]
        return {"timers": timers, "alarms": alarms, "ringing": ringing}

    def _when(self, core: Timers, entry: Entry) -> str:
        """"07:30 on Monday 8 December" (the next occurrence, local time)."""
        wall = core.wall_time(entry)
        when = core.local_time(wall)
        return f"{when:%H:%M} on {when:%A} {when.day} {when:%B}"

    def _clock_text(self, wall: float) -> str:
        return f"{self._host.timers.local_time(wall):%H:%M:%S}"
