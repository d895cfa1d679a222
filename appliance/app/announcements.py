"""Announcements in the running daemon: the queue core (``appliance.core.announce``) wired
to the session, the cues and one deadline timer.

Owns ``Announcements``: ``request`` (from the control socket and Home Assistant), ``step``
(the router calls it after each dispatch: the session may have become quiet, or gone), the
expiry timer, and whether a reply that just ended was a "say" (no wake-mode follow-up
window after it: an announcement is not a question). Everything runs on the loop thread.

Imports: the standard library, ``appliance.config``, ``appliance.core``,
``appliance.deadline``. The router knows it only as its ``AfterDispatch``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.config import Config
from appliance.core.announce import (
    Announcer,
    Availability,
    Cue,
    Dropped,
    Kind,
    Outcome,
    Speak,
    quiet,
    speak,
)
from appliance.core.session import Session
from appliance.core.state import State
from appliance.deadline import DeadlineTimer

log = logging.getLogger(__name__)


class Announcements:
    """``cue(name)`` plays an earcon and ``dispatch()`` routes the session's actions (the
    router's); ``start`` before the first request."""

    def __init__(
        self,
        config: Config,
        session: Session,
        *,
        cue: Callable[[str], bool],
        dispatch: Callable[[], None],
    ) -> None:
        c = config.control
        self.core = Announcer(c.announce_earcon, c.announce_wait_s)
        self._session = session
        self._cue = cue
        self._dispatch = dispatch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: DeadlineTimer | None = None
        self._saying = False  # a "say" is under way

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = DeadlineTimer(loop, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def request(self, text: str, *, ask: bool) -> Outcome:
        """Speak ``text`` at the next quiet moment (``ask``: a prompt the agent answers);
        the caller dispatches afterwards (``step`` routes what this produced)."""
        assert self._loop is not None
        kind = Kind.ASK if ask else Kind.SAY
        outcome = self.core.request(text, kind, self._loop.time(), self._availability())
        log.info("%s %s: %s", kind.value, outcome.value, text)
        return outcome

    def _availability(self) -> Availability:
        if self._session.state in (State.OFFLINE, State.ERROR):
            return Availability.UNAVAILABLE
        return Availability.QUIET if quiet(self._session) else Availability.BUSY

    def step(self) -> bool:
        """After a dispatch: route the queue's actions; True when the session was asked to
        speak (its actions want another dispatch)."""
        if self._loop is None or not self.core.pending:
            return False  # the usual case, on every dispatch: one attribute test
        now = self._loop.time()
        self.core.update(self._availability(), now)
        spoke = False
        for action in self.core.take():
            if isinstance(action, Cue):
                self._cue(action.name)
            elif isinstance(action, Speak):
                item = action.announcement
                speak(self._session, item.text, now, ask=item.kind is Kind.ASK)
                self._saying = item.kind is Kind.SAY
                spoke = True
            elif isinstance(action, Dropped):
                a = action.announcement
                log.warning(
                    "%s not spoken (%s): %s", a.kind.value, action.reason, a.text,
                    extra={"ERROR_CODE": "announcement"},
                )
        if self._timer is not None:
            self._timer.schedule(self.core.next_deadline())
        return spoke

    def allows_follow_up(self, state: State) -> bool:
        """False for the end of a "say" (the router asks at each state change)."""
        if self._saying and state not in (State.THINKING, State.SPEAKING):
            self._saying = False
            return False
        return True

    def _tick(self, now: float) -> None:
        self.core.tick(now)
        self._dispatch()  # which steps

    def reload(self, old: Config, new: Config) -> None:
        """The announcement keys apply at once; the socket and the broker at a restart
        (a reload must not drop Home Assistant or a CLI in the middle of a request)."""
        c, o = new.control, old.control
        self.core.earcon, self.core.max_wait_s = c.announce_earcon, c.announce_wait_s
        if (c.enabled, c.socket, c.group) != (o.enabled, o.socket, o.group) or new.mqtt != old.mqtt:
            log.warning("reload: the [control] socket keys and [mqtt] apply at the next restart")
