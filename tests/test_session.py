"""The session state machine, driven synchronously: no sockets, no sleeps, time is an input."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from session_steps import feed, feed_frame, new_session, ready_session, sent, sent_types

from appliance.core.session import (
    HOLD_BYTES,
    EndOfReply,
    Play,
    Session,
    StateChanged,
    StopPlayback,
    TooShort,
    Transcript,
    TurnTimings,
)
from appliance.core.state import State

PCM_100MS = b"\x10\x00" * 2400


def make(mode: str = "vad", **gate: Any) -> Session:
    return ready_session({"gate": {"mode": mode, **gate}})


def delta(item: str = "item_a", pcm: bytes = PCM_100MS) -> dict[str, Any]:
    return {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": item, "delta": base64.b64encode(pcm).decode()}


def start_reply(s: Session, now: float = 1.0) -> None:
    feed(s, {"type": "response.created", "response": {"id": "resp_1"}}, now)
    feed(s, delta(), now)


def test_connect_sends_session_update_and_becomes_ready() -> None:
    s = new_session({"session": {"instructions": "Be brief."}})
    s.connecting()
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_1"}})
    actions = s.take()
    update = sent(actions)[0]
    assert update["type"] == "session.update"
    assert update["session"]["instructions"] == "Be brief."
    assert update["session"]["audio"]["input"]["turn_detection"] is None  # vad mode: local turns
    assert s.state is State.CONNECTING
    feed(s, {"type": "session.updated", "session": {}})
    assert [a.state for a in s.take() if isinstance(a, StateChanged)] == [State.READY]
    assert s.session_id == "sess_1"


def session_up(s: Session, session_id: str) -> None:
    """A connection comes up and its session is configured."""
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": session_id}})
    feed(s, {"type": "session.updated", "session": {}})


def appended(actions: list[Any]) -> list[bytes]:
    return [base64.b64decode(e["audio"]) for e in sent(actions) if e["type"] == "input_audio_buffer.append"]


FIRST, SECOND = b"\x01\x00" * 960, b"\x02\x00" * 960


def test_a_turn_begun_before_the_session_is_ready_waits_for_it_whole() -> None:
    # Connected, session.update sent, session.updated not yet back: the turn's audio is
    # held and goes out, in order, the moment the session is ready; none of it is lost.
    s = new_session({})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_1"}})
    s.take()
    s.speech_started(0.0)
    s.user_audio(FIRST)
    s.user_audio(SECOND)
    assert sent_types(s.take()) == []
    feed(s, {"type": "session.updated", "session": {}})
    assert appended(s.take()) == [FIRST, SECOND]
    s.speech_stopped(400, now=1.0)
    assert sent_types(s.take()) == ["input_audio_buffer.commit", "response.create"]
    # Begun with no connection at all, through a failed attempt: it goes to the session
    # that comes up.
    s = new_session({})
    s.speech_started(0.0)
    s.user_audio(FIRST)
    s.connected()
    s.disconnected("gone")
    session_up(s, "sess_2")
    s.user_audio(SECOND)
    s.speech_stopped(400, now=1.0)
    actions = s.take()
    assert appended(actions) == [FIRST, SECOND]
    assert "input_audio_buffer.commit" in sent_types(actions)


def test_a_turn_that_cannot_go_whole_is_not_sent() -> None:
    # Half of it went to a connection that dropped: the next session gets none of it.
    s = make()
    s.speech_started(0.0)
    s.user_audio(FIRST)
    s.take()
    s.disconnected("gone")
    session_up(s, "sess_2")
    s.take()
    s.user_audio(SECOND)
    s.speech_stopped(400, now=1.0)
    assert sent_types(s.take()) == []
    # More than HOLD_BYTES without a session: dropped whole.
    s = new_session({})
    s.speech_started(0.0)
    for _ in range(HOLD_BYTES // len(FIRST) + 1):
        s.user_audio(FIRST)
    session_up(s, "sess_3")
    s.user_audio(SECOND)
    s.speech_stopped(6000, now=7.0)
    assert appended(s.take()) == []
    assert s.dropped_chunks == HOLD_BYTES // len(FIRST) + 1


def test_always_mode_keeps_server_turn_detection() -> None:
    s = new_session({"gate": {"mode": "always"}, "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "x"}})
    assert sent(s.take())[0]["session"]["audio"]["input"]["turn_detection"] == {"type": "server_vad"}


def test_a_whole_local_turn() -> None:
    s = make()
    s.speech_started(0.0)
    s.user_audio(PCM_100MS)
    assert s.state is State.LISTENING
    s.speech_stopped(900, now=2.0, silence_ms=300)  # the speech ended 300 ms before
    actions = s.take()
    assert sent_types(actions) == ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]
    assert s.state is State.THINKING  # type: ignore[comparison-overlap]  # changed by the call above
    start_reply(s, now=2.35)
    actions = s.take()
    assert not [a for a in actions if isinstance(a, TurnTimings)]  # received is not yet heard
    s.playback_started("item_a", now=2.4)
    # End of speech -> first reply audio written to the device; end of speech -> commit.
    assert [a for a in s.take() if isinstance(a, TurnTimings)] == [TurnTimings(1, 700, 300)]
    assert [a.item_id for a in actions if isinstance(a, Play)] == ["item_a"]
    assert s.state is State.SPEAKING
    feed(s, {"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": "Hel"})
    feed(s, {"type": "response.output_audio_transcript.done", "item_id": "item_a", "transcript": "Hello"})
    feed(s, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    actions = s.take()
    assert Transcript("agent", "Hello") in actions
    assert any(isinstance(a, EndOfReply) for a in actions)
    assert s.state is State.SPEAKING  # until the speaker has played it all
    s.playback_idle()
    assert s.state is State.READY


def test_the_journal_gets_end_of_turn_and_latency_per_turn(caplog: pytest.LogCaptureFixture) -> None:
    s = make()
    s.speech_started(0.0)
    s.user_audio(PCM_100MS)
    with caplog.at_level(logging.INFO, logger="appliance.core"):
        s.speech_stopped(900, now=2.0, silence_ms=280)
        start_reply(s, now=2.5)
        s.playback_started("item_a", now=2.6)
    fields = [
        {k: getattr(r, k) for k in ("TURN_ID", "END_OF_TURN_MS", "LATENCY_MS") if hasattr(r, k)}
        for r in caplog.records
        if hasattr(r, "END_OF_TURN_MS") or hasattr(r, "LATENCY_MS")
    ]
    assert fields == [
        {"TURN_ID": 1, "END_OF_TURN_MS": 280},  # at the commit
        {"TURN_ID": 1, "END_OF_TURN_MS": 280, "LATENCY_MS": 880},  # at the first audio played
    ]


def test_a_discarded_turn_is_cleared_and_never_answered(caplog: pytest.LogCaptureFixture) -> None:
    s = make()
    s.speech_started(0.0)
    s.user_audio(PCM_100MS)
    with caplog.at_level(logging.INFO, logger="appliance.core.session"):
        s.speech_stopped(400, now=1.0, discarded=True, silence_ms=1000)
    assert sent_types(s.take()) == ["input_audio_buffer.append", "input_audio_buffer.clear"]
    assert [r.getMessage() for r in caplog.records if "turn" in r.getMessage()] == [
        "turn discarded: too little voiced speech"
    ]
    assert s.state is State.READY
    s.tick(30.0)
    assert "response.create" not in sent_types(s.take())


def test_too_short_turn_is_cleared_not_committed() -> None:
    s = make()
    s.speech_started(0.0)
    s.speech_stopped(60, now=0.1)
    actions = s.take()
    assert sent_types(actions) == ["input_audio_buffer.clear"]
    assert TooShort(60) in actions
    assert s.state is State.READY


def test_local_barge_in_stops_cancels_and_truncates_what_was_heard() -> None:
    s = make()
    start_reply(s)
    feed(s, delta())  # 200 ms received in all
    s.playback_started("item_a")
    s.take()
    s.speech_started(3.0)
    actions = s.take()
    assert any(isinstance(a, StopPlayback) for a in actions)
    assert sent_types(actions) == ["response.cancel"]
    # Deltas still in flight for the cancelled response are not played.
    feed(s, delta())
    assert not any(isinstance(a, Play) for a in s.take())
    s.playback_stopped("item_a", 150)
    truncate = sent(s.take())
    assert truncate == [{"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 150}]


def test_truncate_never_exceeds_received_audio() -> None:
    s = make()
    start_reply(s)  # 100 ms received
    s.playback_started("item_a")
    s.speech_started(3.0)
    s.playback_stopped("item_a", 480)
    assert sent(s.take())[-1]["audio_end_ms"] == 100


def test_barge_in_after_response_done_sends_no_cancel() -> None:
    s = make()
    start_reply(s)
    feed(s, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    s.playback_started("item_a")
    s.take()
    s.speech_started(3.0)
    actions = s.take()
    assert any(isinstance(a, StopPlayback) for a in actions)
    assert "response.cancel" not in sent_types(actions)


def test_response_create_waits_for_active_response() -> None:
    s = make(barge_in="off")
    feed(s, {"type": "response.created", "response": {"id": "resp_1"}})
    s.speech_started(0.0)  # agent busy (thinking), barge-in off: the turn still counts
    s.speech_stopped(500, now=1.0)
    assert sent_types(s.take()) == ["input_audio_buffer.commit"]
    feed(s, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    assert sent_types(s.take()) == ["response.create"]


def test_barge_in_off_ignores_speech_while_speaking() -> None:
    s = make(barge_in="off")
    start_reply(s)
    s.take()
    s.speech_started(2.0)
    s.user_audio(PCM_100MS)
    s.speech_stopped(600, now=2.6)
    actions = s.take()
    assert sent(actions) == []
    assert not any(isinstance(a, StopPlayback) for a in actions)


def test_server_barge_in_with_server_turns_leaves_cancel_to_server() -> None:
    s = make("always")
    start_reply(s)
    s.take()
    feed(s, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "u1"})
    actions = s.take()
    assert any(isinstance(a, StopPlayback) for a in actions)
    assert "response.cancel" not in sent_types(actions)  # interrupt_response defaults to true
    assert s.state is State.LISTENING


def test_errors_and_malformed_frames_are_survived() -> None:
    s = make()
    feed_frame(s, "not json")
    feed_frame(s, b"\x00")
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active", "message": "x"}})
    feed(s, {"type": "totally.unknown"})
    assert s.protocol_errors == 2
    assert s.state is State.READY


def test_rejected_session_update_does_not_leave_it_connecting() -> None:
    # The refused key is left out and the rest sent again; the service's default applies.
    s = new_session({"session": {"audio": {"input": {"transcription": {"model": "assemblyai/u3-rt-pro"}}}}})
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "x"}})
    s.take()
    feed(s, {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "bad", "param": "session.audio.input.transcription.model"}})
    again = sent(s.take())
    assert [e["type"] for e in again] == ["session.update"]
    assert "model" not in again[0]["session"]["audio"]["input"]["transcription"]
    feed(s, {"type": "session.updated", "session": {}})
    assert s.state is State.READY


def test_disconnect_stops_playback_and_shows_offline() -> None:
    s = make()
    start_reply(s)
    s.take()
    s.disconnected("connection lost")
    actions = s.take()
    assert any(isinstance(a, StopPlayback) for a in actions)
    assert StateChanged(State.OFFLINE, "connection lost") in actions
    s.user_audio(PCM_100MS)
    assert s.take() == [] and s.dropped_chunks == 1


def test_mute_shows_muted() -> None:
    s = make()
    s.set_muted(True)
    assert s.state is State.MUTED
    s.set_muted(False)
    assert s.state is State.READY  # type: ignore[comparison-overlap]  # changed by the call above


def test_user_transcript_is_reported() -> None:
    s = make()
    feed(s, {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u", "content_index": 0, "transcript": "hi there"})
    assert Transcript("user", "hi there") in s.take()
