"""The announcement queue (appliance.core.announce): pure, time as an input."""

from __future__ import annotations

import base64

from session_steps import feed, new_session, ready_session, sent

from appliance.core.announce import (
    MAX_QUEUED,
    Announcer,
    Availability,
    Cue,
    Dropped,
    Kind,
    Outcome,
    Speak,
    quiet,
    speak,
)
from appliance.core.state import State

QUIET, BUSY, DOWN = Availability.QUIET, Availability.BUSY, Availability.UNAVAILABLE


def test_quiet_speaks_at_once_after_the_earcon() -> None:
    a = Announcer("wake", 60.0)
    assert a.request("Dinner is ready", Kind.SAY, 0.0, QUIET) is Outcome.SPEAKING
    actions = a.take()
    assert actions[0] == Cue("wake")
    assert isinstance(actions[1], Speak) and actions[1].announcement.text == "Dinner is ready"
    assert not a.pending


def test_waits_while_busy_then_one_at_a_time() -> None:
    a = Announcer("", 60.0)
    assert a.request("one", Kind.SAY, 0.0, BUSY) is Outcome.QUEUED
    assert a.request("two", Kind.ASK, 1.0, BUSY) is Outcome.QUEUED
    assert a.take() == []  # never interrupts a turn or a reply
    a.update(BUSY, 5.0)
    assert a.take() == []
    a.update(QUIET, 6.0)
    spoken = a.take()
    assert [x.announcement.text for x in spoken if isinstance(x, Speak)] == ["one"]
    a.update(BUSY, 6.1)  # the first one's reply is under way
    assert a.take() == []
    a.update(QUIET, 9.0)
    (second,) = a.take()
    assert isinstance(second, Speak) and second.announcement.kind is Kind.ASK


def test_offline_plays_the_earcon_and_drops_with_a_reason() -> None:
    a = Announcer("wake", 60.0)
    assert a.request("Door open", Kind.SAY, 0.0, DOWN) is Outcome.DROPPED
    cue, dropped = a.take()
    assert cue == Cue("wake")
    assert isinstance(dropped, Dropped) and dropped.announcement.text == "Door open"
    assert "no session" in dropped.reason


def test_queued_ones_are_dropped_when_the_connection_goes() -> None:
    a = Announcer("wake", 60.0)
    a.request("a", Kind.SAY, 0.0, BUSY)
    a.request("b", Kind.SAY, 0.0, BUSY)
    a.update(DOWN, 1.0)
    actions = a.take()
    assert actions[0] == Cue("wake") and actions.count(Cue("wake")) == 1
    assert [x.announcement.text for x in actions if isinstance(x, Dropped)] == ["a", "b"]


def test_too_long_without_a_quiet_moment_is_dropped_at_its_deadline() -> None:
    a = Announcer("", 30.0)
    a.request("late", Kind.SAY, 10.0, BUSY)
    assert a.next_deadline() == 40.0
    a.tick(39.9)
    assert a.take() == []
    a.tick(40.0)
    (dropped,) = a.take()
    assert isinstance(dropped, Dropped) and "30 s" in dropped.reason
    assert a.next_deadline() is None


def test_a_full_queue_drops_the_newest() -> None:
    a = Announcer("", 60.0)
    for i in range(MAX_QUEUED):
        assert a.request(str(i), Kind.SAY, 0.0, BUSY) is Outcome.QUEUED
    assert a.request("one too many", Kind.SAY, 0.0, BUSY) is Outcome.DROPPED
    (dropped,) = a.take()
    assert isinstance(dropped, Dropped) and dropped.announcement.text == "one too many"
    assert a.queued == MAX_QUEUED


# --- the session's side: quiet(session) / speak(session, ...) ----------------------------------------


def test_session_is_quiet_only_when_configured_and_idle() -> None:
    assert not quiet(new_session())
    s = ready_session({"gate": {"mode": "vad"}})
    assert quiet(s)
    s.speech_started(1.0)
    assert not quiet(s)  # the user speaks
    s.speech_stopped(900, 2.0)
    assert not quiet(s)  # a response is expected
    feed(s, {"type": "response.created", "response": {"id": "resp_1"}}, 2.1)
    feed(s, {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "i",
             "delta": base64.b64encode(b"\0\0" * 240).decode()}, 2.2)
    feed(s, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}, 2.3)
    s.playback_started("i")
    assert not quiet(s)  # its audio still plays
    s.playback_idle(3.0)
    assert quiet(s)


def test_say_is_an_out_of_band_response_and_ask_a_user_item() -> None:
    s = ready_session()
    speak(s, "Dinner is ready", 5.0)
    (create,) = sent(s.take())
    assert create == {"type": "response.create", "response": {
        "conversation": "none", "instructions": "Say exactly: Dinner is ready",
        "tool_choice": "none", "metadata": {"appliance": "announcement"}}}
    assert s.state is State.THINKING and not quiet(s)
    s = ready_session()
    speak(s, "What's the weather?", 5.0, ask=True)
    item, create = sent(s.take())
    assert item["item"]["content"] == [{"type": "input_text", "text": "What's the weather?"}]
    assert create == {"type": "response.create"}
    assert s.response_deadline() == 5.0 + s._options.response_timeout_s
