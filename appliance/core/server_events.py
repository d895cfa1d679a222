"""What the session does with each server event: the handled and the knowingly ignored.

Every server event type the seeds name is either handled (``HANDLERS``, functions of the
``Session`` and the event) or ignored with the reason (``IGNORED``); anything else is
logged at debug level by the session. The handlers are the session's own code, kept here so
that the session module holds the inputs and the one place its state changes.
Imports the standard library and ``appliance.core``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from appliance.core.actions import (
    CallTool,
    EndOfReply,
    Play,
    Reconnect,
    Send,
    Transcript,
    TurnTimings,
)
from appliance.core.confirmed import TurnTerms, quoted_key, turn_detection_of, without
from appliance.core.protocol import (
    AppendAudio,
    CreateResponse,
    ServerEvent,
    SessionUpdate,
    UserText,
)
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
    """Work from what the service configured, not from what was asked (``confirmed``)."""
    terms = s._terms
    terms.rejected, terms.retry_at, terms.retries = "", None, 0
    reported, td = turn_detection_of(ev.data["session"])
    opts = s._options
    if not reported:  # not echoed: as asked
        turns = TurnTerms(not opts.local_turns, opts.server_creates, opts.server_interrupts)
    elif td is None:
        if not opts.local_turns:
            log.error("the service turned its turn detection off; [gate] mode \"always\" "
                      "needs it: no turn will end")
        turns = TurnTerms()
    else:
        creates = td.get("create_response", True) is not False
        interrupts = td.get("interrupt_response", True) is not False
        turns = TurnTerms(True, creates, interrupts)
        if opts.local_turns and not (creates or interrupts):
            turns = TurnTerms()  # on, but it neither answers nor interrupts: the device's turns
        elif opts.local_turns and not terms.quiet_asked:
            terms.quiet_asked = True
            s._habits.ignores_null_turn_detection = True
            log.warning(
                "the service kept its turn detection (%s) although the daemon sent null; "
                "asking it to leave turns to the device",
                td.get("type") or "?",
            )
            s.session_update({"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            return  # configured once that is confirmed
        elif opts.local_turns:
            log.warning(
                "the service keeps its turn detection (%s) whatever the daemon asks: turns "
                "end when the service says so, not at the device's hang-over",
                td.get("type") or "?",
            )
    if turns != terms.turns:
        log.info(
            "turns end %s", "at the service" if turns.server_turns else "at the device",
            extra={"SESSION_ID": s.session_id},
        )
    terms.turns = turns
    if not s._configured:
        became_configured(s, now)
    else:
        s._refresh()


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
    """An error is handled by the client event it is about (``error.event_id``)."""
    err = ev.data["error"]
    code = err.get("code") or ""
    about = err.get("event_id")  # the client event the error is about (not the error's own)
    sent = s.sent_event(about) if isinstance(about, str) else None
    if sent is None and not about and not s._configured and s._connected:
        sent = s._last_update  # a service that names no event: the update is what is pending
    if code == "response_cancel_not_active":
        log.debug("response.cancel arrived after the response ended", extra={"ERROR_CODE": code})
        return
    if isinstance(sent, SessionUpdate):
        update_refused(s, sent, err, now)
        return
    if code == "conversation_already_has_active_response" and (
        sent is None or isinstance(sent, CreateResponse)
    ):
        # The service made a response itself (its turn detection, or its answer to tool
        # outputs) before ours arrived; it answers the same input, so ours is dropped.
        if sent is not None and sent.event_id == s._tool_create_id:
            s._habits.server_answers_tools = True
        log.info(
            "the service already has a response under way; the daemon's response.create "
            "was not needed%s",
            " (it answers tool outputs by itself)" if s._habits.server_answers_tools else "",
            extra={"ERROR_CODE": code},
        )
        return
    param = err.get("param") or ""
    where = f" (param {param}: {config_key_for(param, s._options.local_turns)})" if param else ""
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
    if isinstance(sent, CreateResponse):
        s._reply.refused()  # no response is coming for it
        s._awaiting_reply = False
        s._refresh()
    elif code == "input_audio_buffer_commit_empty":
        s._awaiting_reply = False
        s._refresh()


def update_refused(
    s: Session, update: SessionUpdate, err: Mapping[str, Any], now: float
) -> None:
    """The service refused one of the daemon's ``session.update`` events."""
    message = str(err.get("message") or err.get("code") or "no reason given")
    param = str(err.get("param") or "")
    habits, terms = s._habits, s._terms
    if (
        "providerData" in update.session
        and "providerData" in f"{param} {message}"
        and not habits.provider_data_refused
    ):
        habits.provider_data_refused = True
        log.warning(
            "the service refused session.providerData (%s); it is sent without "
            "Inworld's extensions from now on",
            message,
        )
        s._send_update(dict(update.session), whole=update.event_id in terms.whole_ids)
        return
    whole = update.event_id in terms.whole_ids
    key = param or quoted_key(update.session, message)
    where = f" ({key}: {config_key_for(key, s._options.local_turns)})" if key else ""
    if update.event_id == terms.quiet_event_id:
        log.warning("the service refused a quiet turn detection (%s): turns end when the "
                    "service says so", message)
        terms.turns = TurnTerms(True, True, True)
        if not s._configured:
            became_configured(s, now)
        return
    fallback = without(update.session, key) if key and whole else None
    if fallback is not None and "not a config key" not in where:
        log.error(
            "the service refused the session: %s%s; sent without it (the service's default "
            "applies until the config is fixed)",
            message, where, extra={"EVENT_TYPE": "error"},
        )
        # Shown with the state (STATUS=) until a reload sends the whole session again.
        terms.degraded = f"{key} refused: {message}"
        s._send_update(fallback, whole=True)
        s._refresh()
        return
    if s._configured:
        log.error(
            "the service refused the reloaded session settings: %s%s; the session keeps "
            "its previous settings",
            message, where, extra={"EVENT_TYPE": "error"},
        )
        return
    delay = terms.retry_delay()
    terms.rejected = f"session refused: {message}"
    terms.retry_at = now + delay
    log.error(
        "the service refused the session: %s%s; sent again in %.0f s, or at once after "
        "a reload",
        message, where, delay, extra={"EVENT_TYPE": "error"},
    )
    s._refresh()


def on_speech_started(s: Session, ev: ServerEvent, now: float) -> None:
    turns = s._terms.turns
    if not turns.server_turns:
        return
    # With server turns this is the only speech onset we get, so "local" uses it too.
    if s._agent_audible() and s._options.barge_in is not BargeIn.OFF:
        s._interrupt(send_cancel=not turns.server_interrupts)
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
    if not s._terms.turns.server_turns:
        return
    s._user_speaking = False
    s._last_activity = now
    if s._terms.turns.server_creates:
        s._awaiting_reply = True
        s._turn_end_at = (now, None)  # the server's own end of turn: not measured here
        s._reply.server_will_create(now)
    s._refresh()


def on_timeout_triggered(s: Session, ev: ServerEvent, now: float) -> None:
    # server_vad's idle_timeout_ms: no speech for that long. The server commits the
    # silence and may answer it ("are you still there?"); nobody is speaking any more.
    s._user_speaking = False
    if not s._terms.turns.server_creates:
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
    s._transcribed.clear()
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
    # One buffer per stream and item: with audio+text output both streams come, interleaved.
    if s._reply.active:
        s._transcript_parts.setdefault((ev.type, ev.get_str("item_id")), []).append(
            ev.data["delta"]
        )


def on_transcript_done(s: Session, ev: ServerEvent, now: float) -> None:
    """One transcript per item: the first stream to finish gives it (the audio transcript,
    or the text of a text-only reply); the other stream's copy is not logged again."""
    item_id = ev.get_str("item_id")
    delta_type = ev.type.removesuffix(".done") + ".delta"
    parts = s._transcript_parts.pop((delta_type, item_id), [])
    if item_id in s._transcribed:
        return
    text = ev.get_str("transcript") or ev.get_str("text") or "".join(parts)
    if text and not s._reply.cancelled:
        s._transcribed.add(item_id)
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
