"""The appliance's part of the home: what the control socket (``appliance.control``) and
Home Assistant (``appliance.mqtt``) see of the daemon and may do to it.

Owns ``Facts`` (a daemon observer: the state, the last turn's figures and transcripts, with
listeners called on each change), ``Home`` (the ``ControlHost`` both act through: status,
announcements, mute, volume, routed to the daemon's own methods) and ``run_home``, which
runs the socket and the MQTT bridge beside the daemon until it stops. Imports the standard
library and ``appliance`` modules; aiomqtt only through ``appliance.mqtt``, when enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from appliance.control import ControlServer, NoDirectory
from appliance.core.actions import Action, StateChanged, Transcript, TurnTimings
from appliance.core.state import State
from appliance.errors import ApplianceError
from appliance.timer_tools import TimerTools

if TYPE_CHECKING:
    from appliance.alarms import AlarmClock
    from appliance.daemon import Daemon

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the home sees of the appliance at one moment."""

    state: State = State.STARTING
    detail: str = ""
    muted: bool = False
    volume: int | None = None
    last_latency_ms: int | None = None
    """The last turn's end of speech to first reply audio."""
    last_turn_id: int | None = None
    user_text: str = ""
    """The last user transcript ("" unless ``[logging] transcripts``)."""
    agent_text: str = ""
    """The last agent transcript ("" unless ``[logging] transcripts``)."""
    next_timer: NextTimer | None = None
    """The next timer or alarm due (None: none set)."""
    ringing: str = ""
    """What rings now ("tea timer"; "": nothing)."""


@dataclass(frozen=True, slots=True)
class NextTimer:
    name: str
    """"tea timer", "alarm"."""
    label: str
    kind: str
    """"timer" or "alarm"."""
    due: int
    """Its wall-clock time, whole seconds (a timer's wall time moves with the clocks' offset
    by a hair: rounding keeps it from being republished for that)."""


def timer_facts(alarms: AlarmClock) -> dict[str, Any]:
    """The ``Snapshot`` fields of the timers now (``Facts.update(**timer_facts(...))``)."""
    core = alarms.timers
    nxt = core.next_due()
    return {
        "next_timer": None if nxt is None else NextTimer(
            nxt[0].name, nxt[0].label, nxt[0].kind.value, round(nxt[1])
        ),
        "ringing": core.ringing[0].name if core.ringing else "",
    }


class Facts:
    """A daemon observer keeping a ``Snapshot``; each listener is called with the new one
    when it changes (on the event loop)."""

    def __init__(self, *, transcripts: bool) -> None:
        self.transcripts = transcripts
        self.now = Snapshot()
        self._listeners: list[Callable[[Snapshot], None]] = []

    def listen(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Snapshot], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def __call__(self, action: Action) -> None:
        if isinstance(action, StateChanged):
            self.update(state=action.state, detail=action.detail)
        elif isinstance(action, TurnTimings):
            self.update(last_latency_ms=action.latency_ms, last_turn_id=action.turn_id)
        elif isinstance(action, Transcript) and self.transcripts:
            if action.role == "user":
                self.update(user_text=action.text)
            else:
                self.update(agent_text=action.text)

    def update(self, **changes: Any) -> None:
        new = replace(self.now, **changes)
        if new != self.now:
            self.now = new
            for listener in list(self._listeners):
                listener(new)


class Home:
    """The ``ControlHost`` of the socket and of Home Assistant: the daemon's own methods."""

    def __init__(self, daemon: Daemon, facts: Facts) -> None:
        self._daemon = daemon
        self.facts = facts

    def status(self) -> dict[str, Any]:
        d = self._daemon
        s = self.facts.now
        return {
            "state": s.state.value,
            "detail": s.detail,
            "session_id": d.session.session_id,
            "turn": d.session.turn_id,
            "muted": d.levels.muted,
            "volume": d.levels.volume,
            "last_turn": (
                {"turn": s.last_turn_id, "latency_ms": s.last_latency_ms}
                if s.last_latency_ms is not None
                else None
            ),
            "announcements_waiting": d.announcements.core.queued,
            "timers": TimerTools(d.alarms).listing(),
        }

    def levels(self) -> tuple[bool, int | None]:
        """The mute and the volume as they are now (set here, by a button or by voice)."""
        return self._daemon.levels.muted, self._daemon.levels.volume

    def announce(self, text: str, *, ask: bool) -> str:
        return self._daemon.announce(text, ask=ask).value

    def set_muted(self, muted: bool) -> None:
        self._daemon.set_muted(muted)
        self.facts.update(muted=muted)

    def stop_ringing(self, how: str) -> bool:
        """Stop a ringing timer or alarm, as the talk button does; False if none rang."""
        return self._daemon.alarms.stop_ringing(how)

    def set_volume(self, percent: int) -> int:
        volume = self._daemon.levels.set_volume(percent)
        self.facts.update(volume=volume)
        return volume


async def run_home(daemon: Daemon, facts: Facts) -> None:
    """Serve the control socket and the MQTT bridge (as configured) until cancelled.

    A socket that cannot be bound is logged and the daemon runs on without it: the voice
    path never depends on the home's parts.
    """
    home = Home(daemon, facts)
    facts.update(
        muted=daemon.levels.muted, volume=daemon.levels.volume, **timer_facts(daemon.alarms)
    )
    server: ControlServer | None = None
    if daemon.config.control.enabled:
        server = ControlServer(daemon.config.control, home)
        try:
            await server.start()
        except NoDirectory as exc:
            log.info("%s", exc)
            server = None
        except (ApplianceError, OSError) as exc:  # the voice path does not stop for it
            log.error("control socket not available: %s", exc, extra={"ERROR_CODE": "config"})
            server = None
    try:
        if daemon.config.mqtt.enabled:
            try:
                from appliance.mqtt import run_bridge

                await run_bridge(daemon.config, home)
            except Exception:
                # A bug in the bridge must not take the voice path down with the task group.
                log.exception("mqtt: the Home Assistant bridge stopped")
        await asyncio.Event().wait()  # until cancelled
    finally:
        if server is not None:
            await server.close()
