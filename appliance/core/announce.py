"""Announcements, sans I/O: when a text given from outside (the control socket, Home
Assistant) is spoken, and what happens to one that cannot be.

The rules:

- One at a time, and only at a quiet moment: never while the user speaks, a reply plays,
  a response or a tool call is under way, or a wake-word window is open (``Availability``
  is the daemon's reading of the session; the queue never interrupts anybody).
- Each starts with the configured earcon, then ``Speak`` (the session asks the service for
  it: a ``say`` as an out-of-band response that stays out of the conversation, an ``ask``
  as a user text item and a response, which the user may answer by voice).
- Nothing is lost silently: with no session to speak through (offline, or a device in
  error) the earcon plays and ``Dropped`` names the text and why, for the log. So does an
  announcement that waited longer than ``max_wait_s`` for a quiet moment, or one past
  ``MAX_QUEUED``.
- While connecting (start-up, a renewal, a reconnect under way) announcements wait.

Inputs: ``request(text, kind, now, availability)``, ``update(availability, now)`` after each
change the daemon routes, and ``tick(now)`` at ``next_deadline()``. Outputs: ``Cue`` /
``Speak`` / ``Dropped`` drained with ``take()``. No timers, threads or clock reads.

The session's side, ``quiet(session)`` and ``speak(session, ...)``, is here too, as
``appliance.core.server_events`` acts on the session: functions that use its internals, so
the session module stays the state machine. Imports the standard library and
``appliance.core``.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.core.protocol import CreateResponse, UserText

if TYPE_CHECKING:
    from appliance.core.session import Session

log = logging.getLogger(__name__)

MAX_QUEUED = 8
"""Announcements waiting at once; one more is dropped (and logged)."""


class Kind(enum.Enum):
    SAY = "say"
    """Spoken as given, outside the conversation."""
    ASK = "ask"
    """A prompt in the conversation: the agent answers it and the user may reply."""


class Availability(enum.Enum):
    """What the session can do for an announcement now."""

    QUIET = "quiet"
    """Connected and nothing under way: it may speak now."""
    BUSY = "busy"
    """A turn, reply, call or connection set-up is under way: wait."""
    UNAVAILABLE = "unavailable"
    """Offline or a device in error: it cannot be spoken."""


class Outcome(enum.Enum):
    """What became of a request, for whoever asked."""

    SPEAKING = "speaking"
    QUEUED = "queued"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Announcement:
    text: str
    kind: Kind
    queued_at: float


@dataclass(frozen=True, slots=True)
class Cue:
    """Play earcon ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Speak:
    """Have the session speak ``announcement`` now."""

    announcement: Announcement


@dataclass(frozen=True, slots=True)
class Dropped:
    """``announcement`` will not be spoken, because of ``reason`` (log it)."""

    announcement: Announcement
    reason: str


AnnounceAction = Cue | Speak | Dropped


class Announcer:
    """The announcement queue (module docstring)."""

    def __init__(self, earcon: str = "", max_wait_s: float = 120.0) -> None:
        self.earcon = earcon
        """The earcon before each announcement ("" = none)."""
        self.max_wait_s = max_wait_s
        self._queue: deque[Announcement] = deque()
        self._actions: list[AnnounceAction] = []

    def take(self) -> list[AnnounceAction]:
        """Drain the actions produced since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def pending(self) -> bool:
        """Something waits or is to be taken (else ``update`` has nothing to do)."""
        return bool(self._queue or self._actions)

    def request(self, text: str, kind: Kind, now: float, availability: Availability) -> Outcome:
        """An announcement: spoken now, queued, or dropped (with the earcon and a reason)."""
        item = Announcement(text, kind, now)
        if availability is Availability.UNAVAILABLE:
            self._drop(item, "no session to speak through")
            return Outcome.DROPPED
        if len(self._queue) >= MAX_QUEUED:
            self._drop(item, f"{MAX_QUEUED} announcements are already waiting")
            return Outcome.DROPPED
        self._queue.append(item)
        self.update(availability, now)
        return Outcome.QUEUED if self._queue and self._queue[-1] is item else Outcome.SPEAKING

    def update(self, availability: Availability, now: float) -> None:
        """The session's availability changed (or may have): speak the next, or drop all."""
        self.tick(now)
        if not self._queue:
            return
        if availability is Availability.UNAVAILABLE:
            self._cue()  # once for all of them
            while self._queue:
                self._actions.append(Dropped(self._queue.popleft(), "the connection was lost"))
        elif availability is Availability.QUIET:
            # One at a time: after this the session is busy until its reply has played.
            item = self._queue.popleft()
            self._cue()
            self._actions.append(Speak(item))

    def next_deadline(self) -> float | None:
        """When the oldest waiting announcement expires (None: nothing waits)."""
        return self._queue[0].queued_at + self.max_wait_s if self._queue else None

    def tick(self, now: float) -> None:
        """Drop what waited too long for a quiet moment."""
        while self._queue and now - self._queue[0].queued_at >= self.max_wait_s:
            item = self._queue.popleft()
            self._drop(item, f"no quiet moment in {self.max_wait_s:.0f} s")

    def _drop(self, item: Announcement, reason: str) -> None:
        self._cue()
        self._actions.append(Dropped(item, reason))

    def _cue(self) -> None:
        if self.earcon:
            self._actions.append(Cue(self.earcon))


# --- the session's side --------------------------------------------------------------------

SAY_PREFIX = "Say exactly: "


def quiet(s: Session) -> bool:
    """Configured, and no turn, reply, call or wake-word window under way."""
    return s._configured and not s._busy()


def speak(s: Session, text: str, now: float, *, ask: bool = False) -> None:
    """Have the session speak ``text`` now (call when ``quiet``): an out-of-band response in
    the session's voice that stays out of the conversation (the model is not to call tools
    for it); ``ask``: a user text item and a response, answered within the conversation
    (as the greeting is)."""
    options: dict[str, Any] | None = None
    if ask:
        s._send(UserText(text, event_id=s._next_id()))
    else:
        options = {
            "conversation": "none",
            "instructions": SAY_PREFIX + text,
            "tool_choice": "none",
            "metadata": {"appliance": "announcement"},
        }
    if s._reply.request(now):
        s._send(CreateResponse(options, event_id=s._next_id()))
    s._awaiting_reply = True
    s._last_activity = now
    s._refresh()
