"""The realtime session state machine, sans I/O.

Inputs: server frames, local gate edges and audio, playback progress, mute, connection
events, tool results and a periodic ``tick``, each with ``now`` (seconds, any monotonic
origin) where timing matters. Outputs: actions drained with ``take()`` — frames to send,
audio to play, playback to stop, state changes, transcripts, turn timings, tool calls to run
and reconnects to make. No sockets, threads, sleeps or clock reads here.

Besides turns and barge-in it owns the session's life: the greeting, function calls (all
answered before one ``response.create``), the response-expected deadline, renewal at a quiet
moment before the service's duration cap, and ``[session_policy]`` (a fresh conversation
after an idle period, at most N turns kept with ``conversation.item.delete``). Every server
event type the seeds name is either handled (``_HANDLERS``) or knowingly ignored
(``IGNORED``, with the reason); anything else is logged at debug level.

The state (``State``) is derived from a few facts in one place, ``_refresh()``, and each
change is emitted and logged once. Structured log fields use journald names in ``extra``.
Imports: ``appliance.config``, ``appliance.core``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from appliance.config import Config
from appliance.core import protocol
from appliance.core.protocol import ServerEvent
from appliance.core.state import State
from appliance.errors import ProtocolError

log = logging.getLogger(__name__)

BYTES_PER_MS = 48  # PCM16 mono at 24 kHz
MIN_COMMIT_MS = 100  # the API rejects a commit of less audio
QUIET_S = 3.0  # renewal and a fresh conversation wait this long after the last activity
# A turn that begins while there is no configured session (start-up, a reconnect): this
# much of its audio (5 s) waits for one rather than lose its start.
HOLD_BYTES = 5000 * BYTES_PER_MS
# Error codes after which the server ends the session: reconnect at once.
SESSION_ENDING_CODES = frozenset({"session_expired"})

# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """A text frame for the server."""

    text: str


@dataclass(frozen=True, slots=True)
class Play:
    """Reply audio (PCM16 mono 24 kHz) for the player, tagged with its item."""

    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndOfReply:
    """No more audio is coming for now: play out what is queued."""


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Barge-in or disconnect: stop the speaker now and report what was played."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: State
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transcript:
    role: str  # "user" or "agent"
    text: str


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """One turn's latency: end of user speech to first reply audio received."""

    turn_id: int
    latency_ms: int


@dataclass(frozen=True, slots=True)
class TooShort:
    """A push-to-talk press held too little audio to commit; the user gets a cue."""

    sent_ms: int


@dataclass(frozen=True, slots=True)
class CallTool:
    """Run a tool and hand the output to ``Session.tool_result`` with the same ``call_id``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Drop this connection and open a new one. ``immediate``: a planned renewal (or a
    session the server ended), no backoff; otherwise the connection is considered dead."""

    reason: str
    immediate: bool = False


Action = (
    Send
    | Play
    | EndOfReply
    | StopPlayback
    | StateChanged
    | Transcript
    | TurnTimings
    | TooShort
    | CallTool
    | Reconnect
)


@dataclass
class _Response:
    id: str
    cancelled: bool = False
    audio_items: list[str] = field(default_factory=list)
    calls: int = 0  # function calls issued in this response


class Session:
    def __init__(self, config: Config) -> None:
        self._use_config(config)
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
        self._response: _Response | None = None
        self._pending_create = False
        self._ignore_turn = False
        # Bookkeeping.
        self._received_ms: dict[str, float] = {}
        self._played_item: str | None = None
        self._truncate_pending: str | None = None
        self._transcript_parts: list[str] = []
        self.turn_id = 0
        self._turn_end_at: float | None = None
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
        self._create_sent_at: float | None = None  # a response.create awaits its response
        self._last_event_at = 0.0
        self._dead_reported = False
        self._session_started_at: float | None = None
        self._renewal_requested = False
        self._last_activity = 0.0
        self._turns: list[list[str]] = []  # item ids per turn, oldest first
        self._greeted = False

    # --- outputs ------------------------------------------------------------------------------

    def take(self) -> list[Action]:
        """Drain the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    def _send(self, text: str) -> None:
        self._actions.append(Send(text))

    # --- connection ---------------------------------------------------------------------------

    def connecting(self) -> None:
        self._connecting = True
        self._refresh()

    def connected(self) -> None:
        """The WebSocket handshake succeeded; ``session.created`` comes next."""
        self._connected = True
        self._connecting = False
        self._configured = False
        self._refresh()

    def disconnected(self, reason: str, *, planned: bool = False) -> None:
        """The connection is gone: stop playback, forget the response, show offline
        (``planned``, a renewal: show connecting, the next connection follows at once)."""
        if self._playing:
            self._actions.append(StopPlayback())
        self._connected = self._configured = False
        self._connecting = planned
        self._offline_reason = reason
        self._response = None
        self._pending_create = self._awaiting_reply = self._user_speaking = False
        self._truncate_pending = None
        self._received_ms.clear()
        # A turn that the old session has part of cannot go to the next one whole; one that
        # is still all held waits for the next session.
        self._turn_lost = self._turn_lost or self._turn_sent
        # Calls still running belong to the old session; their results are dropped.
        self._calls_running.clear()
        self._tools_need_response = False
        self._create_sent_at = None
        self._dead_reported = self._renewal_requested = False
        self._session_started_at = None
        self._turns.clear()
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
        session = partial or self._full_session()
        self._send(protocol.session_update(session))

    def _full_session(self) -> dict[str, Any]:
        session = self._config.session.to_api(turn_detection_null=self._local_turns)
        if self._config.tools:
            session["tools"] = [tool.to_api() for tool in self._config.tools]
        return session

    def reconfigure(self, config: Config, partial: dict[str, Any] | None = None) -> None:
        """Use a reloaded config from now on; ``partial`` goes to a configured session now.

        A session not configured yet gets the whole new session at ``session.created``.
        """
        self._use_config(config)
        if partial and self._configured:
            self.session_update(partial)

    def _use_config(self, config: Config) -> None:
        self._config = config
        self._local_turns = config.gate.local_turns
        self._barge_in = config.gate.barge_in
        td = config.session.turn_detection or {}
        # With server turn detection the server cancels its own response on speech_started.
        self._server_interrupts = not self._local_turns and bool(td.get("interrupt_response", True))
        self._server_creates = not self._local_turns and bool(td.get("create_response", True))
        self._policy = config.session_policy
        self._response_timeout = config.realtime.response_timeout_s
        self._renew_after = config.realtime.renew_after_s

    # --- local gate ----------------------------------------------------------------------------

    def speech_started(self, now: float) -> None:
        """The local gate opened (VAD onset or push-to-talk press)."""
        self._ignore_turn = False
        self._turn_sent = self._turn_lost = False
        self._in_turn = True
        self._held.clear()
        self._awake = False  # in wake mode the turn took the window
        if self._barge_in == "local" and (self._agent_audible() or self._response is not None):
            self._interrupt(send_cancel=True)
        elif self._agent_audible() and self._local_turns:
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
        speaking = self._agent_audible() or self._response is not None
        if open_ and wake_word and self._barge_in != "off" and speaking:
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
            self._send(protocol.append_audio(pcm))
        elif self._in_turn and sum(map(len, self._held)) + len(pcm) <= HOLD_BYTES:
            self._held.append(pcm)  # a session is on its way: the turn waits for it, whole
        else:
            # Too long without a session (or audio outside a turn): none of the turn goes,
            # not even the rest once one is up (a turn without its start is worse than none).
            self._turn_lost = True
            self.dropped_chunks += len(self._held) + 1
            self._held.clear()

    def speech_stopped(self, sent_ms: int, now: float, *, cancelled: bool = False) -> None:
        """The local gate closed. With local turn detection the turn is committed here."""
        ignored, self._ignore_turn = self._ignore_turn, False
        lost, self._turn_lost = self._turn_lost, False
        self._user_speaking = self._in_turn = self._turn_sent = False
        self._held.clear()  # configured by now, they went out; if not, the turn is lost
        if ignored or lost or not self._configured:
            if not ignored and not cancelled:
                # A turn with no session by its end (or with none for ``HOLD_BYTES`` of it,
                # or cut by a dropped connection) is not sent at all.
                log.warning(
                    "speech not sent: no session (%s)",
                    self._offline_reason or "connecting",
                    extra={"TURN_ID": self.turn_id},
                )
            self._refresh()
            return
        if not self._local_turns:
            self._refresh()
            return
        if cancelled:
            self._send(protocol.clear_input())
        elif sent_ms < MIN_COMMIT_MS:
            self._send(protocol.clear_input())
            self._actions.append(TooShort(sent_ms))
            log.info(
                "turn too short to send (%d ms of audio)", sent_ms, extra={"TURN_ID": self.turn_id}
            )
        else:
            self._send(protocol.commit())
            self._request_response(now)
            self._awaiting_reply = True
            self._turn_end_at = now
        self._last_activity = now
        self._refresh()

    def _request_response(self, now: float) -> None:
        if self._response is not None:
            self._pending_create = True  # sent when the active response is done
        else:
            self._send(protocol.response_create())
            self._create_sent_at = now

    # --- playback ---------------------------------------------------------------------------

    def playback_started(self, item_id: str) -> None:
        self._played_item = item_id

    def playback_stopped(self, item_id: str | None, played_ms: int) -> None:
        """The player stopped after ``StopPlayback``; tell the server what was heard."""
        self._playing = False
        target = self._truncate_pending
        self._truncate_pending = None
        if target is not None and self._connected and target in self._received_ms:
            heard = played_ms if item_id == target else 0
            end_ms = max(0, min(heard, int(self._received_ms[target])))
            self._send(protocol.truncate(target, end_ms))
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
            self._send(protocol.function_call_output(call_id, output))
        self._maybe_continue_after_tools(now)
        self._refresh()

    def _maybe_continue_after_tools(self, now: float) -> None:
        if self._tools_need_response and not self._calls_running and self._response is None:
            self._tools_need_response = False
            self._request_response(now)
            self._awaiting_reply = True

    # --- time: deadlines, renewal, conversation policy -------------------------------------

    def tick(self, now: float) -> None:
        """Checks the response deadline, renewal and idle; due at ``next_tick``."""
        if not self._connected or not self._configured:
            return
        deadline = self.response_deadline()
        if deadline is not None and now >= deadline and not self._dead_reported:
            self._dead_reported = True
            waited = now - max(self._last_event_at, self._create_sent_at or 0.0)
            log.warning(
                "no server event for %.0f s while a response was expected",
                waited,
                extra={"TURN_ID": self.turn_id},
            )
            self._actions.append(
                Reconnect(f"no server event for {waited:.0f} s while a response was expected")
            )
            return
        if not self._quiet(now):
            return
        started = self._session_started_at
        if started is not None and now - started >= self._renew_after:
            if not self._renewal_requested:
                self._renewal_requested = True
                log.info(
                    "renewing the session after %.0f min, at a quiet moment",
                    (now - started) / 60,
                    extra={"SESSION_ID": self.session_id},
                )
                self._actions.append(Reconnect("session renewal", immediate=True))
            return
        idle = self._policy.fresh_after_idle_s
        if idle and self._turns and now - self._last_activity >= idle:
            log.info(
                "fresh conversation after %.0f min without a turn: %d items deleted",
                (now - self._last_activity) / 60,
                sum(len(t) for t in self._turns),
                extra={"SESSION_ID": self.session_id},
            )
            self._delete_turns(len(self._turns))

    def response_deadline(self) -> float | None:
        """When the connection counts as dead if no server event arrives (None: not waiting)."""
        if self._create_sent_at is None and self._response is None:
            return None
        since = max(self._last_event_at, self._create_sent_at or 0.0)
        return since + self._response_timeout

    def next_tick(self) -> float | None:
        """When ``tick`` could next act if nothing else happens first (None: not before
        another event, after which this is asked again): the response deadline, or the
        quiet moment when a renewal or a fresh conversation is due. The daemon sleeps until
        then rather than waking on a clock while the appliance waits for its user."""
        if not self._connected or not self._configured:
            return None
        deadline = self.response_deadline()
        if deadline is not None:  # a response is awaited: the rest waits for a quiet moment
            return None if self._dead_reported else deadline
        if self._busy() or self._renewal_requested:
            return None
        quiet_at = self._last_activity + QUIET_S
        due = []
        if self._session_started_at is not None:
            due.append(max(quiet_at, self._session_started_at + self._renew_after))
        idle = self._policy.fresh_after_idle_s
        if idle and self._turns:
            due.append(max(quiet_at, self._last_activity + idle))
        return min(due, default=None)

    def _quiet(self, now: float) -> bool:
        """Nothing is going on and nothing has for a moment: no turn, reply, call or audio."""
        return not self._busy() and now - self._last_activity >= QUIET_S

    def _busy(self) -> bool:
        """A turn, reply, tool call or wake-word window is under way."""
        return bool(
            self._user_speaking
            or self._awake  # a wake-word window is open: the user is about to speak
            or self._playing
            or self._awaiting_reply
            or self._response is not None
            or self._pending_create
            or self._calls_running
            or self._tools_need_response
            or self._create_sent_at is not None
        )

    def _delete_turns(self, count: int) -> None:
        for turn in self._turns[:count]:
            for item_id in turn:
                self._send(protocol.delete_item(item_id))
        del self._turns[:count]

    def _prune(self) -> None:
        keep = self._policy.max_turns
        if keep and len(self._turns) > keep:
            extra = len(self._turns) - keep
            log.info(
                "keeping the last %d turns: %d items deleted",
                keep,
                sum(len(t) for t in self._turns[:extra]),
                extra={"SESSION_ID": self.session_id},
            )
            self._delete_turns(extra)

    # --- server events ---------------------------------------------------------------------

    def server_frame(self, frame: str | bytes, now: float) -> None:
        """One frame from the server. Malformed frames are logged and survived."""
        self._last_event_at = now
        try:
            event = protocol.decode(frame)
        except ProtocolError as exc:
            self.protocol_errors += 1
            log.warning(
                "ignored a malformed server event: %s",
                exc,
                extra={"EVENT_TYPE": exc.event_type or ""},
            )
            return
        handler = _HANDLERS.get(event.type)
        if handler is None:
            if event.type in IGNORED:
                return
            log.debug("unknown server event %s", event.type, extra={"EVENT_TYPE": event.type})
            return
        handler(self, event, now)

    def _on_session_created(self, ev: ServerEvent, now: float) -> None:
        self.session_id = str(ev.data["session"].get("id", ""))
        self._session_started_at = now
        self._last_activity = max(self._last_activity, now)
        self._turns.clear()
        log.info("session created", extra={"SESSION_ID": self.session_id})
        self.session_update()

    def _on_session_updated(self, ev: ServerEvent, now: float) -> None:
        if not self._configured:
            self._became_configured(now)

    def _became_configured(self, now: float) -> None:
        self._configured = True
        for pcm in self._held:  # a turn that began before the session was ready
            self._send(protocol.append_audio(pcm))
            self._turn_sent = True
        self._held.clear()
        greeting = self._policy.greeting
        if greeting and not self._greeted:
            # Once per daemon run, not after a reconnect or a renewal (quickstart: "Greet
            # the user"): a user text item, then a response.
            self._greeted = True
            self._send(protocol.user_text(greeting))
            self._request_response(now)
            self._awaiting_reply = True
        self._refresh()

    def _on_error(self, ev: ServerEvent, now: float) -> None:
        err = ev.data["error"]
        code = err.get("code") or ""
        param = err.get("param") or ""
        if code == "response_cancel_not_active":
            log.debug(
                "response.cancel arrived after the response ended", extra={"ERROR_CODE": code}
            )
            return
        if code == "conversation_already_has_active_response":
            # Our response.create lost a race with a response we did not see start (a
            # server-VAD turn): ask again once the active one is done.
            self._pending_create = True
            self._create_sent_at = None
            log.info(
                "a response is already active; response.create is sent again after it",
                extra={"ERROR_CODE": code},
            )
            return
        where = ""
        if param.startswith("session."):
            where = f" (param {param}: {config_key_for(param, self._local_turns)})"
        elif param:
            where = f" (param {param})"
        log.error(
            "server error %s/%s: %s%s",
            err.get("type") or "error",
            code or "-",
            err.get("message") or "",
            where,
            extra={"ERROR_CODE": code, "EVENT_TYPE": "error"},
        )
        if code in SESSION_ENDING_CODES:
            self._actions.append(Reconnect(f"server ended the session ({code})", immediate=True))
            return
        if code == "input_audio_buffer_commit_empty":
            self._awaiting_reply = False
            self._refresh()
        if param.startswith("session.") and not self._configured:
            # The update was rejected whole; the server's defaults apply. Keep working.
            self._became_configured(now)

    def _on_speech_started(self, ev: ServerEvent, now: float) -> None:
        if self._local_turns:
            return
        # With server turns this is the only speech onset we get, so "local" uses it too.
        if self._agent_audible() and self._barge_in != "off":
            self._interrupt(send_cancel=not self._server_interrupts)
        self.turn_id += 1
        self._user_speaking = True
        self._last_activity = now
        self._refresh()

    def _on_speech_stopped(self, ev: ServerEvent, now: float) -> None:
        if self._local_turns:
            return
        self._user_speaking = False
        self._last_activity = now
        if self._server_creates:
            self._awaiting_reply = True
            self._turn_end_at = now
            self._create_sent_at = now  # the server creates the response itself
        self._refresh()

    def _on_timeout_triggered(self, ev: ServerEvent, now: float) -> None:
        # server_vad's idle_timeout_ms: no speech for that long. The server commits the
        # silence and may answer it ("are you still there?"); nobody is speaking any more.
        self._user_speaking = False
        if not self._server_creates:
            self._awaiting_reply = False
        log.info("server turn detection: idle timeout", extra={"TURN_ID": self.turn_id})
        self._refresh()

    def _on_item_added(self, ev: ServerEvent, now: float) -> None:
        item = ev.data["item"]
        item_id = item.get("id")
        if not isinstance(item_id, str):
            return
        if any(item_id in turn for turn in self._turns):
            return
        if (item.get("type") == "message" and item.get("role") == "user") or not self._turns:
            self._turns.append([item_id])
        else:
            self._turns[-1].append(item_id)

    def _on_item_deleted(self, ev: ServerEvent, now: float) -> None:
        item_id = ev.data["item_id"]
        for turn in self._turns:
            if item_id in turn:
                turn.remove(item_id)
        self._turns = [turn for turn in self._turns if turn]

    def _on_user_transcript_failed(self, ev: ServerEvent, now: float) -> None:
        err = ev.data.get("error")
        message = err.get("message") if isinstance(err, dict) else None
        log.warning("the user's speech could not be transcribed: %s", message or "no reason given")

    def _on_user_transcript(self, ev: ServerEvent, now: float) -> None:
        self._actions.append(Transcript("user", ev.data["transcript"]))

    def _on_response_created(self, ev: ServerEvent, now: float) -> None:
        self._response = _Response(ev.data["response"]["id"])
        self._create_sent_at = None
        self._transcript_parts.clear()
        self._refresh()

    def _on_function_call(self, ev: ServerEvent, now: float) -> None:
        resp = self._response
        call_id = ev.data["call_id"]
        name = ev.get_str("name")
        if resp is None or resp.cancelled:
            log.info("function call %s (%s) ignored: its response was cancelled", call_id, name)
            return
        resp.calls += 1
        self._calls_running.add(call_id)
        log.info(
            "function call %s(%s)", name, ev.data["arguments"], extra={"TURN_ID": self.turn_id}
        )
        self._actions.append(CallTool(call_id, name, ev.data["arguments"]))
        self._refresh()

    def _on_audio_delta(self, ev: ServerEvent, now: float) -> None:
        resp = self._response
        if resp is None or resp.cancelled or self._ignore_turn:
            return
        item_id = ev.data["item_id"]
        if item_id not in resp.audio_items:
            resp.audio_items.append(item_id)
        self._received_ms[item_id] = (
            self._received_ms.get(item_id, 0.0) + len(ev.audio) / BYTES_PER_MS
        )
        if self._turn_end_at is not None:
            latency = round((now - self._turn_end_at) * 1000)
            self._turn_end_at = None
            self._actions.append(TurnTimings(self.turn_id, latency))
            log.info(
                "first reply audio %d ms after the end of speech",
                latency,
                extra={"TURN_ID": self.turn_id, "LATENCY_MS": latency},
            )
        self._awaiting_reply = False
        self._playing = True
        self._actions.append(Play(item_id, ev.audio))
        self._refresh()

    def _on_transcript_delta(self, ev: ServerEvent, now: float) -> None:
        if self._response is not None and not self._response.cancelled:
            self._transcript_parts.append(ev.data["delta"])

    def _on_transcript_done(self, ev: ServerEvent, now: float) -> None:
        text = ev.get_str("transcript") or ev.get_str("text") or "".join(self._transcript_parts)
        self._transcript_parts.clear()
        if text and (self._response is None or not self._response.cancelled):
            self._actions.append(Transcript("agent", text))

    def _on_response_done(self, ev: ServerEvent, now: float) -> None:
        response = ev.data["response"]
        status = response.get("status")
        if status == "failed":
            log.error(
                "response failed: %s", response.get("status_details"), extra={"EVENT_TYPE": ev.type}
            )
        resp = self._response
        self._response = None
        self._awaiting_reply = False
        self._create_sent_at = None
        self._last_activity = now
        if self._playing:
            self._actions.append(EndOfReply())
        if resp is not None and resp.calls and status != "cancelled":
            # Every call of this response is answered before the one response.create.
            self._tools_need_response = True
        if self._pending_create:
            self._pending_create = False
            self._tools_need_response = False  # this create covers the tool outputs too
            self._request_response(now)
            self._awaiting_reply = True
        else:
            self._maybe_continue_after_tools(now)
        self._prune()
        self._refresh()

    # --- barge-in ------------------------------------------------------------------------------

    def _agent_audible(self) -> bool:
        return self._playing

    def _interrupt(self, *, send_cancel: bool) -> None:
        """Stop the agent: playback now, cancel if still generating, truncate when stopped."""
        resp = self._response
        if self._playing:
            self._actions.append(StopPlayback())
            self._truncate_pending = self._played_item or (
                resp.audio_items[-1] if resp and resp.audio_items else None
            )
        if resp is not None and not resp.cancelled:
            resp.cancelled = True
            if send_cancel:
                self._send(protocol.response_cancel())
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
            state = State.CONNECTING
        elif self._user_speaking or self._awake:
            state = State.LISTENING
        elif self._playing:
            state = State.SPEAKING
        elif self._awaiting_reply or self._response is not None or self._calls_running:
            state = State.THINKING
        elif self.muted:
            state = State.MUTED
        else:
            state = State.READY
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


def config_key_for(param: str, local_turns: bool) -> str:
    """The config key an API ``session.*`` param came from, for error messages."""
    if param in ("session", "session.type") or ".format" in param:
        return "set by the daemon itself, not a config key"
    if param.startswith("session.tools"):
        return "config key tools" + param.removeprefix("session.tools")
    if param.startswith("session.audio.input.turn_detection") and local_turns:
        return 'sent as null because [gate] mode is "vad" or "push_to_talk"'
    # [session] mirrors the API's session object: the param is the key path.
    return f"config key {param}"


# Server events the daemon does not act on, and why (README "Server events").
IGNORED = {
    "input_audio_buffer.committed": "the daemon commits itself, or server VAD did",
    "input_audio_buffer.cleared": "confirms the daemon's own clear",
    "conversation.item.done": "items are tracked from conversation.item.added",
    "conversation.item.retrieved": "the daemon never retrieves items",
    "conversation.item.truncated": "confirms the daemon's own truncate",
    "conversation.item.input_audio_transcription.delta": "only the completed transcript is logged",
    "conversation.item.input_audio_transcription.segment": "only the completed transcript is logged",
    "response.output_item.added": "items are tracked from conversation.item.added",
    "response.output_item.done": "items are tracked from conversation.item.added",
    "response.content_part.added": "audio and text arrive as deltas",
    "response.content_part.done": "audio and text arrive as deltas",
    "response.output_audio.done": "the end of a reply is response.done",
    "response.function_call_arguments.delta": "arguments are used whole, at .done",
    "rate_limits.updated": "informational",
}

_HANDLERS = {
    "session.created": Session._on_session_created,
    "session.updated": Session._on_session_updated,
    "error": Session._on_error,
    "input_audio_buffer.speech_started": Session._on_speech_started,
    "input_audio_buffer.speech_stopped": Session._on_speech_stopped,
    "input_audio_buffer.timeout_triggered": Session._on_timeout_triggered,
    "conversation.item.input_audio_transcription.completed": Session._on_user_transcript,
    "conversation.item.input_audio_transcription.failed": Session._on_user_transcript_failed,
    "conversation.item.added": Session._on_item_added,
    "conversation.item.deleted": Session._on_item_deleted,
    "response.created": Session._on_response_created,
    "response.function_call_arguments.done": Session._on_function_call,
    "response.output_audio.delta": Session._on_audio_delta,
    "response.output_audio_transcript.delta": Session._on_transcript_delta,
    "response.output_audio_transcript.done": Session._on_transcript_done,
    "response.output_text.delta": Session._on_transcript_delta,
    "response.output_text.done": Session._on_transcript_done,
    "response.done": Session._on_response_done,
}
