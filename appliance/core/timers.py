"""Timers and alarms, sans I/O: what is set, when it falls due, how it rings and stops.

The rules:

- A **timer** (a duration) runs on the monotonic clock: a wall-clock step (NTP at boot on a
  Pi without an RTC, a manual ``date``) neither shortens nor lengthens it. It is saved as its
  monotonic deadline, the boot it belongs to (``boot_id``) and its wall-clock deadline. After a
  restart in the same boot the monotonic deadline still holds and is used as it is; after a
  reboot (a power cut) the monotonic clock started again, so only the wall-clock deadline is
  left and the timer is anchored to wall time from then on, like an alarm: when the clock is
  behind at boot and NTP steps it forward later, the timer rings late, never early.
- An **alarm** (a local time, optionally a date or weekdays) is anchored to wall time. Its
  deadline is turned into a monotonic one through the offset between the two clocks, which
  every input with time refreshes; an offset that moved by more than ``STEP_S`` is a clock
  step, logged, and wall-anchored deadlines move with it. So that a step forward is noticed
  even while nothing else happens, ``next_deadline()`` is never more than ``WALL_RECHECK_S``
  away while anything is wall-anchored.
- A repeating alarm's next occurrence is computed when one falls due, strictly after that
  occurrence and after now: a clock stepped back after it rang does not ring it again.
- What falls due joins the ring queue (``ringing``, saved too: a power cut while it rings
  rings it again at start). The first in the queue rings: a ``Chime`` every
  ``ring_interval_s`` until it is stopped (``stop``), cancelled, or ``max_ring_s`` has passed;
  then, ``NEXT_RING_GAP_S`` later, the next one. Something that fell due while the daemon was
  down rings once at start with how late it is (``StartRinging.late_s``).

Inputs: ``restore``, ``add_timer``, ``add_alarm``, ``cancel``, ``stop``, ``tick`` (each with
``now_mono`` and ``now_wall``). Outputs: ``StartRinging`` / ``Chime`` / ``StopRinging`` /
``Save`` drained with ``take()``; ``snapshot()`` is what to save; ``next_deadline()`` the
monotonic time of the next ``tick``. Local time is the process's time zone unless ``tz`` is
given. No clock reads, timers or threads. Imports only the standard library.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

STEP_S = 2.0
"""The wall clock moved this much against the monotonic one: a step, not drift."""
WALL_RECHECK_S = 60.0
"""A wall-anchored deadline is re-checked at least this often (a step forward is noticed)."""
NEXT_RING_GAP_S = 1.0
"""Silence between one ring ending and the next one starting."""
MAX_DURATION_S = 7 * 86400
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FORMAT = 1
"""The version of ``snapshot()``'s layout."""


class TimerError(Exception):
    """A request that cannot be done; the message is for the user (through the model)."""


class Kind(enum.Enum):
    TIMER = "timer"
    ALARM = "alarm"


class Anchor(enum.Enum):
    """Which clock an entry's ``due`` is on."""

    MONO = "mono"
    WALL = "wall"


class StopReason(enum.Enum):
    STOPPED = "stopped"
    """The user stopped it (button, wake word, speech)."""
    TIMEOUT = "timeout"
    """It rang ``max_ring_s`` without anyone stopping it."""
    CANCELLED = "cancelled"
    """Cancelled by a tool call while it rang."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One timer, alarm, or one ring of either."""

    id: int
    kind: Kind
    label: str
    anchor: Anchor
    due: float
    """The deadline on ``anchor``'s clock (an alarm: its next occurrence)."""
    duration_s: float = 0.0
    """A timer's duration, as set."""
    hour: int = 0
    minute: int = 0
    date: str = ""
    """An alarm's ISO date, "" for the next such time (or ``repeat``)."""
    repeat: tuple[int, ...] = ()
    """An alarm's weekdays (0 is Monday); () rings once."""

    @property
    def name(self) -> str:
        """How it is spoken of: "tea timer", "alarm"."""
        return f"{self.label} {self.kind.value}" if self.label else self.kind.value


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """How alarms ring (``appliance.config`` maps ``[timers]``)."""

    max_ring_s: float = 60.0
    """A ring nobody stops ends after this long."""
    ring_interval_s: float = 2.5
    """A chime starts this often while ringing (the chime and a pause to speak in)."""


@dataclass(frozen=True, slots=True)
class StartRinging:
    entry: Entry
    late_s: float
    """How long after its time it starts ringing (more than a few seconds: it is late)."""


@dataclass(frozen=True, slots=True)
class Chime:
    """Play the alarm sound once."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class StopRinging:
    entry: Entry
    reason: StopReason


@dataclass(frozen=True, slots=True)
class Save:
    """What is set changed: write ``snapshot()``."""


TimerAction = StartRinging | Chime | StopRinging | Save


def spoken_duration(seconds: float) -> str:
    """``4 minutes``, ``1 hour 30 minutes``, ``45 seconds``."""
    s = max(0, round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    parts = [(h, "hour"), (m, "minute")] + ([(sec, "second")] if h == 0 else [])
    words = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return " ".join(words) or "0 seconds"


class Timers:
    """The timer and alarm rules (module docstring)."""

    def __init__(self, settings: TimerSettings | None = None, tz: dt.tzinfo | None = None) -> None:
        self.settings = settings or TimerSettings()
        self.tz = tz
        self.pending: list[Entry] = []
        self.ringing: list[Entry] = []
        """The ring queue; the first rings now (once ``ring_started`` is set)."""
        self._actions: list[TimerAction] = []
        self._next_id = 1
        self._offset: float | None = None  # wall minus mono, from the last input
        self._ring_started: float | None = None  # mono time the first in ``ringing`` started
        self._next_chime: float | None = None
        self._next_ring_at: float | None = None  # mono time the queue's head may start
        self._late: dict[int, float] = {}  # ring id -> seconds late when it fell due
        self._last_mono: float | None = None

    def take(self) -> list[TimerAction]:
        actions, self._actions = self._actions, []
        return actions

    # --- clocks --------------------------------------------------------------------------

    def _clock(self, now_mono: float, now_wall: float) -> None:
        offset = now_wall - now_mono
        if self._offset is not None and abs(offset - self._offset) > STEP_S:
            log.warning(
                "wall clock stepped by %+.0f s; alarms follow it, timers do not",
                offset - self._offset,
                extra={"TIMER": "clock-step"},
            )
        self._offset = offset
        self._last_mono = now_mono

    def _mono(self, entry: Entry) -> float:
        assert self._offset is not None
        return entry.due if entry.anchor is Anchor.MONO else entry.due - self._offset

    def _wall(self, entry: Entry) -> float:
        assert self._offset is not None
        return entry.due if entry.anchor is Anchor.WALL else entry.due + self._offset

    # --- what the user asks ---------------------------------------------------------------

    def add_timer(self, duration_s: float, label: str, now_mono: float, now_wall: float) -> Entry:
        self._clock(now_mono, now_wall)
        if not 0 < duration_s <= MAX_DURATION_S:
            raise TimerError(f"a timer lasts from 1 second to {MAX_DURATION_S // 86400} days")
        entry = Entry(
            self._id(), Kind.TIMER, label.strip(), Anchor.MONO, now_mono + duration_s, duration_s
        )
        self._add(entry, now_mono)
        return entry

    def add_alarm(
        self,
        hour: int,
        minute: int,
        label: str,
        now_mono: float,
        now_wall: float,
        *,
        date: dt.date | None = None,
        repeat: Iterable[int] = (),
    ) -> Entry:
        self._clock(now_mono, now_wall)
        days = tuple(sorted(set(repeat)))
        if date is not None and days:
            raise TimerError("an alarm has either a date or weekdays to repeat on, not both")
        entry = Entry(
            self._id(),
            Kind.ALARM,
            label.strip(),
            Anchor.WALL,
            0.0,
            hour=hour,
            minute=minute,
            date=date.isoformat() if date else "",
            repeat=days,
        )
        due = self.next_occurrence(entry, now_wall)
        if due is None:
            raise TimerError(f"{date} at {hour:02d}:{minute:02d} is in the past")
        entry = replace(entry, due=due)
        self._add(entry, now_mono)
        return entry

    def _add(self, entry: Entry, now_mono: float) -> None:
        self.pending.append(entry)
        self.pending.sort(key=self._mono)
        log.info("%s set, due in %s", entry.name, spoken_duration(self._mono(entry) - now_mono),
                 extra={"TIMER": f"set {entry.kind.value} {entry.label}".strip()})
        self._actions.append(Save())

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def cancel(
        self, kind: Kind, label: str, everything: bool, now_mono: float, now_wall: float
    ) -> list[Entry]:
        """Cancel ``kind`` entries named ``label`` (case-insensitive), all of them, or the only
        one; a ringing one stops. Raises ``TimerError`` saying what is set when it is unclear."""
        self._clock(now_mono, now_wall)
        mine = [e for e in (*self.ringing, *self.pending) if e.kind is kind]
        if everything:
            chosen = mine
        elif label.strip():
            chosen = [e for e in mine if e.label.lower() == label.strip().lower()]
            if not chosen:
                raise TimerError(f"no {kind.value} named {label.strip()!r} ({self._names(mine)})")
        elif len(mine) > 1:
            raise TimerError(f"several are set ({self._names(mine)}): say which, or all")
        else:
            chosen = mine
        if not chosen:
            raise TimerError(f"no {kind.value} is set")
        ids = {e.id for e in chosen}
        head = self.ringing[0] if self.ringing and self._ring_started is not None else None
        self.pending = [e for e in self.pending if e.id not in ids]
        self.ringing = [e for e in self.ringing if e.id not in ids]
        if head is not None and head.id in ids:
            self._end_ring(head, StopReason.CANCELLED, now_mono)
        for entry in chosen:
            log.info(
                "%s cancelled", entry.name,
                extra={"TIMER": f"cancel {entry.kind.value} {entry.label}".strip()},
            )
        self._actions.append(Save())
        return chosen

    def _names(self, entries: list[Entry]) -> str:
        names = [e.label or f"unnamed {e.kind.value}" for e in entries]
        return ", ".join(names) if names else "none is set"

    def stop(self, now_mono: float, now_wall: float) -> Entry | None:
        """The user stopped the ring (button, wake word, speech); None when nothing rang."""
        self._clock(now_mono, now_wall)
        if not self.ringing or self._ring_started is None:
            return None
        head = self.ringing.pop(0)
        self._end_ring(head, StopReason.STOPPED, now_mono)
        self._actions.append(Save())
        return head

    @property
    def is_ringing(self) -> bool:
        return bool(self.ringing) and self._ring_started is not None

    # --- what is set ------------------------------------------------------------------------

    def remaining(self, entry: Entry, now_mono: float) -> float:
        return max(0.0, self._mono(entry) - now_mono)

    def wall_time(self, entry: Entry) -> float:
        """An entry's deadline on the wall clock (epoch seconds)."""
        return self._wall(entry)

    def local_time(self, wall: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(wall, self.tz)

    def next_due(self) -> tuple[Entry, float] | None:
        """The next pending entry and its wall-clock time."""
        if not self.pending:
            return None
        entry = min(self.pending, key=self._mono)
        return entry, self._wall(entry)

    def next_occurrence(self, entry: Entry, after_wall: float) -> float | None:
        """An alarm's first wall time strictly after ``after_wall`` (None: a date passed)."""
        at = dt.time(entry.hour, entry.minute)
        if entry.date:
            when = self._stamp(dt.date.fromisoformat(entry.date), at)
            return when if when > after_wall else None
        day = self.local_time(after_wall).date()
        for _ in range(9):
            if not entry.repeat or day.weekday() in entry.repeat:
                when = self._stamp(day, at)
                if when > after_wall:
                    return when
            day += dt.timedelta(days=1)
        return None  # unreachable with a weekday in 0..6

    def _stamp(self, day: dt.date, at: dt.time) -> float:
        # Naive (tz None) is local time, as ``fromtimestamp(x, None)`` reads it.
        return dt.datetime.combine(day, at, tzinfo=self.tz).timestamp()

    # --- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Monotonic time of the next ``tick`` with something to do (None: nothing set)."""
        if self._offset is None:
            return None
        due: list[float] = []
        if self.pending:
            first = min(self._mono(e) for e in self.pending)
            due.append(first)
        if any(e.anchor is Anchor.WALL for e in self.pending) and self._last_mono is not None:
            due.append(self._last_mono + WALL_RECHECK_S)
        for t in (self._next_chime, self._next_ring_at):
            if t is not None:
                due.append(t)
        if self.ringing and self._ring_started is not None:
            due.append(self._ring_started + self.settings.max_ring_s)
        return min(due, default=None)

    def tick(self, now_mono: float, now_wall: float) -> None:
        """Do what is due: move what fell due to the ring queue, chime, end a ring."""
        self._clock(now_mono, now_wall)
        due = [e for e in self.pending if self._mono(e) <= now_mono]
        if due:
            self.pending = [e for e in self.pending if self._mono(e) > now_mono]
            for entry in sorted(due, key=self._mono):
                self._fall_due(entry, now_mono, now_wall)
            self._actions.append(Save())
        if self.is_ringing:
            assert self._ring_started is not None
            if now_mono >= self._ring_started + self.settings.max_ring_s:
                head = self.ringing.pop(0)
                self._end_ring(head, StopReason.TIMEOUT, now_mono)
                self._actions.append(Save())
            elif self._next_chime is not None and now_mono >= self._next_chime:
                self._chime(now_mono)
        if (
            self.ringing
            and self._ring_started is None
            and (self._next_ring_at is None or now_mono >= self._next_ring_at)
        ):
            self._start_ring(now_mono)

    def _fall_due(self, entry: Entry, now_mono: float, now_wall: float) -> None:
        ring = replace(entry, id=self._id(), anchor=Anchor.WALL, due=self._wall(entry))
        self._late[ring.id] = max(0.0, now_mono - self._mono(entry))
        self.ringing.append(ring)
        if entry.kind is Kind.ALARM and entry.repeat:
            after = max(self._wall(entry), now_wall)
            again = self.next_occurrence(entry, after)
            if again is not None:
                self.pending.append(replace(entry, due=again))
                self.pending.sort(key=self._mono)

    def _start_ring(self, now_mono: float) -> None:
        head = self.ringing[0]
        late = self._late.pop(head.id, 0.0)
        self._ring_started = now_mono
        self._next_ring_at = None
        self._actions.append(StartRinging(head, late))
        self._chime(now_mono)

    def _chime(self, now_mono: float) -> None:
        self._next_chime = now_mono + self.settings.ring_interval_s
        self._actions.append(Chime(self.ringing[0]))

    def _end_ring(self, head: Entry, reason: StopReason, now_mono: float) -> None:
        self._ring_started = None
        self._next_chime = None
        self._next_ring_at = now_mono + NEXT_RING_GAP_S if self.ringing else None
        self._actions.append(StopRinging(head, reason))

    # --- saved state ------------------------------------------------------------------------

    def snapshot(self, boot_id: str) -> dict[str, Any]:
        """The persistent form: every entry with its deadline on both clocks."""
        return {
            "format": FORMAT,
            "boot_id": boot_id,
            "pending": [self._saved(e) for e in self.pending],
            "ringing": [self._saved(e) for e in self.ringing],
        }

    def _saved(self, e: Entry) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": e.kind.value,
            "label": e.label,
            "due_wall": self._wall(e),
        }
        if e.anchor is Anchor.MONO:
            out["due_mono"] = e.due
        if e.kind is Kind.TIMER:
            out["duration_s"] = e.duration_s
        else:
            out.update(hour=e.hour, minute=e.minute, date=e.date, repeat=list(e.repeat))
        return out

    def restore(
        self, saved: Mapping[str, Any], boot_id: str, now_mono: float, now_wall: float
    ) -> int:
        """Take back a ``snapshot()`` (at start); returns how many entries it held.

        Same boot: a timer's monotonic deadline still holds. Another boot: its wall-clock one
        is all that is left. Anything that fell due meanwhile rings at the next ``tick``,
        late. Entries that do not parse are skipped (logged).
        """
        self._clock(now_mono, now_wall)
        same_boot = bool(boot_id) and saved.get("boot_id") == boot_id
        count = 0
        for where in ("ringing", "pending"):
            items = saved.get(where, [])
            for item in items if isinstance(items, list) else []:
                entry = self._parse(item, same_boot)
                if entry is None:
                    log.warning("ignoring a saved %s entry: %r", where, item)
                    continue
                count += 1
                if where == "ringing":
                    self.ringing.append(entry)
                    self._late[entry.id] = max(0.0, now_wall - entry.due)
                else:
                    self.pending.append(entry)
        self.pending.sort(key=self._mono)
        return count

    def _parse(self, item: Any, same_boot: bool) -> Entry | None:
        try:
            kind = Kind(item["kind"])
            label = str(item.get("label", ""))
            due_wall = float(item["due_wall"])
            if kind is Kind.TIMER:
                duration = float(item.get("duration_s", 0.0))
                if same_boot and "due_mono" in item:
                    return Entry(self._id(), kind, label, Anchor.MONO, float(item["due_mono"]), duration)
                return Entry(self._id(), kind, label, Anchor.WALL, due_wall, duration)
            repeat = tuple(int(d) for d in item.get("repeat", []) if 0 <= int(d) <= 6)
            return Entry(
                self._id(), kind, label, Anchor.WALL, due_wall,
                hour=int(item["hour"]) % 24, minute=int(item["minute"]) % 60,
                date=str(item.get("date", "")), repeat=repeat,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
