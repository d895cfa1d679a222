"""Exactly one answer per turn, whatever the service does: the session works from what
``session.updated`` confirms and handles errors by the event they are about. Synchronous."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from session_steps import feed, new_session, ready_session, sent, sent_types

from appliance.core.confirmed import QUIET_TURN_DETECTION
from appliance.core.session import CallTool, Send, Session, StateChanged, Transcript
from appliance.core.state import State

PCM = b"\x10\x00" * 4800  # 200 ms
SERVER_VAD = {"type": "server_vad", "create_response": True, "interrupt_response": True}


def echo(td: Any) -> dict[str, Any]:
    return {"type": "session.updated", "session": {"audio": {"input": {"turn_detection": td}}}}


def ids(s: Session) -> list[tuple[str, str]]:
    return [(a.event.type, a.event.event_id) for a in s.take() if isinstance(a, Send)]


def local_turn(s: Session, start: float = 0.0) -> list[str]:
    s.speech_started(start)
    s.user_audio(PCM)
    s.speech_stopped(200, start + 1.0)
    return sent_types(s.take())


def created_done(s: Session, rid: str, now: float = 2.0, calls: int = 0) -> None:
    feed(s, {"type": "response.created", "response": {"id": rid}}, now)
    for n in range(calls):
        feed(s, {"type": "response.function_call_arguments.done", "call_id": f"c{n}", "name": "f", "arguments": "{}"}, now)
    feed(s, {"type": "response.done", "response": {"id": rid, "status": "completed"}}, now)


def connect(s: Session) -> list[dict[str, Any]]:
    s.connecting()
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_1"}})
    return sent(s.take())


# --- turn detection -------------------------------------------------------------------------


def test_turn_detection_kept_on_is_quietened_once_and_turns_stay_local() -> None:
    s = new_session({"gate": {"mode": "vad"}})
    assert connect(s)[0]["session"]["audio"]["input"]["turn_detection"] is None
    feed(s, echo(SERVER_VAD))  # null not honoured
    again = sent(s.take())
    assert [e["session"]["audio"]["input"]["turn_detection"] for e in again] == [dict(QUIET_TURN_DETECTION)]
    assert s.state is State.CONNECTING  # nothing is trusted until confirmed
    feed(s, echo({**QUIET_TURN_DETECTION, "threshold": 0.5}))
    assert s.state is State.READY  # type: ignore[comparison-overlap]  # changed by the call above
    assert local_turn(s) == ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]
    # The service's own events for that turn change nothing: one response.
    feed(s, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900})
    assert sent_types(s.take()) == []
    # The next connection sends the quiet detector at once (the run learnt it).
    s.disconnected("gone")
    assert connect(s)[0]["session"]["audio"]["input"]["turn_detection"] == dict(QUIET_TURN_DETECTION)


def test_turn_detection_that_cannot_be_quietened_is_left_to_the_service(caplog: pytest.LogCaptureFixture) -> None:
    s = new_session({"gate": {"mode": "vad"}})
    connect(s)
    feed(s, echo(SERVER_VAD))
    s.take()
    with caplog.at_level(logging.WARNING):
        feed(s, echo(SERVER_VAD))  # the quiet one was ignored too
    assert s.state is State.READY
    assert "turns end when the service says so" in caplog.text
    assert local_turn(s) == ["input_audio_buffer.append"]  # no commit, no create on top
    feed(s, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900}, 1.5)
    assert s.response_deadline() is not None  # the service's response is expected
    created_done(s, "r1")
    assert sent_types(s.take()) == []


def test_server_turns_follow_what_the_service_confirmed() -> None:
    s = new_session({"gate": {"mode": "always"}, "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}})
    connect(s)
    feed(s, echo({"type": "server_vad", "create_response": False, "interrupt_response": True}))
    feed(s, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 1.0)
    feed(s, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900}, 2.0)
    assert s.response_deadline() is None  # it said it does not create responses


# --- refused session.update ------------------------------------------------------------------


def refuse(s: Session, event_id: str, message: str, param: str | None = None, now: float = 0.0) -> None:
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": message, "param": param, "event_id": event_id}}, now)


def test_a_param_less_refusal_names_the_key_the_message_quotes_and_the_rest_is_used(caplog: pytest.LogCaptureFixture) -> None:
    s = new_session({"session": {"audio": {"output": {"voice": "Nope"}}}})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "x"}})
    [(kind, evt)] = ids(s)
    with caplog.at_level(logging.ERROR):
        refuse(s, evt, "Unknown voice 'Nope'.")
    assert caplog.messages == [
        "the service refused the session: Unknown voice 'Nope'. (session.audio.output.voice: "
        "config key session.audio.output.voice); sent without it (the service's default applies "
        "until the config is fixed)"
    ]
    [again] = sent(s.take())
    assert "voice" not in again["session"]["audio"]["output"]
    feed(s, echo(None))
    refused = "session.audio.output.voice refused: Unknown voice 'Nope'."
    assert [a for a in s.take() if isinstance(a, StateChanged)] == [StateChanged(State.READY, refused)]
    # A reload sends the whole session again; accepted, the detail goes.
    s.reconfigure(new_session({"session": {"audio": {"output": {"voice": "Clive"}}}})._options)
    [update] = sent(s.take())
    assert update["session"]["audio"]["output"]["voice"] == "Clive"
    feed(s, echo(None))
    assert s.state is State.READY and s._detail == ""


def test_an_unexplained_refusal_is_an_error_state_retried_with_backoff_and_after_a_reload() -> None:
    s = new_session({})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "x"}})
    [(_, evt)] = ids(s)
    refuse(s, evt, "Something is wrong.", now=10.0)
    changes = [a for a in s.take() if isinstance(a, StateChanged)]
    assert changes == [StateChanged(State.ERROR, "session refused: Something is wrong.")]
    assert s.next_tick() == 15.0
    s.tick(14.9)
    assert ids(s) == []  # not before its time: no hot loop
    s.tick(15.0)
    [(kind, evt)] = ids(s)
    assert kind == "session.update"
    refuse(s, evt, "Something is wrong.", now=15.1)
    assert s.next_tick() == pytest.approx(25.1)  # 5 s, then 10 s, ...
    s.take()
    # A reload may have fixed the cause: sent at once.
    s.reconfigure(new_session({"session": {"instructions": "Hi."}})._options)
    [update] = sent(s.take())
    assert update["session"]["instructions"] == "Hi."
    feed(s, echo(None), 16.0)
    assert s.state is State.READY and s.next_tick() == 3300.0  # only the renewal is due


def test_a_refused_reload_keeps_the_session(caplog: pytest.LogCaptureFixture) -> None:
    s = ready_session({})
    s.reconfigure(s._options, {"instructions": "x"})
    [(_, evt)] = ids(s)
    with caplog.at_level(logging.ERROR):
        refuse(s, evt, "Bad.", "session.instructions")
    assert "keeps its previous settings" in caplog.text and s.state is State.READY


# --- tool outputs and providerData -------------------------------------------------------------


def test_provider_data_is_passed_through_with_auto_tool_response_set_explicitly() -> None:
    s = new_session({"session": {"providerData": {"something": {"a": 1}}}})
    update = connect(s)[0]
    assert update["session"]["providerData"] == {"something": {"a": 1}, "auto_tool_response": False}
    # With tools the daemon depends on it; with neither tools nor the table nothing is sent.
    s = new_session({"tools": [{"name": "get_time"}]})
    assert connect(s)[0]["session"]["providerData"] == {"auto_tool_response": False}
    assert "providerData" not in connect(new_session({}))[0]["session"]


def tool_round(s: Session, rid: str, now: float) -> list[str]:
    """A response with one function call; its result; what the session sent for it."""
    created_done(s, rid, now, calls=1)
    [call] = [a for a in s.take() if isinstance(a, CallTool)]
    s.tool_result(call.call_id, "{}", now)
    return sent_types(s.take())


def test_with_auto_tool_response_set_the_service_creates_the_response_after_tools() -> None:
    s = ready_session({"session": {"providerData": {"auto_tool_response": True}}})
    assert tool_round(s, "r1", 1.0) == ["conversation.item.create"]  # no response.create
    assert s.response_deadline() is not None  # but one is expected


def test_a_service_that_answers_tools_anyway_is_learnt_from_its_refusal() -> None:
    s = ready_session({})
    created_done(s, "r1", 1.0, calls=1)
    [call] = [a for a in s.take() if isinstance(a, CallTool)]
    s.tool_result(call.call_id, "{}", 1.0)
    events = ids(s)
    assert [k for k, _ in events] == ["conversation.item.create", "response.create"]
    feed(s, {"type": "response.created", "response": {"id": "r2"}}, 1.1)  # the service's own
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "conversation_already_has_active_response", "message": "busy", "event_id": events[1][1]}}, 1.1)
    feed(s, {"type": "response.done", "response": {"id": "r2", "status": "completed"}}, 1.2)
    assert ids(s) == []  # not asked again: the service's response answered
    assert tool_round(s, "r3", 2.0) == ["conversation.item.create"]  # learnt


def test_a_service_that_refuses_provider_data_gets_the_session_without_it() -> None:
    s = new_session({"tools": [{"name": "get_time"}]})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "x"}})
    [(_, evt)] = ids(s)
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "unknown_parameter", "message": "Unknown parameter: 'session.providerData'.", "param": "session.providerData", "event_id": evt}})
    [again] = sent(s.take())
    assert "providerData" not in again["session"] and again["session"]["audio"]
    feed(s, echo(None))
    assert s.state is State.READY


# --- transcripts -------------------------------------------------------------------------------


def test_audio_and_text_output_give_one_transcript_per_response() -> None:
    s = ready_session({})
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    for word in ("Hello ", "there."):
        feed(s, {"type": "response.output_audio_transcript.delta", "item_id": "i1", "delta": word})
        feed(s, {"type": "response.output_text.delta", "item_id": "i1", "delta": word})
        feed(s, {"type": "response.output_audio.delta", "item_id": "i1", "delta": base64.b64encode(PCM).decode()})
    feed(s, {"type": "response.output_audio_transcript.done", "item_id": "i1"})
    feed(s, {"type": "response.output_text.done", "item_id": "i1"})
    assert [a for a in s.take() if isinstance(a, Transcript)] == [Transcript("agent", "Hello there.")]


def test_provider_data_must_be_a_table() -> None:
    from appliance.config import parse_config
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError, match=r"session\.providerData: expected a table"):
        parse_config({"session": {"providerData": 5}})
