"""What the session does with each server event: the handled and the knowingly ignored.

Every server event type the seeds name is either handled (``HANDLERS``, functions of the
``Session`` and the event) or ignored with the reason (``IGNORED``); anything else is
logged at debug level by the session. The handlers are the session's own code, kept here so
that the session module holds the inputs and the one place its state changes.
Imports the standard library and ``appliance.core``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.core.actions import (
    CallTool,
    EndOfReply,
    Play,
    Reconnect,
    Send,
    Transcript,
    TurnTimings,
)
from appliance.core.protocol import AppendAudio, ServerEvent, UserText
from appliance.core.settings import BargeIn

if TYPE_CHECKING:
    from appliance.core.session import Session

log = logging.getLogger("appliance.core.session")

BYTES_PER_MS = 48  # PCM16 mono at 24 kHz
# Error codes after which the server ends the session: reconnect at once.
SESSION_ENDING_CODES = frozenset({"session_expired"})


def on_session_created(s: Session, ev: ServerEvent, now: float) -> None:
    s.session_id = str(ev.data["session"].get("id", ""))
    s._session_started_at = now
    s._last_activity = max(s._last_activity, now)
    s._conversation.clear()
    log.info("session created", extra={"SESSION_ID": s.session_id})
    s.session_update()


def on_session_updated(s: Session, ev: ServerEvent, now: float) -> None:
    if not s._configured:
        became_configured(s, now)


def became_configured(s: Session, now: float) -> None:
    s._configured = True
    for pcm in s._held:  # a turn that began before the session was ready
        s._actions.append(Send(AppendAudio(pcm)))
        s._turn_sent = True
    s._held.clear()
    greeting = s._options.greeting
    if greeting and not s._greeted:
        # Once per daemon run, not after a reconnect or a renewal (quickstart: "Greet
        # the user"): a user text item, then a response.
        s._greeted = True
        s._send(UserText(greeting, event_id=s._next_id()))
        s._request_response(now)
        s._awaiting_reply = True
    s._refresh()


def on_error(s: Session, ev: ServerEvent, now: float) -> None:
    err = ev.data["error"]
    code = err.get("code") or ""
    param = err.get("param") or ""
    if code == "response_cancel_not_active":
        log.debug("response.cancel arrived after the response ended", extra={"ERROR_CODE": code})
        return
    if code == "conversation_already_has_active_response":
        # Our response.create lost a race with a response we did not see start (a
        # server-VAD turn): ask again once the active one is done.
        s._reply.lost_race()
        log.info(
            "a response is already active; response.create is sent again after it",
            extra={"ERROR_CODE": code},
        )
        return
    where = ""
    if param.startswith("session."):
        where = f" (param {param}: {config_key_for(param, s._options.local_turns)})"
    elif param:
        where = f" (param {param})"
    about = err.get("event_id")  # the client event the error is about (not the error's own)
    sent = s.sent_event(about) if isinstance(about, str) else None
    log.error(
        "server error %s/%s: %s%s%s",
        err.get("type") or "error",
        code or "-",
        err.get("message") or "",
        where,
        f" (about our {sent.type})" if sent is not None else "",
        extra={"ERROR_CODE": code, "EVENT_TYPE": "error"},
    )
    if code in SESSION_ENDING_CODES:
        s._actions.append(Reconnect(f"server ended the session ({code})", immediate=True))
        return
    if code == "input_audio_buffer_commit_empty":
        s._awaiting_reply = False
        s._refresh()
    if param.startswith("session.") and not s._configured:
        # The update was rejected whole; the server's defaults apply. Keep working.
        became_configured(s, now)


def on_speech_started(s: Session, ev: ServerEvent, now: float) -> None:
    if s._options.local_turns:
        return
    # With server turns this is the only speech onset we get, so "local" uses it too.
    if s._agent_audible() and s._options.barge_in is not BargeIn.OFF:
        s._interrupt(send_cancel=not s._options.server_interrupts)
    s.turn_id += 1
    s._user_speaking = True
    s._last_activity = now
    s._refresh()


def turn_committed(s: Session, now: float, silence_ms: int) -> None:
    """A local turn was committed at ``now``, ``silence_ms`` after the user's speech ended:
    that is the end-of-turn time (the device's own decision; the commit goes out at once)."""
    s._turn_end_at = (now - silence_ms / 1000, silence_ms)
    log.info(
        "turn committed %d ms after the end of speech",
        silence_ms,
        extra={"TURN_ID": s.turn_id, "END_OF_TURN_MS": silence_ms},
    )


def reply_heard(s: Session, now: float | None) -> None:
    """A reply's first audio was written to the device at ``now``: the latency the user
    feels runs from the end of their speech to here (``LATENCY_MS``)."""
    if now is None or s._turn_end_at is None:
        return
    ended, end_of_turn = s._turn_end_at
    s._turn_end_at = None
    latency = round((now - ended) * 1000)
    s._actions.append(TurnTimings(s.turn_id, latency, end_of_turn))
    extra = {"TURN_ID": s.turn_id, "LATENCY_MS": latency}
    if end_of_turn is not None:
        extra["END_OF_TURN_MS"] = end_of_turn
    log.info("first reply audio played %d ms after the end of speech", latency, extra=extra)


def on_speech_stopped(s: Session, ev: ServerEvent, now: float) -> None:
    if s._options.local_turns:
        return
    s._user_speaking = False
    s._last_activity = now
    if s._options.server_creates:
        s._awaiting_reply = True
        s._turn_end_at = (now, None)  # the server's own end of turn: not measured here
        s._reply.server_will_create(now)
    s._refresh()


def on_timeout_triggered(s: Session, ev: ServerEvent, now: float) -> None:
    # server_vad's idle_timeout_ms: no speech for that long. The server commits the
    # silence and may answer it ("are you still there?"); nobody is speaking any more.
    s._user_speaking = False
    if not s._options.server_creates:
        s._awaiting_reply = False
    log.info("server turn detection: idle timeout", extra={"TURN_ID": s.turn_id})
    s._refresh()


def on_item_added(s: Session, ev: ServerEvent, now: float) -> None:
    s._conversation.item_added(ev.data["item"])


def on_item_deleted(s: Session, ev: ServerEvent, now: float) -> None:
    s._conversation.item_deleted(ev.data["item_id"])


def on_user_transcript_failed(s: Session, ev: ServerEvent, now: float) -> None:
    err = ev.data.get("error")
    message = err.get("message") if isinstance(err, dict) else None
    log.warning("the user's speech could not be transcribed: %s", message or "no reason given")


def on_user_transcript(s: Session, ev: ServerEvent, now: float) -> None:
    s._actions.append(Transcript("user", ev.data["transcript"]))


def on_response_created(s: Session, ev: ServerEvent, now: float) -> None:
    s._reply.created(ev.data["response"]["id"])
    s._transcript_parts.clear()
    s._refresh()


def on_function_call(s: Session, ev: ServerEvent, now: float) -> None:
    call_id = ev.data["call_id"]
    name = ev.get_str("name")
    if not s._reply.active:
        log.info("function call %s (%s) ignored: its response was cancelled", call_id, name)
        return
    s._reply.calls += 1
    s._calls_running.add(call_id)
    log.info("function call %s(%s)", name, ev.data["arguments"], extra={"TURN_ID": s.turn_id})
    s._actions.append(CallTool(call_id, name, ev.data["arguments"]))
    s._refresh()


def on_audio_delta(s: Session, ev: ServerEvent, now: float) -> None:
    reply = s._reply
    if not reply.active or s._ignore_turn:
        return
    item_id = ev.data["item_id"]
    if item_id not in reply.audio_items:
        reply.audio_items.append(item_id)
    s._received_ms[item_id] = s._received_ms.get(item_id, 0.0) + len(ev.audio) / BYTES_PER_MS
    s._awaiting_reply = False
    s._playing = True
    s._actions.append(Play(item_id, ev.audio))
    s._refresh()


def on_transcript_delta(s: Session, ev: ServerEvent, now: float) -> None:
    if s._reply.active:
        s._transcript_parts.append(ev.data["delta"])


def on_transcript_done(s: Session, ev: ServerEvent, now: float) -> None:
    text = ev.get_str("transcript") or ev.get_str("text") or "".join(s._transcript_parts)
    s._transcript_parts.clear()
    if text and not s._reply.cancelled:
        s._actions.append(Transcript("agent", text))


def on_response_done(s: Session, ev: ServerEvent, now: float) -> None:
    response = ev.data["response"]
    status = response.get("status")
    if status == "failed":
        log.error(
            "response failed: %s", response.get("status_details"), extra={"EVENT_TYPE": ev.type}
        )
    calls = s._reply.done()
    s._awaiting_reply = False
    s._last_activity = now
    if s._playing:
        s._actions.append(EndOfReply())
    if calls and status != "cancelled":
        # Every call of this response is answered before the one response.create.
        s._tools_need_response = True
    if s._reply.pending_create:
        s._reply.pending_create = False
        s._tools_need_response = False  # this create covers the tool outputs too
        s._request_response(now)
        s._awaiting_reply = True
    else:
        s._maybe_continue_after_tools(now)
    s._prune()
    s._refresh()


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

Handler = Callable[["Session", ServerEvent, float], None]

HANDLERS: dict[str, Handler] = {
    "session.created": on_session_created,
    "session.updated": on_session_updated,
    "error": on_error,
    "input_audio_buffer.speech_started": on_speech_started,
    "input_audio_buffer.speech_stopped": on_speech_stopped,
    "input_audio_buffer.timeout_triggered": on_timeout_triggered,
    "conversation.item.input_audio_transcription.completed": on_user_transcript,
    "conversation.item.input_audio_transcription.failed": on_user_transcript_failed,
    "conversation.item.added": on_item_added,
    "conversation.item.deleted": on_item_deleted,
    "response.created": on_response_created,
    "response.function_call_arguments.done": on_function_call,
    "response.output_audio.delta": on_audio_delta,
    "response.output_audio_transcript.delta": on_transcript_delta,
    "response.output_audio_transcript.done": on_transcript_done,
    "response.output_text.delta": on_transcript_delta,
    "response.output_text.done": on_transcript_done,
    "response.done": on_response_done,
}
