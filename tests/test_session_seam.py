"""The session's typed seam: client events with ids the session assigns and remembers,
typed server events (malformed ones included) in, its own frozen settings, and the explicit
response lifecycle. Synchronous: no sockets, no sleeps; no JSON anywhere in here."""

from __future__ import annotations

import logging

import pytest
from session_steps import ready_session

from appliance.config import parse_config, session_settings
from appliance.core.protocol import (
    AppendAudio,
    ClientEvent,
    Commit,
    CreateResponse,
    Malformed,
    ServerEvent,
    SessionUpdate,
    audio_delta,
)
from appliance.core.reply import Phase, Reply
from appliance.core.session import RECENT_EVENTS, Send, Session
from appliance.core.settings import BargeIn, SessionOptions
from appliance.core.state import State

PCM = b"\x10\x00" * 2400


def sends(s: Session) -> list[ClientEvent]:
    return [a.event for a in s.take() if isinstance(a, Send)]


def test_client_events_carry_ids_the_session_remembers() -> None:
    s = ready_session(drain=False)
    update = sends(s)[0]
    assert isinstance(update, SessionUpdate) and update.event_id == "evt_1"
    s.speech_started(1.0)
    s.user_audio(PCM)
    s.speech_stopped(500, 2.0)
    events = sends(s)
    assert [type(e) for e in events] == [AppendAudio, Commit, CreateResponse]
    # Appends are the hot path: no id; the rest are numbered in order and can be looked up.
    assert events[0].event_id == ""
    assert [e.event_id for e in events[1:]] == ["evt_2", "evt_3"]
    assert s.sent_event("evt_3") is events[2]
    assert s.sent_event("evt_99") is None


def test_the_record_of_sent_events_is_bounded() -> None:
    s = ready_session()
    for turn in range(RECENT_EVENTS):
        s.speech_started(turn)
        s.user_audio(PCM)
        s.speech_stopped(500, turn + 0.5)
        s.server_event(ServerEvent("response.created", {"response": {"id": f"r{turn}"}}), turn + 0.6)
        s.server_event(ServerEvent("response.done", {"response": {"id": f"r{turn}"}}), turn + 0.7)
    ids = [e.event_id for e in sends(s)[-4:]]
    assert s.sent_event(ids[-1]) is not None
    assert s.sent_event("evt_1") is None  # the session.update, long gone


def test_an_error_names_the_client_event_it_is_about(caplog: pytest.LogCaptureFixture) -> None:
    s = ready_session()
    s.speech_started(1.0)
    s.user_audio(PCM)
    s.speech_stopped(500, 2.0)
    create = sends(s)[-1]
    with caplog.at_level(logging.ERROR):
        s.server_event(ServerEvent("error", {"event_id": "event_7", "error": {
            "type": "invalid_request_error", "code": "x", "message": "no",
            "event_id": create.event_id}}), 2.1)
    assert "(about our response.create)" in caplog.text


def test_malformed_events_are_counted_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    s = ready_session()
    with caplog.at_level(logging.WARNING):
        s.server_event(Malformed("response.done: field 'response.id' is missing", "response.done"), 1.0)
        s.server_event(ServerEvent("response.created", {"response": {"id": "r1"}}), 1.0)
        # A transport's delta with half a sample: counted, not played.
        s.server_event(audio_delta("i1", b"\x01\x02\x03"), 1.1)
    assert s.protocol_errors == 2
    assert "field 'response.id' is missing" in caplog.text
    assert "holds 3 bytes" in caplog.text
    s.server_event(audio_delta("i1", PCM), 1.2)  # typed PCM, as WebRTC and the Voice SDK hand it
    assert s.state is State.SPEAKING


def test_settings_come_from_the_config_through_one_mapping() -> None:
    options = session_settings(parse_config({
        "gate": {"mode": "always", "barge_in": "off"},
        "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}},
        "tools": [{"name": "get_time"}],
        "session_policy": {"max_turns": 3},
    }))
    assert options.barge_in is BargeIn.OFF
    assert not options.local_turns and not options.server_creates and options.server_interrupts
    assert options.max_turns == 3
    assert [t["name"] for t in options.tools] == ["get_time"]
    full = options.full_session()
    assert full["tools"][0]["name"] == "get_time"
    full["audio"] = "rewritten by an adapter"
    assert options.full_session()["audio"] != full["audio"]  # each update gets its own copy
    with pytest.raises(AttributeError):
        options.max_turns = 5  # type: ignore[misc]


def test_a_session_runs_on_settings_alone() -> None:
    s = Session(SessionOptions(greeting="Greet the user"))
    s.connected()
    s.server_event(ServerEvent("session.created", {"session": {"id": "s1"}}), 0.0)
    s.server_event(ServerEvent("session.updated", {"session": {}}), 0.0)
    kinds = [e.type for e in sends(s)]
    assert kinds == ["session.update", "conversation.item.create", "response.create"]
    assert s.state is State.THINKING


def test_the_response_lifecycle_is_one_explicit_phase() -> None:
    reply = Reply()
    assert reply.phase is Phase.IDLE
    assert reply.request(1.0) and reply.phase is Phase.REQUESTED and reply.expected_since == 1.0  # type: ignore[comparison-overlap]  # changed by the call above
    reply.created("r1")
    assert reply.phase is Phase.ACTIVE and reply.expected_since is None
    assert not reply.request(2.0) and reply.pending_create  # waits for this one to be done
    reply.calls += 1
    assert reply.cancel() and reply.phase is Phase.CANCELLED
    assert not reply.cancel()  # once
    assert reply.done() == 1 and reply.phase is Phase.IDLE
    assert reply.done() == 0  # a stray response.done counts no calls twice
    reply.server_will_create(3.0)
    assert reply.phase is Phase.REQUESTED
    reply.refused()  # no response is coming for our create
    assert reply.phase is Phase.IDLE and reply.expected_since is None
    reply.reset()
    assert reply.phase is Phase.IDLE and not reply.pending_create


def test_the_core_has_no_wire_format_and_no_upward_imports() -> None:
    import ast
    import sys
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "appliance" / "core"
    for path in sorted(core.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert name not in ("json", "base64"), f"{path.name} imports {name}"
                assert (
                    name == "__future__"
                    or name.startswith(("appliance.core", "appliance.errors"))
                    or (top in sys.stdlib_module_names and top != "appliance")
                ), f"{path.name} imports {name}"
        assert len(path.read_text().splitlines()) <= 510, f"{path.name} is over ~500 lines"
