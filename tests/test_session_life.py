"""The session core beyond single turns: tools, greeting, text, deadlines, renewal, context
policy, error codes and the event catalogue. Synchronous: time is an input."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from session_steps import feed, ready_session, sent, sent_types

from appliance.core.session import (
    IGNORED,
    CallTool,
    Play,
    Reconnect,
    Session,
    StateChanged,
    Transcript,
)
from appliance.core.state import State

PCM = b"\x10\x00" * 2400
ROOT = Path(__file__).resolve().parents[1]


def call_done(call_id: str, name: str, args: str = "{}") -> dict[str, Any]:
    return {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": f"fc_{call_id}", "output_index": 0, "call_id": call_id, "name": name, "arguments": args}


def item(item_id: str, kind: str = "message", role: str = "assistant", beta: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": item_id, "type": kind}
    if kind == "message":
        body["role"] = role
    return {"type": "conversation.item.created" if beta else "conversation.item.added", "item": body}


def done(rid: str = "r1", status: str = "completed") -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": status}}


# --- function calls ---------------------------------------------------------------------------


def test_two_calls_are_both_answered_before_one_response_create() -> None:
    s = ready_session({"tools": [{"name": "get_time"}]})
    s.take()
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    feed(s, call_done("c1", "get_time"))
    feed(s, call_done("c2", "weather", '{"city":"Paris"}'))
    actions = s.take()
    assert [a for a in actions if isinstance(a, CallTool)] == [CallTool("c1", "get_time", "{}"), CallTool("c2", "weather", '{"city":"Paris"}')]
    assert s.state is State.THINKING
    s.tool_result("c2", '{"temp": 12}', 1.0)  # finishes first
    assert sent(s.take()) == [{"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c2", "output": '{"temp": 12}'}}]
    feed(s, done(), 1.1)
    assert sent_types(s.take()) == []  # c1 still runs: no response.create yet
    assert s.state is State.THINKING
    s.tool_result("c1", '{"time": "noon"}', 1.5)
    assert sent_types(s.take()) == ["conversation.item.create", "response.create"]
    assert s.state is State.THINKING
    s.tool_result("c1", "again", 1.6)  # a duplicate is ignored
    assert s.take() == []


def test_results_before_response_done_create_the_response_at_done() -> None:
    s = ready_session()
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    feed(s, call_done("c1", "get_time"))
    s.tool_result("c1", "{}", 0.5)
    assert sent_types(s.take()) == ["conversation.item.create"]
    feed(s, done(), 0.6)
    assert sent_types(s.take()) == ["response.create"]


def test_results_of_a_lost_session_are_dropped_and_cancelled_calls_not_run() -> None:
    s = ready_session()
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    feed(s, call_done("c1", "get_time"))
    s.disconnected("connection lost")
    s.take()
    s.tool_result("c1", "{}", 1.0)
    assert sent_types(s.take()) == []
    s = ready_session({"gate": {"mode": "vad"}})
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    feed(s, {"type": "response.output_audio.delta", "item_id": "i1", "delta": base64.b64encode(PCM).decode()})
    s.speech_started(1.0)  # barge-in cancels the response
    feed(s, call_done("c9", "get_time"))
    assert not [a for a in s.take() if isinstance(a, CallTool)]


# --- greeting and text --------------------------------------------------------------------------


def test_greeting_once_per_run_not_after_a_reconnect() -> None:
    s = ready_session({"session_policy": {"greeting": "Greet the user"}}, drain=False)
    actions = s.take()
    assert sent(actions)[1:] == [
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Greet the user"}]}},
        {"type": "response.create"},
    ]
    assert s.state is State.THINKING
    s.disconnected("lost")
    s.connecting()
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_2"}})
    feed(s, {"type": "session.updated", "session": {}})
    assert sent_types(s.take()) == ["session.update"]


def test_text_output_is_logged_like_a_transcript() -> None:
    s = ready_session({"session": {"output_modalities": ["text"]}})
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    for piece in ("It is ", "noon."):
        feed(s, {"type": "response.output_text.delta", "item_id": "i1", "delta": piece})
    feed(s, {"type": "response.output_text.done", "item_id": "i1"})
    feed(s, done())
    assert [a for a in s.take() if isinstance(a, Transcript)] == [Transcript("agent", "It is noon.")]
    assert s.state is State.READY


# --- deadlines and renewal ----------------------------------------------------------------------


def test_silence_while_a_response_is_expected_means_reconnect() -> None:
    s = ready_session({"realtime": {"response_timeout_s": 5}})
    s.tick(100.0)
    assert s.take() == []  # idle: silence is fine
    s.speech_started(100.0)
    s.user_audio(PCM)
    s.speech_stopped(500, 101.0)
    s.take()
    s.tick(105.9)
    assert s.take() == []
    s.tick(106.0)
    assert s.take() == [Reconnect("no server event for 5 s while a response was expected")]
    s.tick(107.0)
    assert s.take() == []  # said once
    # Events push the deadline out.
    s = ready_session({"realtime": {"response_timeout_s": 5}})
    feed(s, {"type": "response.created", "response": {"id": "r1"}}, 10.0)
    feed(s, {"type": "response.output_audio_transcript.delta", "item_id": "i", "delta": "a"}, 14.0)
    s.take()
    s.tick(18.5)
    assert s.take() == []
    assert s.response_deadline() == 19.0


def test_renewal_waits_for_a_quiet_moment() -> None:
    s = ready_session({"realtime": {"renew_after_s": 60}}, now=0.0)
    s.take()
    s.speech_started(59.0)
    s.user_audio(PCM)
    s.take()
    s.tick(61.0)
    assert s.take() == []  # mid-turn
    s.speech_stopped(500, 62.0)
    feed(s, {"type": "response.created", "response": {"id": "r1"}}, 62.1)
    feed(s, {"type": "response.output_audio.delta", "item_id": "i1", "delta": base64.b64encode(PCM).decode()}, 62.2)
    feed(s, done(), 62.3)
    s.take()
    s.tick(63.0)
    assert s.take() == []  # still playing
    s.playback_idle(64.0)
    s.take()
    s.tick(66.9)
    assert s.take() == []  # quiet for less than 3 s
    s.tick(67.0)
    assert s.take() == [Reconnect("session renewal", immediate=True)]
    s.tick(68.0)
    assert s.take() == []
    s.disconnected("session renewal", planned=True)
    assert s.state is State.CONNECTING  # not "offline" for a planned renewal


def test_next_tick_is_when_a_deadline_falls_due() -> None:
    """The daemon sleeps until ``next_tick``: each deadline ``tick`` acts on is there."""
    s = ready_session({"realtime": {"renew_after_s": 60, "response_timeout_s": 5}}, now=0.0)
    assert s.next_tick() == 60.0  # the renewal, the session being quiet long before
    s.speech_started(10.0)
    assert s.next_tick() is None  # mid-turn: the turn's own events say when
    s.user_audio(PCM)
    s.speech_stopped(500, 11.0)
    assert s.next_tick() == 16.0  # the response deadline
    feed(s, {"type": "response.created", "response": {"id": "r1"}}, 12.0)
    assert s.next_tick() == 17.0  # pushed out by the event
    feed(s, done(), 13.0)
    s.take()
    assert s.next_tick() == 60.0
    s.tick(59.9)
    assert s.take() == []
    s.tick(60.0)
    assert s.take() == [Reconnect("session renewal", immediate=True)]
    assert s.next_tick() is None  # asked once
    # Renewed late in a busy stretch: due at the quiet moment after the last activity.
    s = ready_session({"realtime": {"renew_after_s": 60}}, now=0.0)
    s.playback_idle(59.0)
    assert s.next_tick() == 62.0
    s.disconnected("gone")
    assert s.next_tick() is None


def test_session_expired_error_reconnects_at_once() -> None:
    s = ready_session()
    s.take()
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired", "message": "Your session hit the maximum duration of 60 minutes."}})
    assert s.take() == [Reconnect("server ended the session (session_expired)", immediate=True)]


# --- conversation policy -----------------------------------------------------------------------


def turn(s: Session, n: int, now: float) -> None:
    feed(s, item(f"u{n}", role="user"), now)
    feed(s, {"type": "response.created", "response": {"id": f"r{n}"}}, now)
    feed(s, item(f"a{n}", beta=n % 2 == 0), now)  # the beta name is tracked too
    feed(s, done(f"r{n}"), now)


def test_at_most_n_turns_are_kept() -> None:
    s = ready_session({"session_policy": {"max_turns": 2}})
    turn(s, 1, 1.0)
    feed(s, item("fc1", kind="function_call"), 1.0)
    feed(s, item("fo1", kind="function_call_output"), 1.0)
    turn(s, 2, 2.0)
    s.take()
    turn(s, 3, 3.0)
    assert [e.get("item_id") for e in sent(s.take())] == ["u1", "a1", "fc1", "fo1"]
    for gone in ("u1", "a1", "fc1", "fo1"):
        feed(s, {"type": "conversation.item.deleted", "item_id": gone})
    turn(s, 4, 4.0)
    assert [e.get("item_id") for e in sent(s.take())] == ["u2", "a2"]


def test_fresh_conversation_after_idle() -> None:
    s = ready_session({"session_policy": {"fresh_after_idle_s": 600, "max_turns": 0}})
    turn(s, 1, 10.0)
    turn(s, 2, 20.0)
    s.take()
    s.tick(619.0)
    assert s.take() == []
    s.tick(620.0)
    assert [(e["type"], e["item_id"]) for e in sent(s.take())] == [("conversation.item.delete", i) for i in ("u1", "a1", "u2", "a2")]
    s.tick(1300.0)
    assert s.take() == []  # nothing left to delete


# --- server turn detection -----------------------------------------------------------------------


def test_idle_timeout_triggered_leaves_listening() -> None:
    s = ready_session({"gate": {"mode": "always"}, "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000, "create_response": False}}}}})
    feed(s, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    assert s.state is State.LISTENING
    feed(s, {"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 0, "audio_end_ms": 8000, "item_id": "u2"})
    assert s.state is State.READY  # type: ignore[comparison-overlap]  # changed by the call above


# --- errors and the event catalogue ------------------------------------------------------------


def test_invalid_value_names_the_param_and_the_config_key(caplog: pytest.LogCaptureFixture) -> None:
    s = ready_session({})  # errors about no event the session knows: logged as they are
    with caplog.at_level(logging.ERROR):
        feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "Unknown model.", "param": "session.audio.input.transcription.model"}})
        feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "Bad name.", "param": "session.tools[1].name"}})
        feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "Bad rate.", "param": "session.audio.output.format.rate"}})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "server error invalid_request_error/invalid_value: Unknown model. (param session.audio.input.transcription.model: config key session.audio.input.transcription.model)",
        "server error invalid_request_error/invalid_value: Bad name. (param session.tools[1].name: config key tools[1].name)",
        "server error invalid_request_error/invalid_value: Bad rate. (param session.audio.output.format.rate: set by the daemon itself, not a config key)",
    ]
    assert s.state is State.READY  # the server's defaults apply; keep working


def test_active_response_conflict_leaves_the_answer_to_the_services_response() -> None:
    s = ready_session({"gate": {"mode": "vad"}})
    s.speech_started(0.0)
    s.user_audio(PCM)
    s.speech_stopped(500, 1.0)
    assert sent_types(s.take())[-1] == "response.create"
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "conversation_already_has_active_response", "message": "busy"}})
    feed(s, {"type": "response.created", "response": {"id": "r_other"}})
    assert sent_types(s.take()) == []
    feed(s, done("r_other"))
    assert sent_types(s.take()) == []  # the service's response answered the turn: not twice


# Every server event named in the API docs the project was built from (the websocket
# reference's event list and examples, the session guide, the quickstart), plus the GA
# events they imply (function calls, content parts, buffer confirmations).
SEED_SERVER_EVENTS = {
    "session.created", "session.updated", "error",
    "conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
    "conversation.item.deleted", "conversation.item.truncated",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered", "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "response.created", "response.done", "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done",
    "response.output_text.delta", "response.output_text.done",
    "response.output_audio.delta", "response.output_audio.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "rate_limits.updated",
}  # fmt: skip


def test_every_server_event_in_the_seeds_is_handled_or_knowingly_ignored(caplog: pytest.LogCaptureFixture) -> None:
    from appliance.core.server_events import HANDLERS as _HANDLERS

    assert SEED_SERVER_EVENTS - set(_HANDLERS) - set(IGNORED) == set()
    assert not set(_HANDLERS) & set(IGNORED)
    # docs/server-events.md lists the same split.
    listed = (ROOT / "docs" / "server-events.md").read_text()
    for name in set(_HANDLERS) | set(IGNORED):
        assert f"`{name}`" in listed, name
    s = ready_session()
    s.take()
    with caplog.at_level(logging.DEBUG, logger="appliance.core.session"):
        for name in IGNORED:
            feed(s, {"type": name, "item_id": "x", "item": {"id": "x"}, "response": {"id": "r"}, "delta": "", "audio_end_ms": 0})
        feed(s, {"type": "response.brand_new_event"})
    assert s.take() == []
    assert [r.getMessage() for r in caplog.records] == ["unknown server event response.brand_new_event"]


def test_beta_audio_names_are_played() -> None:
    s = ready_session()
    feed(s, {"type": "response.created", "response": {"id": "r1"}})
    feed(s, {"type": "response.audio.delta", "item_id": "i1", "delta": base64.b64encode(PCM).decode()})
    feed(s, {"type": "response.audio_transcript.delta", "item_id": "i1", "delta": "Hi"})
    feed(s, {"type": "response.audio_transcript.done", "item_id": "i1"})
    actions = s.take()
    assert [a.item_id for a in actions if isinstance(a, Play)] == ["i1"]
    assert Transcript("agent", "Hi") in actions
    assert StateChanged(State.SPEAKING) in actions


# --- reconnect delays ---------------------------------------------------------------------------


def test_backoff_full_jitter_first_within_1s_cap_30s_reset_after_healthy() -> None:
    from appliance.core.backoff import Backoff

    top = Backoff(rand=lambda: 0.999999)
    ceilings = [round(top.next(), 3) for _ in range(8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    top.reset()
    assert top.next() <= 1.0
    assert Backoff(rand=lambda: 0.0).next() == 0.0  # full jitter: anywhere from 0
    import random

    rng = random.Random(7)
    delays = [Backoff(rand=rng.random).next() for _ in range(2000)]
    assert max(delays) <= 1.0 and 0.45 < sum(delays) / len(delays) < 0.55  # uniform in [0, 1]
