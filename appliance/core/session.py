"""The realtime session state machine, sans I/O.

Inputs: server frames, local gate edges and audio, playback progress, mute, connection
events, each with ``now`` (seconds, any monotonic origin) where timing matters. Outputs:
actions drained with ``take()`` — frames to send, audio to play, playback to stop, state
changes, transcripts and turn timings. No sockets, threads, sleeps or clock reads here.

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


Action = (
    Send | Play | EndOfReply | StopPlayback | StateChanged | Transcript | TurnTimings | TooShort
)


@dataclass
class _Response:
    id: str
    cancelled: bool = False
    audio_items: list[str] = field(default_factory=list)


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
        self.protocol_errors = 0

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

    def disconnected(self, reason: str) -> None:
        """The connection is gone: stop playback, forget the response, show offline."""
        if self._playing:
            self._actions.append(StopPlayback())
        self._connected = self._connecting = self._configured = False
        self._offline_reason = reason
        self._response = None
        self._pending_create = self._awaiting_reply = self._user_speaking = False
        self._truncate_pending = None
        self._received_ms.clear()
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
        session = partial or self._config.session.to_api(turn_detection_null=self._local_turns)
        self._send(protocol.session_update(session))

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

    # --- local gate ----------------------------------------------------------------------------

    def speech_started(self, now: float) -> None:
        """The local gate opened (VAD onset or push-to-talk press)."""
        self._ignore_turn = False
        if self._barge_in == "local" and (self._agent_audible() or self._response is not None):
            self._interrupt(send_cancel=True)
        elif self._agent_audible() and self._local_turns:
            # The agent may not be interrupted by local speech; this speech is not sent.
            self._ignore_turn = True
            return
        self.turn_id += 1
        self._user_speaking = True
        self._refresh()
        log.debug("speech started", extra={"TURN_ID": self.turn_id})

    def user_audio(self, pcm: bytes) -> None:
        """A chunk of gated microphone audio (PCM16 mono 24 kHz)."""
        if self._ignore_turn:
            return
        if not self._configured:
            self.dropped_chunks += 1
            return
        self._send(protocol.append_audio(pcm))

    def speech_stopped(self, sent_ms: int, now: float, *, cancelled: bool = False) -> None:
        """The local gate closed. With local turn detection the turn is committed here."""
        ignored, self._ignore_turn = self._ignore_turn, False
        self._user_speaking = False
        if ignored or not self._configured:
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
            self._request_response()
            self._awaiting_reply = True
            self._turn_end_at = now
        self._refresh()

    def _request_response(self) -> None:
        if self._response is not None:
            self._pending_create = True  # sent when the active response is done
        else:
            self._send(protocol.response_create())

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

    def playback_idle(self) -> None:
        """Everything queued has been heard."""
        self._playing = False
        self._refresh()

    # --- server events ---------------------------------------------------------------------

    def server_frame(self, frame: str | bytes, now: float) -> None:
        """One frame from the server. Malformed frames are logged and survived."""
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
            log.debug("unhandled server event %s", event.type, extra={"EVENT_TYPE": event.type})
            return
        handler(self, event, now)

    def _on_session_created(self, ev: ServerEvent, now: float) -> None:
        self.session_id = str(ev.data["session"].get("id", ""))
        log.info("session created", extra={"SESSION_ID": self.session_id})
        self.session_update()

    def _on_session_updated(self, ev: ServerEvent, now: float) -> None:
        if not self._configured:
            self._configured = True
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
            self._pending_create = True
        where = (
            f" (param {param}: config key {param})"
            if param.startswith("session.")
            else (f" (param {param})" if param else "")
        )
        log.error(
            "server error %s/%s: %s%s",
            err.get("type") or "error",
            code or "-",
            err.get("message") or "",
            where,
            extra={"ERROR_CODE": code, "EVENT_TYPE": "error"},
        )
        if param.startswith("session.") and not self._configured:
            # The update was rejected whole; the server's defaults apply. Keep working.
            self._configured = True
            self._refresh()

    def _on_speech_started(self, ev: ServerEvent, now: float) -> None:
        if self._local_turns:
            return
        # With server turns this is the only speech onset we get, so "local" uses it too.
        if self._agent_audible() and self._barge_in != "off":
            self._interrupt(send_cancel=not self._server_interrupts)
        self.turn_id += 1
        self._user_speaking = True
        self._refresh()

    def _on_speech_stopped(self, ev: ServerEvent, now: float) -> None:
        if self._local_turns:
            return
        self._user_speaking = False
        self._awaiting_reply = True
        self._turn_end_at = now
        self._refresh()

    def _on_timeout_triggered(self, ev: ServerEvent, now: float) -> None:
        self._user_speaking = False
        self._awaiting_reply = False
        self._refresh()

    def _on_user_transcript(self, ev: ServerEvent, now: float) -> None:
        self._actions.append(Transcript("user", ev.data["transcript"]))

    def _on_response_created(self, ev: ServerEvent, now: float) -> None:
        self._response = _Response(ev.data["response"]["id"])
        self._transcript_parts.clear()
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
        self._response = None
        self._awaiting_reply = False
        if self._playing:
            self._actions.append(EndOfReply())
        if self._pending_create:
            self._pending_create = False
            self._send(protocol.response_create())
            self._awaiting_reply = True
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
        elif self._user_speaking:
            state = State.LISTENING
        elif self._playing:
            state = State.SPEAKING
        elif self._awaiting_reply or self._response is not None:
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


_HANDLERS = {
    "session.created": Session._on_session_created,
    "session.updated": Session._on_session_updated,
    "error": Session._on_error,
    "input_audio_buffer.speech_started": Session._on_speech_started,
    "input_audio_buffer.speech_stopped": Session._on_speech_stopped,
    "input_audio_buffer.timeout_triggered": Session._on_timeout_triggered,
    "conversation.item.input_audio_transcription.completed": Session._on_user_transcript,
    "response.created": Session._on_response_created,
    "response.output_audio.delta": Session._on_audio_delta,
    "response.output_audio_transcript.delta": Session._on_transcript_delta,
    "response.output_audio_transcript.done": Session._on_transcript_done,
    "response.output_text.delta": Session._on_transcript_delta,
    "response.output_text.done": Session._on_transcript_done,
    "response.done": Session._on_response_done,
}
