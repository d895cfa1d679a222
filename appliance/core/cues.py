"""Earcon arbitration, sans I/O: when a cue plays, which player events are its own, and how
long the front end's gate stays held for it.

The rules:

- A cue goes through the same player as the agent's replies, as an item with a reserved id
  (``earcon:<name>:<n>``). Every player event is routed here first; a cue's own events are
  swallowed, so the session never sees them and its state is unaffected.
- A cue never interrupts the agent: while a reply is queued or playing it is skipped (not
  mixed: a cue under the agent's voice would be lost anyway, and mixing would need a second
  stream position in the player's ledger).
- Nothing of a cue goes upstream. From the moment it is queued the gate is held (``Hold``:
  the front end's ``earcon`` flag, so the VAD cannot open on it and a push-to-talk turn
  streams only after it) until the player reports it played out plus ``ECHO_TAIL_S``, or,
  if the player never reports (a device in outage discards what is queued), the cue's own
  length plus ``FALLBACK_S``. The release names that moment: it holds for the audio
  captured before it, however late the capture thread judges that audio.
- The player has one end-of-stream mark, so its idle belongs to whoever set the mark last:
  after a cue's ``EndOfStream`` the idle is the cue's (swallowed), after the session's
  ``EndOfReply`` it is the reply's (passed on).
- "error" plays once the appliance has been offline or in error for ``ERROR_CUE_DELAY_S``,
  so a quick deliberate reconnect or a renewal stays silent; working again re-arms it.

Inputs: ``request(name, now)``; the session's reply (``reply_audio``, ``reply_ended``,
``reply_stopped``); the player's events (``started``, ``stopped``, ``idle``), each answered
with a ``Route``; ``state_changed(state, now)``; and ``tick(now)`` at ``next_deadline()``.
Outputs: ``Hold`` / ``Enqueue`` / ``EndOfStream`` drained with ``take()``. No timers, threads
or clock reads. Imports: the standard library and ``appliance.core.state``.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.core.state import State

log = logging.getLogger(__name__)

RATE = 24000
"""Cues are PCM16 mono at the reply rate, so the player treats them as replies."""
ITEM_PREFIX = "earcon:"
"""Reserved item id prefix (server item ids are ``item_...``)."""
ECHO_TAIL_S = 0.15
"""The gate stays held this long after the player reports the cue played out (the room's
echo and the capture path's buffering)."""
FALLBACK_S = 1.0
"""Beyond the cue's own length: the hold ends even if the player never reports."""
ERROR_CUE_DELAY_S = 3.0
"""Offline or in error this long before the "error" cue plays."""
WORKING = frozenset(
    {State.READY, State.LISTENING, State.THINKING, State.SPEAKING, State.MUTED}
)
PLAYED_KEPT = 32
"""How many of the last cues ``Cues.played`` remembers (for the log and for tests)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold the front end's gate (``on``) or let it go, for the audio captured from ``at``
    on (the loop's clock; None: now). A release names its due time: a tick that comes
    late must not let the gate go for the cue's last audio."""

    on: bool
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Queue ``pcm`` (PCM16 mono at ``RATE``) on the player as item ``item_id``."""

    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """Set the player's end-of-stream mark (its next idle is the cue's)."""


CueAction = Hold | Enqueue | EndOfStream


class Route(enum.Enum):
    """Where one player event goes."""

    PASS = "pass"
    """The session's: pass it on as it is."""
    SWALLOW = "swallow"
    """A cue's own: the session never sees it."""
    PASS_WITHOUT_ITEM = "pass_without_item"
    """A stop that caught a cue playing: every stop is the session's, so it gets its
    answer, but as "no item was playing, 0 ms heard" (a cue is not its item)."""


def is_earcon(item_id: str | None) -> bool:
    return item_id is not None and item_id.startswith(ITEM_PREFIX)


class Cues:
    """The earcon rules (module docstring); ``sounds`` (name -> PCM) may be replaced."""

    def __init__(self, sounds: Mapping[str, bytes]) -> None:
        self.sounds = sounds
        self.played: deque[str] = deque(maxlen=PLAYED_KEPT)
        self._actions: list[CueAction] = []
        self._count = 0
        self._reply = False  # the session's audio is queued or playing
        self._eos_is_ours = False  # the player's end-of-stream mark was set by a cue
        self._in_flight = 0  # cues queued and not yet reported played out or dropped
        self.held = False
        self._release_at: float | None = None
        self._error_at: float | None = None
        self._error_armed = True

    def take(self) -> list[CueAction]:
        """Drain the actions produced since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    # --- cues -------------------------------------------------------------------------------

    def request(self, name: str, now: float) -> bool:
        """Queue cue ``name``; False when it is silent, unknown or skipped (a reply plays)."""
        pcm = self.sounds.get(name)
        if pcm is None:
            return False
        if self._reply:
            log.debug("earcon %s skipped: the agent is speaking", name)
            return False
        self._count += 1
        self._in_flight += 1
        self._hold_until(now + len(pcm) / 2 / RATE + FALLBACK_S)
        self._actions.append(Enqueue(f"{ITEM_PREFIX}{name}:{self._count}", pcm))
        self._actions.append(EndOfStream())
        self._eos_is_ours = True
        self.played.append(name)
        log.debug("earcon %s", name)
        return True

    # --- what the session does to the player (tell before doing it) ------------------------

    def reply_audio(self) -> None:
        """A ``Play`` of the session's audio."""
        self._reply = True

    def reply_ended(self) -> None:
        """The session's ``EndOfReply``: the next idle is the reply's."""
        self._eos_is_ours = False

    def reply_stopped(self) -> None:
        """The session's ``StopPlayback``: the player drops everything queued, cues too."""
        self._reply = False

    # --- the player's events ----------------------------------------------------------------

    def started(self, item_id: str | None) -> Route:
        return Route.SWALLOW if is_earcon(item_id) else Route.PASS

    def stopped(self, item_id: str | None, now: float) -> Route:
        self._reply = False
        self._played_out(now)  # a stop drops every queued cue with the reply
        return Route.PASS_WITHOUT_ITEM if is_earcon(item_id) else Route.PASS

    def idle(self, now: float) -> Route:
        self._played_out(now)
        if self._eos_is_ours:
            return Route.SWALLOW
        self._reply = False
        return Route.PASS

    def _played_out(self, now: float) -> None:
        if self._in_flight:
            self._in_flight = 0
            self._hold_until(now + ECHO_TAIL_S)

    def _hold_until(self, release_at: float) -> None:
        self._release_at = release_at
        if not self.held:
            self.held = True
            self._actions.append(Hold(True))

    # --- the error cue and time -------------------------------------------------------------

    def state_changed(self, state: State, now: float) -> None:
        """Arm the "error" cue when the appliance goes offline or into error; working
        again cancels and re-arms it."""
        if state in WORKING:
            self._error_armed = True
            self._error_at = None
        elif (
            state in (State.OFFLINE, State.ERROR)
            and self._error_armed
            and self._error_at is None
        ):
            self._error_at = now + ERROR_CUE_DELAY_S

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (None: nothing until another input)."""
        due = [t for t in (self._release_at, self._error_at) if t is not None]
        return min(due, default=None)

    def tick(self, now: float) -> None:
        """Do what is due at ``now``: let the gate go, play the "error" cue."""
        if self._release_at is not None and now >= self._release_at:
            self._actions.append(Hold(False, self._release_at))
            self._release_at = None
            self.held = False
        if self._error_at is not None and now >= self._error_at:
            self._error_at = None
            self._error_armed = False
            self.request("error", now)
