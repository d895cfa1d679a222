"""The timer and alarm adapter: the saved file, the loop timer, and where a ring goes.

Owns ``timers.json`` in the state directory (``appliance.persist.state_dir``), written
atomically at every change, and the kernel's boot id (which tells a restart from a reboot,
``appliance.core.timers``). It waits for the core's next deadline on one ``DeadlineTimer``
and routes the core's actions: each chime to the daemon's cue player, the ringing LED on and
off, journal lines with a ``TIMER=`` field, and the status line's "next" text. It decides
nothing. Imports the standard library, ``appliance.core.timers``, ``appliance.deadline``
and ``appliance.persist``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.core.timers import (
    Chime,
    Save,
    StartRinging,
    StopReason,
    StopRinging,
    Timers,
    TimerSettings,
)
from appliance.deadline import DeadlineTimer
from appliance.persist import read_json, write_atomically

log = logging.getLogger(__name__)

FILE_NAME = "timers.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LATE_S = 5.0
"""A ring that starts this long after its time is announced as late."""


def boot_id() -> str:
    """This boot's id ("" when the kernel does not say)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


class AlarmClock:
    """The core ``Timers`` on the event loop; ``timers`` and ``clocks`` serve the tools."""

    def __init__(
        self,
        settings: TimerSettings,
        directory: Path,
        *,
        chime: Callable[[], object],
        show_ringing: Callable[[bool], None],
        status_changed: Callable[[], None],
    ) -> None:
        self.timers = Timers(settings)
        self.path = directory / FILE_NAME
        self._chime = chime
        self._show_ringing = show_ringing
        self._status_changed = status_changed
        self._boot = boot_id()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: DeadlineTimer | None = None
        self.rings: list[str] = []
        """Names of what rang, in order (for the journal's reader and for tests)."""

    def clocks(self) -> tuple[float, float]:
        """(monotonic, wall) now: the loop's clock is ``time.monotonic``."""
        mono = self._loop.time() if self._loop is not None else time.monotonic()
        return mono, time.time()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read what was saved and ring what fell due meanwhile."""
        self._loop = loop
        self._timer = DeadlineTimer(loop, self._tick)
        saved = self._read()
        if saved:
            count = self.timers.restore(saved, self._boot, *self.clocks())
            if count:
                log.info("%d timers and alarms restored from %s", count, self.path,
                         extra={"TIMER": "restore"})
        self._tick(self.clocks()[0])

    def reconfigure(self, settings: TimerSettings) -> None:
        """``[timers]`` reloaded: the next ring follows it."""
        self.timers.settings = settings

    def close(self) -> None:
        """Stop waiting (at shutdown; a ring in progress is saved and rings again at start)."""
        if self._timer is not None:
            self._timer.cancel()

    def stop_ringing(self, how: str) -> bool:
        """The user stopped a ring (``how``: button, wake word, speech); False if none rang."""
        if not self.timers.is_ringing:
            return False
        entry = self.timers.stop(*self.clocks())
        if entry is not None:
            log.info("%s stopped by %s", entry.name, how, extra={"TIMER": f"stop {entry.label}".strip()})
        self.changed()
        return True

    @property
    def is_ringing(self) -> bool:
        return self.timers.is_ringing

    def status(self) -> str:
        """"ringing: tea timer" / "next: tea timer at 16:04:30" / ""."""
        if self.timers.is_ringing:
            return f"ringing: {self.timers.ringing[0].name}"
        nxt = self.timers.next_due()
        if nxt is None:
            return ""
        entry, wall = nxt
        when = self.timers.local_time(wall)
        same_day = when.date() == self.timers.local_time(time.time()).date()
        return f"next: {entry.name} at {when:%H:%M:%S}" if same_day else (
            f"next: {entry.name} at {when:%a %H:%M}"
        )

    # --- the core's clock and actions ----------------------------------------------------

    def _tick(self, now_mono: float) -> None:
        self.timers.tick(now_mono, time.time())
        self.changed()

    def changed(self) -> None:
        """Route the core's actions and wait for its next deadline."""
        status_before = self.status()
        touched = False
        for action in self.timers.take():
            touched = True
            if isinstance(action, Save):
                self._save()
            elif isinstance(action, StartRinging):
                late = action.late_s >= LATE_S
                self.rings.append(action.entry.name)
                log.warning(
                    "%s ringing%s",
                    action.entry.name,
                    f", late by {action.late_s:.0f} s (it fell due while the appliance was down)"
                    if late
                    else "",
                    extra={"TIMER": f"ring {action.entry.label}".strip()},
                )
                self._show_ringing(True)
            elif isinstance(action, Chime):
                self._chime()
            elif isinstance(action, StopRinging):
                if action.reason is StopReason.TIMEOUT:
                    log.warning("%s rang unanswered; stopped", action.entry.name,
                                extra={"TIMER": f"missed {action.entry.label}".strip()})
                self._show_ringing(False)
        if self._timer is not None:
            self._timer.schedule(self.timers.next_deadline())
        if touched or self.status() != status_before:
            self._status_changed()

    def _save(self) -> None:
        try:
            write_atomically(self.path, json.dumps(self.timers.snapshot(self._boot)))
        except OSError as exc:
            log.warning("cannot save %s: %s; timers will not survive a restart", self.path, exc,
                        extra={"ERROR_CODE": "timers"})

    def _read(self) -> dict[str, Any]:
        return read_json(self.path)
