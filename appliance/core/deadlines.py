"""The session's clock-driven decisions: the response deadline, renewal at a quiet moment,
a fresh conversation after an idle period, and re-sending a refused session.

Functions of the ``Session`` and ``now`` (time is an input; nothing here reads a clock); the
session's ``tick`` and ``next_tick`` call them. Imports the standard library and
``appliance.core``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.core.actions import Reconnect

if TYPE_CHECKING:
    from appliance.core.session import Session

log = logging.getLogger("appliance.core.session")
QUIET_S = 3.0  # renewal and a fresh conversation wait this long after the last activity


def tick(s: Session, now: float) -> None:
    """Checks the response deadline, renewal and idle; due at ``next_tick``."""
    retry = s._terms.retry_at
    if s._connected and retry is not None and now >= retry:
        s._terms.retry_at = None
        log.info("sending the refused session again")
        s.session_update()
    if not s._connected or not s._configured:
        return
    deadline = response_deadline(s)
    if deadline is not None and now >= deadline and not s._dead_reported:
        s._dead_reported = True
        waited = now - max(s._last_event_at, s._reply.expected_since or 0.0)
        log.warning(
            "no server event for %.0f s while a response was expected",
            waited,
            extra={"TURN_ID": s.turn_id},
        )
        s._actions.append(
            Reconnect(f"no server event for {waited:.0f} s while a response was expected")
        )
        return
    if not quiet(s, now):
        return
    started = s._session_started_at
    if started is not None and now - started >= s._options.renew_after_s:
        if not s._renewal_requested:
            s._renewal_requested = True
            log.info(
                "renewing the session after %.0f min, at a quiet moment",
                (now - started) / 60,
                extra={"SESSION_ID": s.session_id},
            )
            s._actions.append(Reconnect("session renewal", immediate=True))
        return
    idle = s._options.fresh_after_idle_s
    if idle and s._conversation and now - s._last_activity >= idle:
        s._delete(s._conversation.fresh(now - s._last_activity, s.session_id))

def response_deadline(s: Session) -> float | None:
    """When the connection counts as dead if no server event arrives (None: not waiting)."""
    expected = s._reply.expected_since
    if expected is None and not s._reply.exists:
        return None
    since = max(s._last_event_at, expected or 0.0)
    return since + s._options.response_timeout_s

def next_tick(s: Session) -> float | None:
    """When ``tick`` could next act if nothing else happens first (None: not before
    another event, after which this is asked again): the response deadline, or the
    quiet moment when a renewal or a fresh conversation is due. The daemon sleeps until
    then rather than waking on a clock while the appliance waits for its user."""
    if s._connected and s._terms.retry_at is not None:
        return s._terms.retry_at  # the refused session is sent again then
    if not s._connected or not s._configured:
        return None
    deadline = response_deadline(s)
    if deadline is not None:  # a response is awaited: the rest waits for a quiet moment
        return None if s._dead_reported else deadline
    if busy(s) or s._renewal_requested:
        return None
    quiet_at = s._last_activity + QUIET_S
    due = []
    if s._session_started_at is not None:
        due.append(max(quiet_at, s._session_started_at + s._options.renew_after_s))
    idle = s._options.fresh_after_idle_s
    if idle and s._conversation:
        due.append(max(quiet_at, s._last_activity + idle))
    return min(due, default=None)

def quiet(s: Session, now: float) -> bool:
    """Nothing is going on and nothing has for a moment: no turn, reply, call or audio."""
    return not busy(s) and now - s._last_activity >= QUIET_S

def busy(s: Session) -> bool:
    """A turn, reply, tool call or wake-word window is under way."""
    return bool(
        s._user_speaking
        or s._awake  # a wake-word window is open: the user is about to speak
        or s._playing
        or s._awaiting_reply
        or s._reply.exists
        or s._reply.pending_create
        or s._calls_running
        or s._tools_need_response
        or s._reply.expected_since is not None
    )
