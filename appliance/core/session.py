"""The realtime session state machine, sans I/O.

Inputs: typed server events (``ServerEvent``, or ``Malformed`` for a frame a transport could
not use), local gate edges and audio, playback progress, mute, connection events, tool
results and a periodic ``tick``, each with ``now`` (seconds, any monotonic origin) where
timing matters. Outputs: actions drained with ``take()`` (``appliance.core.actions``):
client events to send, audio to play, playback to stop, state changes, transcripts, turn
timings, tool calls to run and reconnects to make. No sockets, threads, sleeps, clock reads
or wire formats here.

Besides turns and barge-in it owns the session's life: the greeting, function calls (all
answered before one ``response.create``, or by the service itself when it says so), the
response-expected deadline, renewal at a quiet moment before the service's duration cap, and
the conversation policy (a fresh conversation after an idle period, at most N turns kept:
``appliance.core.conversation``). The response lifecycle is ``appliance.core.reply``; what
each server event does is ``appliance.core.server_events``; what the service confirmed and
how the session adapts to it (one answer per turn) is ``appliance.core.confirmed``; the
clock-driven decisions are ``appliance.core.deadlines``. Each client event gets an ``event_id`` ("evt_<n>"; appends
excepted: the hot path, and the server names no append in its errors that the session could
act on) and the last ``RECENT_EVENTS`` are kept for ``sent_event``.

The state (``State``) is derived from a few facts in one place, ``_refresh()``, and each
change is emitted and logged once. Structured log fields use journald names in ``extra``.
Imports the standard library, ``appliance.core`` and ``appliance.errors``.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.core import deadlines, server_events
from appliance.core.actions import (
    Action,
    CallTool,
    EndOfReply,
    Play,
    Reconnect,
    Send,
    StateChanged,
    StopPlayback,
    TooShort,
    Transcript,
    TurnTimings,
)
from appliance.core.confirmed import Habits, Terms
from appliance.core.conversation import Conversation
from appliance.core.protocol import (
    AppendAudio,
    CancelResponse,
    ClearInput,
    ClientEvent,
    Commit,
    CreateResponse,
    DeleteItem,
    FunctionCallOutput,
    Incoming,
    Malformed,
    SessionUpdate,
    Truncate,
    check_pcm,
)
from appliance.core.reply import Reply
from appliance.core.server_events import BYTES_PER_MS, HANDLERS, IGNORED, config_key_for
from appliance.core.settings import BargeIn, SessionOptions
from appliance.core.state import State
from appliance.errors import ProtocolError

__all__ = [  # the actions, re-exported: the daemon, GPIO and tests import them from here
    "HOLD_BYTES", "IGNORED", "Action", "CallTool", "EndOfReply", "Play", "Reconnect", "Send",
    "Session", "StateChanged", "StopPlayback", "TooShort", "Transcript", "TurnTimings",
    "config_key_for",
]

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # the API rejects a commit of less audio
# A turn that begins while there is no configured session (start-up, a reconnect): this
# much of its audio (5 s) waits for one rather than lose its start.
HOLD_BYTES = 5000 * BYTES_PER_MS
RECENT_EVENTS = 32  # sent events kept by id, for errors that name one


class Session:
    def __init__(self, options: SessionOptions) -> None:
        self._options = options
        self._actions: list[Action] = []
        self.state = State.STARTING
        self._detail = ""
        # Facts the state is derived from.
        self._connected = False
        self._connecting = False
        self._configured = False
        self._device_error = ""
        self._offline_reason = ""
        self.muted = False
        self._user_speaking = False
        self._awaiting_reply = False
        self._playing = False
        self._awake = False  # wake mode: listening without the wake word (wake_window)
        self._reply = Reply()
        self._ignore_turn = False
        # Bookkeeping.
        self._received_ms: dict[str, float] = {}
        self._played_item: str | None = None
        self._truncate_pending: str | None = None
        self._transcript_parts: dict[tuple[str, str], list[str]] = {}
        self._transcribed: set[str] = set()  # items of this response already transcribed
        self.turn_id = 0
        self._turn_end_at: tuple[float, int | None] | None = None  # speech end, END_OF_TURN_MS
        self.session_id = ""
        self.dropped_chunks = 0
        self._held: list[bytes] = []  # the current turn's audio, waiting for a session
        self._in_turn = False  # between speech_started and speech_stopped (any connection)
        self._turn_sent = False  # some of the current turn went to the session
        self._turn_lost = False  # the current turn cannot go whole: none of the rest is sent
        self.protocol_errors = 0
        # Tools, the response deadline, renewal and the conversation policy.
        self._calls_running: set[str] = set()
        self._tools_need_response = False
        self._last_event_at = 0.0
        self._dead_reported = False
        self._session_started_at: float | None = None
        self._renewal_requested = False
        self._last_activity = 0.0
        self._conversation = Conversation()
        self._greeted = False
        self._event_seq = 0
        self._recent: dict[str, ClientEvent] = {}
        # What the service confirmed (per connection) and how it behaves (per run).
        self._terms = Terms()
        self._habits = Habits()
        self._last_update: SessionUpdate | None = None
        self._tool_create_id = ""  # the response.create sent after tool outputs
        self._last_create_id = ""

    # --- outputs ------------------------------------------------------------------------------

    def take(self) -> list[Action]:
        """Drain the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    def _next_id(self) -> str:
        self._event_seq += 1
        return f"evt_{self._event_seq}"

    def _send(self, event: ClientEvent) -> None:
        if event.event_id:
            self._recent[event.event_id] = event
            if len(self._recent) > RECENT_EVENTS:
                del self._recent[next(iter(self._recent))]
        self._actions.append(Send(event))

    def sent_event(self, event_id: str) -> ClientEvent | None:
        """A recently sent client event by its ``event_id`` (None: unknown, or too old)."""
        return self._recent.get(event_id)

    # --- connection ---------------------------------------------------------------------------

    def connecting(self) -> None:
        self._connecting = True
        self._refresh()

    def connected(self) -> None:
        """The WebSocket handshake succeeded; ``session.created`` comes next."""
        self._connected = True
        self._connecting = False
        self._configured = False
        self._terms = Terms()
        self._refresh()

    def disconnected(self, reason: str, *, planned: bool = False) -> None:
        """The connection is gone: stop playback, forget the response, show offline
        (``planned``, a renewal: show connecting, the next connection follows at once)."""
        if self._playing:
            self._actions.append(StopPlayback())
        self._connected = self._configured = False
        self._connecting = planned
        self._offline_reason = reason
        self._reply.reset()
        self._awaiting_reply = self._user_speaking = False
        self._truncate_pending = None
        self._received_ms.clear()
        # A turn that the old session has part of cannot go to the next one whole; one that
        # is still all held waits for the next session.
        self._turn_lost = self._turn_lost or self._turn_sent
        # Calls still running belong to the old session; their results are dropped.
        self._calls_running.clear()
        self._tools_need_response = False
        self._dead_reported = self._renewal_requested = False
        self._session_started_at = None
        self._conversation.clear()
        self._refresh()

    def device_error(self, message: str) -> None:
        """An audio device failed ("" when it is back)."""
        self._device_error = message
        self._refresh()

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        self._refresh()

    def session_update(self, partial: dict[str, Any] | None = None) -> None:
        """Send the configured session (or a partial update, e.g. after a reload)."""
        if partial:
            self._send_update(dict(partial), whole=False)
        else:
            self._send_update(self._options.full_session(), whole=True)

    def _send_update(self, session: dict[str, Any], *, whole: bool) -> None:
        """A ``session.update`` as this service needs it (``confirmed.Habits``)."""
        session, quiet = self._habits.apply(session, whole=whole)
        update = SessionUpdate(session, event_id=self._next_id())
        if whole:
            self._terms.whole_ids.add(update.event_id)
        if quiet:
            self._terms.quiet_asked = True
            self._terms.quiet_event_id = update.event_id
        self._last_update = update
        self._send(update)

    def reconfigure(self, options: SessionOptions, partial: dict[str, Any] | None = None) -> None:
        """Use reloaded settings from now on; ``partial`` goes to a configured session now.

        A session not configured yet gets the whole new session at ``session.created``.
        """
        self._options = options
        terms = self._terms
        if self._connected and (terms.rejected or terms.degraded):
            # The session was refused, or a key of it: the reload may have fixed it.
            terms.retry_at, terms.retries, terms.degraded = None, 0, ""
            self.session_update()
            self._refresh()
        elif partial and self._configured:
            self.session_update(partial)

    # --- local gate ----------------------------------------------------------------------------

    def speech_started(self, now: float) -> None:
        """The local gate opened (VAD onset or push-to-talk press)."""
        self._ignore_turn = False
        self._turn_sent = self._turn_lost = False
        self._in_turn = True
        self._held.clear()
        self._awake = False  # in wake mode the turn took the window
        if self._options.barge_in is BargeIn.LOCAL and (
            self._agent_audible() or self._reply.exists
        ):
            self._interrupt(send_cancel=True)
        elif self._agent_audible() and self._options.local_turns:
            # The agent may not be interrupted by local speech; this speech is not sent.
            self._ignore_turn = True
            return
        self.turn_id += 1
        self._user_speaking = True
        self._last_activity = now
        self._refresh()
        log.debug("speech started", extra={"TURN_ID": self.turn_id})

    def wake_window(self, open_: bool, now: float, *, wake_word: bool = False) -> None:
        """Wake mode: the front end listens without the wake word (``open_``), after the
        wake word or in the follow-up window after a reply; shown as listening at once.
        The wake word also interrupts the agent (barge-in by name) unless barge-in is off."""
        speaking = self._agent_audible() or self._reply.exists
        if open_ and wake_word and self._options.barge_in is not BargeIn.OFF and speaking:
            self._interrupt(send_cancel=True)
        self._awake = open_
        if open_:
            self._last_activity = now
        self._refresh()

    def user_audio(self, pcm: bytes) -> None:
        """A chunk of gated microphone audio (PCM16 mono 24 kHz)."""
        if self._ignore_turn or self._turn_lost:
            return
        if self._configured:
            self._turn_sent = True
            self._actions.append(Send(AppendAudio(pcm)))
        elif self._in_turn and sum(map(len, self._held)) + len(pcm) <= HOLD_BYTES:
            self._held.append(pcm)  # a session is on its way: the turn waits for it, whole
        else:
            # Too long without a session (or audio outside a turn): none of the turn goes,
            # not even the rest once one is up (a turn without its start is worse than none).
            self._turn_lost = True
            self.dropped_chunks += len(self._held) + 1
            self._held.clear()

    def speech_stopped(self, sent_ms: int, now: float, *, cancelled: bool = False, discarded: bool = False, silence_ms: int = 0) -> None:
        """The local gate closed. With local turn detection the turn is committed here unless
        ``discarded`` (no request: cleared, never answered); speech ended ``silence_ms`` ago."""
        ignored, self._ignore_turn = self._ignore_turn, False
        lost, self._turn_lost = self._turn_lost, False
        self._user_speaking = self._in_turn = self._turn_sent = False
        self._held.clear()  # configured by now, they went out; if not, the turn is lost
        if ignored or lost or not self._configured:
            if not ignored and not cancelled:
                # A turn with no session by its end (or with none for ``HOLD_BYTES`` of it,
                # or cut by a dropped connection) is not sent at all.
                reason = self._offline_reason or "connecting"
                log.warning("speech not sent: no session (%s)", reason, extra={"TURN_ID": self.turn_id})
            self._refresh()
            return
        if self._terms.turns.server_turns:  # the service ends turns (as configured, or it insists)
            self._refresh()
            return
        if cancelled or discarded:
            self._send(ClearInput(event_id=self._next_id()))
            if discarded:
                log.info("turn discarded: too little voiced speech", extra={"TURN_ID": self.turn_id})
        elif sent_ms < MIN_COMMIT_MS:
            self._send(ClearInput(event_id=self._next_id()))
            self._actions.append(TooShort(sent_ms))
            log.info(
                "turn too short to send (%d ms of audio)", sent_ms, extra={"TURN_ID": self.turn_id}
            )
        else:
            self._send(Commit(event_id=self._next_id()))
            self._request_response(now)
            self._awaiting_reply = True
            server_events.turn_committed(self, now, silence_ms)
        self._last_activity = now
        self._refresh()

    def _request_response(self, now: float) -> None:
        if self._reply.request(now):  # else sent when the active response is done
            self._last_create_id = self._next_id()
            self._send(CreateResponse(event_id=self._last_create_id))

    # --- playback ---------------------------------------------------------------------------

    def playback_started(self, item_id: str, now: float | None = None) -> None:
        self._played_item = item_id
        server_events.reply_heard(self, now)  # its first audio was written to the device

    def playback_stopped(self, item_id: str | None, played_ms: int) -> None:
        """The player stopped after ``StopPlayback``; tell the server what was heard."""
        self._playing = False
        target = self._truncate_pending
        self._truncate_pending = None
        if target is not None and self._connected and target in self._received_ms:
            heard = played_ms if item_id == target else 0
            end_ms = max(0, min(heard, int(self._received_ms[target])))
            self._send(Truncate(target, end_ms, event_id=self._next_id()))
            log.info(
                "barge-in: agent audio truncated at %d ms", end_ms, extra={"TURN_ID": self.turn_id}
            )
        self._refresh()

    def playback_idle(self, now: float | None = None) -> None:
        """Everything queued has been heard."""
        self._playing = False
        if now is not None:
            self._last_activity = now
        self._refresh()

    # --- tools ----------------------------------------------------------------------------

    def tool_result(self, call_id: str, output: str, now: float) -> None:
        """A ``CallTool`` finished: its output goes to the conversation; once every call of
        the response is answered (and the response is done), one ``response.create``."""
        if call_id not in self._calls_running:
            log.debug("dropped the result of call %s (its session is gone)", call_id)
            return
        self._calls_running.discard(call_id)
        self._last_activity = now
        if self._connected:
            self._send(FunctionCallOutput(call_id, output, event_id=self._next_id()))
        self._maybe_continue_after_tools(now)
        self._refresh()

    def _maybe_continue_after_tools(self, now: float) -> None:
        if self._tools_need_response and not self._calls_running and not self._reply.exists:
            self._tools_need_response = False
            if self._habits.server_answers_tools:
                self._reply.server_will_create(now)  # the service answers tool outputs itself
            else:
                self._request_response(now)
                self._tool_create_id = self._last_create_id
            self._awaiting_reply = True

    # --- time: deadlines, renewal, conversation policy -------------------------------------

    def tick(self, now: float) -> None:
        """Checks the response deadline, renewal and idle; due at ``next_tick``."""
        deadlines.tick(self, now)

    def response_deadline(self) -> float | None:
        """When the connection counts as dead if no server event arrives (None: not waiting)."""
        return deadlines.response_deadline(self)

    def next_tick(self) -> float | None:
        """When ``tick`` could next act if nothing else happens first (``deadlines``)."""
        return deadlines.next_tick(self)

    def _busy(self) -> bool:
        return deadlines.busy(self)

    def _delete(self, item_ids: list[str]) -> None:
        for item_id in item_ids:
            self._send(DeleteItem(item_id, event_id=self._next_id()))

    def _prune(self) -> None:
        self._delete(self._conversation.prune(self._options.max_turns, self.session_id))

    # --- server events ---------------------------------------------------------------------

    def server_event(self, event: Incoming, now: float) -> None:
        """One event from the server. Malformed ones are logged, counted and survived."""
        self._last_event_at = now
        if isinstance(event, Malformed):
            self._malformed(event.reason, event.event_type)
            return
        if len(event.audio) & 1:  # a transport's PCM16 must hold whole samples
            try:
                check_pcm(event.audio, event.type)
            except ProtocolError as exc:
                self._malformed(str(exc), event.type)
                return
        handler = HANDLERS.get(event.type)
        if handler is None:
            if event.type in IGNORED:
                return
            log.debug("unknown server event %s", event.type, extra={"EVENT_TYPE": event.type})
            return
        handler(self, event, now)

    def _malformed(self, reason: str, event_type: str) -> None:
        self.protocol_errors += 1
        log.warning(
            "ignored a malformed server event: %s", reason, extra={"EVENT_TYPE": event_type}
        )

    # --- barge-in ------------------------------------------------------------------------------

    def _agent_audible(self) -> bool:
        return self._playing

    def _interrupt(self, *, send_cancel: bool) -> None:
        """Stop the agent: playback now, cancel if still generating, truncate when stopped."""
        if self._playing:
            self._actions.append(StopPlayback())
            self._truncate_pending = self._played_item or self._reply.last_audio_item()
        if self._reply.cancel() and send_cancel:
            self._send(CancelResponse(event_id=self._next_id()))
        log.info("barge-in", extra={"TURN_ID": self.turn_id})

    # --- the one place the state changes -------------------------------------------------------

    def _refresh(self) -> None:
        detail = ""
        if self._device_error:
            state, detail = State.ERROR, self._device_error
        elif not self._connected:
            state = State.CONNECTING if self._connecting else State.OFFLINE
            detail = "" if self._connecting else self._offline_reason
        elif not self._configured:
            state, detail = (State.ERROR, self._terms.rejected) if self._terms.rejected else (
                State.CONNECTING, "")
        elif self._user_speaking or self._awake:
            state = State.LISTENING
        elif self._playing:
            state = State.SPEAKING
        elif self._awaiting_reply or self._reply.exists or self._calls_running:
            state = State.THINKING
        elif self.muted:
            state = State.MUTED
        else:
            state, detail = State.READY, self._terms.degraded  # a refused key, until a reload
        if state is self.state and detail == self._detail:
            return
        self.state, self._detail = state, detail
        self._actions.append(StateChanged(state, detail))
        log.info(
            "state: %s%s",
            state.words,
            f" ({detail})" if detail else "",
            extra={"STATE": state.value},
        )
