"""The simulator's sans-I/O engine: synchronous, no sockets, no sleeps."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_sim import SimScript, SimSession, ToolCall
from realtime_sim.codecs import CODECS, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from realtime_sim.profiles import resolve
from realtime_sim.response import split_words

RATE = 24_000
Json = dict[str, Any]


# ------------------------------------------------------------------------------ helpers


def send(session: SimSession, event: Json) -> list[Json]:
    session.receive(json.dumps(event))
    return session.events_to_send()


def started() -> SimSession:
    session = SimSession(session_id="sess_test")
    session.events_to_send()
    return session


def types(events: list[Json]) -> list[str]:
    return [e["type"] for e in events]


def only(events: list[Json], event_type: str) -> Json:
    matching = [e for e in events if e["type"] == event_type]
    assert len(matching) == 1, types(events)
    return matching[0]


def silence(ms: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def noise(ms: int, dbfs: float, seed: int = 1) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Gaussian noise with the given RMS level."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(RATE * ms // 1000)
    x *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x * x))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def b64(pcm: np.ndarray[Any, Any] | bytes) -> str:
    data = pcm if isinstance(pcm, bytes) else pcm.astype("<i2").tobytes()
    return base64.b64encode(data).decode("ascii")


def append(session: SimSession, pcm: np.ndarray[Any, Any], chunk_ms: int = 20) -> list[Json]:
    step = RATE * chunk_ms // 1000
    events: list[Json] = []
    for start in range(0, pcm.size, step):
        events += send(session, {"type": "input_audio_buffer.append",
                                 "audio": b64(pcm[start : start + step])})
    return events


def decoded_audio(events: list[Json]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta")


def text_turn(session: SimSession, text: str = "hello") -> list[Json]:
    return send(session, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def server_vad(session: SimSession, **fields: Any) -> None:
    events = send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": {"type": "server_vad", **fields}}}}})
    assert types(events) == ["session.updated"], events


# ------------------------------------------------------------------------------ session


def test_session_created_has_the_full_ga_session() -> None:
    events = SimSession(session_id="sess_abc").events_to_send()
    assert types(events) == ["session.created"]
    assert events[0]["event_id"].startswith("event_")
    assert events[0]["session"] == {
        "id": "sess_abc", "object": "realtime.session", "type": "realtime",
        "model": "google-ai-studio/gemini-2.5-flash", "instructions": "",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "turn_detection": {"type": "semantic_vad", "eagerness": "auto",
                                   "create_response": True, "interrupt_response": True},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "Dennis",
                       "model": "inworld-tts-1.5-mini", "speed": 1.0},
        },
        "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_output_tokens": "inf",
    }


def test_session_update_deep_merges_and_reports_the_whole_session() -> None:
    session = started()
    events = send(session, {"type": "session.update", "event_id": "c1", "session": {
        "type": "realtime", "instructions": "Be brief.", "temperature": 1.1,
        "output_modalities": ["audio", "text"],
        "audio": {"output": {"voice": "Olivia", "speed": 1.25},
                  "input": {"turn_detection": {"eagerness": "low"},
                            "transcription": {"model": "assemblyai/u3-rt-pro",
                                              "language": "en"}}},
    }})
    updated = only(events, "session.updated")["session"]
    assert updated == session.session
    assert updated["instructions"] == "Be brief."
    assert updated["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                          "voice": "Olivia", "model": "inworld-tts-1.5-mini",
                                          "speed": 1.25}
    assert updated["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": "low", "create_response": True,
        "interrupt_response": True}
    assert updated["audio"]["input"]["transcription"] == {"model": "assemblyai/u3-rt-pro",
                                                          "language": "en"}


def test_switching_to_server_vad_starts_from_its_defaults() -> None:
    session = started()
    server_vad(session, silence_duration_ms=700)
    assert session.session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 200,
        "silence_duration_ms": 700, "idle_timeout_ms": None, "create_response": True,
        "interrupt_response": True}
    server_vad(session, idle_timeout_ms=5000)  # partial: silence_duration_ms is kept
    assert session.session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700


BAD_UPDATES = [
    ({"type": "conversation"}, "session.type", "invalid_value"),
    ({"model": 3}, "session.model", "invalid_value"),
    ({"output_modalities": []}, "session.output_modalities", "invalid_value"),
    ({"output_modalities": ["video"]}, "session.output_modalities[0]", "invalid_value"),
    ({"temperature": 2.5}, "session.temperature", "invalid_value"),
    ({"temperature": "hot"}, "session.temperature", "invalid_value"),
    ({"max_output_tokens": 0}, "session.max_output_tokens", "invalid_value"),
    ({"max_output_tokens": 5000}, "session.max_output_tokens", "invalid_value"),
    ({"max_output_tokens": "lots"}, "session.max_output_tokens", "invalid_value"),
    ({"max_output_tokens": True}, "session.max_output_tokens", "invalid_value"),
    ({"voice": "Olivia"}, "session.voice", "unknown_parameter"),
    ({"audio": {"output": {"speed": 1.6}}}, "session.audio.output.speed", "invalid_value"),
    ({"audio": {"output": {"speed": 0.4}}}, "session.audio.output.speed", "invalid_value"),
    ({"audio": {"output": {"voice": ""}}}, "session.audio.output.voice", "invalid_value"),
    ({"audio": {"output": {"pitch": 1}}}, "session.audio.output.pitch", "unknown_parameter"),
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "session.audio.input.format.rate", "invalid_value"),
    ({"audio": {"input": {"format": {"type": "audio/opus"}}}},
     "session.audio.input.format.type", "invalid_value"),
    ({"audio": {"output": {"format": {"type": "audio/pcmu", "rate": 8000}}}},
     "session.audio.output.format.rate", "unknown_parameter"),
    ({"audio": {"input": {"transcription": {"model": "whisper-1"}}}},
     "session.audio.input.transcription.model", "invalid_value"),
    ({"audio": {"input": {"transcription": {"language": "en"}}}},
     "session.audio.input.transcription.model", "missing_required_parameter"),
    ({"audio": {"input": {"turn_detection": {"type": "magic_vad"}}}},
     "session.audio.input.turn_detection.type", "invalid_value"),
    ({"audio": {"input": {"turn_detection": {"eagerness": "eager"}}}},
     "session.audio.input.turn_detection.eagerness", "invalid_value"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "eagerness": "low"}}}},
     "session.audio.input.turn_detection.eagerness", "unknown_parameter"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}}},
     "session.audio.input.turn_detection.threshold", "invalid_value"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad",
                                             "silence_duration_ms": 500.5}}}},
     "session.audio.input.turn_detection.silence_duration_ms", "invalid_value"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "prefix_padding_ms": -1}}}},
     "session.audio.input.turn_detection.prefix_padding_ms", "invalid_value"),
    ({"audio": {"input": {"turn_detection": {"create_response": "yes"}}}},
     "session.audio.input.turn_detection.create_response", "invalid_value"),
    ({"tools": [{"type": "function", "name": "has space"}]}, "session.tools[0].name",
     "invalid_value"),
    ({"tools": [{"type": "retrieval", "name": "x"}]}, "session.tools[0].type", "invalid_value"),
    ({"tools": [{"type": "function", "name": "x", "parameters": []}]},
     "session.tools[0].parameters", "invalid_value"),
    ({"tools": [{"type": "function", "name": "x"}, {"type": "function", "name": "x"}]},
     "session.tools[1].name", "invalid_value"),
    ({"tool_choice": "always"}, "session.tool_choice", "invalid_value"),
    ({"tool_choice": {"type": "function", "name": "missing"}}, "session.tool_choice.name",
     "invalid_value"),
]


@pytest.mark.parametrize(("patch", "param", "code"), BAD_UPDATES)
def test_invalid_session_update_names_the_param_and_applies_nothing(
    patch: Json, param: str, code: str
) -> None:
    session = started()
    before = copy.deepcopy(session.session)
    update = {"instructions": "should not stick", **patch}
    events = send(session, {"type": "session.update", "event_id": "evt_1", "session": update})
    error = only(events, "error")
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert error["error"]["param"] == param
    assert error["error"]["event_id"] == "evt_1"
    assert param in error["error"]["message"]
    assert session.session == before


# ---------------------------------------------------------------------- malformed events


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "invalid_json"),
    ('{"type": "response.create", "x": NaN}', "invalid_json"),
    ("[1, 2]", "invalid_event"),
    ('{"event_id": "e"}', "invalid_event"),
    ('{"type": 5}', "invalid_event"),
    ('{"type": "response.make"}', "unknown_event_type"),
    ('{"type": "input_audio_buffer.clear", "force": true}', "unknown_parameter"),
    ('{"type": "session.update"}', "missing_required_parameter"),
])
def test_malformed_frames_are_refused(frame: str, code: str) -> None:
    session = started()
    session.receive(frame)
    error = only(session.events_to_send(), "error")["error"]
    assert error["code"] == code
    assert error["message"]


def test_deeply_nested_json_is_refused() -> None:
    session = started()
    session.receive("[" * 100_000 + "]" * 100_000)
    assert only(session.events_to_send(), "error")["error"]["code"] == "invalid_json"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["AAAA", "root", "inf", "audio/pcmu", "function"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "item", "audio", "session", "content", "role", "text",
                         "item_id", "call_id", "output", "response", "output_modalities",
                         "turn_detection", "input", "format", "tools", "name"]),
        inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(
        ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
         "input_audio_buffer.clear", "conversation.item.create", "conversation.item.retrieve",
         "conversation.item.delete", "conversation.item.truncate", "response.create",
         "response.cancel"]))},
    optional={"session": _json_values, "item": _json_values, "audio": _json_values,
              "item_id": _json_values, "response": _json_values,
              "content_index": _json_values, "audio_end_ms": _json_values}), max_size=6))
def test_arbitrary_events_never_break_the_engine(events: list[Json]) -> None:
    session = started()
    for event in events:
        session.receive(json.dumps(event))
        session.pump(2)
        for out in session.events_to_send():
            assert out["event_id"].startswith("event_")
            if out["type"] == "error":
                assert set(out["error"]) == {"type", "code", "message", "param", "event_id"}
    session.run_until_idle()
    assert not session.response_active


def test_binary_frames_are_refused() -> None:
    session = started()
    session.receive_binary(b"\x00\x01")
    assert only(session.events_to_send(), "error")["error"]["code"] == "invalid_event"


def test_every_received_object_is_recorded_in_order() -> None:
    session = started()
    session.receive('{"type": "input_audio_buffer.clear"}')
    session.receive("nonsense")
    session.receive('{"type": "what"}')
    assert session.received == [{"type": "input_audio_buffer.clear"}, {"type": "what"}]


def test_server_event_ids_are_unique() -> None:
    session = started()
    text_turn(session)
    send(session, {"type": "response.create"})
    events = session.run_until_idle()
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids) > 10
    assert all(i.startswith("event_") for i in ids)


# ----------------------------------------------------------------------- input buffer


@pytest.mark.parametrize("audio", ["not base64!", "AAE", "AAEC", 12])
def test_append_refuses_bad_audio(audio: Any) -> None:
    session = started()
    events = send(session, {"type": "input_audio_buffer.append", "audio": audio})
    assert only(events, "error")["error"]["param"] == "audio"
    assert session.input_buffer_ms == 0


def test_commit_needs_100_ms_and_does_not_respond() -> None:
    session = started()
    send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None, "transcription": {"model": "inworld/inworld-stt-1"}}}}})
    append(session, noise(90, -20))
    error = only(send(session, {"type": "input_audio_buffer.commit"}), "error")["error"]
    assert error["code"] == "input_audio_buffer_commit_empty"
    append(session, noise(1430, -20))
    events = send(session, {"type": "input_audio_buffer.commit"})
    assert types(events) == ["input_audio_buffer.committed", "conversation.item.added",
                             "conversation.item.done",
                             "conversation.item.input_audio_transcription.completed"]
    item = only(events, "conversation.item.added")["item"]
    assert item["role"] == "user"
    assert item["content"] == [{"type": "input_audio", "transcript": None}]
    assert events[0]["item_id"] == item["id"]
    assert events[0]["previous_item_id"] is None
    assert events[-1]["transcript"] == "[1.52 s of speech]"
    assert not session.response_active
    assert session.input_buffer_ms == 0


def test_clear_empties_the_buffer() -> None:
    session = started()
    send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}})
    append(session, noise(500, -20))
    assert types(send(session, {"type": "input_audio_buffer.clear"})) == [
        "input_audio_buffer.cleared"]
    events = send(session, {"type": "input_audio_buffer.commit"})
    assert only(events, "error")["error"]["code"] == "input_audio_buffer_commit_empty"


# --------------------------------------------------------------------------- server VAD


def test_server_vad_detects_a_600_ms_burst_and_answers_with_its_echo() -> None:
    session = started()
    server_vad(session, silence_duration_ms=500, prefix_padding_ms=200)
    burst = noise(600, -20)
    events = append(session, np.concatenate([silence(500), burst, silence(700)]))
    assert types(events) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
        "response.created"]
    start = only(events, "input_audio_buffer.speech_started")
    stop = only(events, "input_audio_buffer.speech_stopped")
    assert start["audio_start_ms"] == 300  # onset 500 ms minus 200 ms padding
    assert stop["audio_end_ms"] == 1600  # last speech 1100 ms plus 500 ms silence
    assert start["item_id"] == stop["item_id"] == events[2]["item_id"]

    reply = session.run_until_idle()
    echoed = np.frombuffer(decoded_audio(reply), dtype="<i2")
    assert echoed.size == RATE * 1300 // 1000  # 300 ms .. 1600 ms
    assert np.array_equal(echoed[RATE * 200 // 1000 : RATE * 800 // 1000], burst)
    transcript = only(reply, "response.output_audio_transcript.done")["transcript"]
    assert transcript == "You said something 0.60 seconds long."
    assert "".join(e["delta"] for e in reply
                   if e["type"] == "response.output_audio_transcript.delta") == transcript
    assert only(reply, "response.done")["response"]["status"] == "completed"


def test_semantic_vad_ends_a_turn_after_500_ms_of_quiet() -> None:
    session = started()
    events = append(session, np.concatenate([noise(400, -25), silence(490)]))
    assert types(events) == ["input_audio_buffer.speech_started"]
    assert only(events, "input_audio_buffer.speech_started")["audio_start_ms"] == 0
    events = append(session, silence(20))
    assert types(events)[:2] == ["input_audio_buffer.speech_stopped",
                                 "input_audio_buffer.committed"]
    assert events[0]["audio_end_ms"] == 900


def test_quiet_audio_is_not_speech() -> None:
    session = started()
    assert append(session, noise(2000, -50)) == []


def test_vad_without_create_response_only_commits() -> None:
    session = started()
    server_vad(session, silence_duration_ms=200, create_response=False)
    events = append(session, np.concatenate([noise(300, -20), silence(300)]))
    assert "input_audio_buffer.committed" in types(events)
    assert not session.response_active


def test_speech_interrupts_an_active_response() -> None:
    session = started()
    text_turn(session)
    send(session, {"type": "response.create"})
    session.pump(2)
    session.events_to_send()
    events = append(session, noise(200, -20))
    assert types(events)[0] == "input_audio_buffer.speech_started"
    done = only(events, "response.done")["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert not session.response_active


def test_speech_does_not_interrupt_when_interrupt_response_is_off() -> None:
    session = started()
    server_vad(session, interrupt_response=False, silence_duration_ms=200)
    text_turn(session)
    send(session, {"type": "response.create"})
    session.pump(1)
    events = append(session, np.concatenate([noise(300, -20), silence(300)]))
    assert "response.done" not in types(events)
    # The turn's response waits for the current one, then follows it.
    rest = session.run_until_idle()
    assert [e["response"]["status"] for e in rest if e["type"] == "response.done"] == [
        "completed", "completed"]


def test_idle_timeout_commits_the_silence_and_responds() -> None:
    session = started()
    server_vad(session, idle_timeout_ms=3000)
    send(session, {"type": "session.update", "session": {"audio": {"input": {
        "transcription": {"model": "soniox/stt-rt-v4"}}}}})
    assert append(session, silence(2990)) == []
    events = append(session, silence(20))
    assert types(events)[:2] == ["input_audio_buffer.timeout_triggered",
                                 "input_audio_buffer.committed"]
    timeout = events[0]
    assert (timeout["audio_start_ms"], timeout["audio_end_ms"]) == (0, 3000)
    assert only(events, "conversation.item.input_audio_transcription.completed")[
        "transcript"] == "[no speech]"
    reply = session.run_until_idle()
    assert "Are you still there?" in only(
        reply, "response.output_audio_transcript.done")["transcript"]


# -------------------------------------------------------------------------- responses


def test_text_turn_gets_a_tone_in_100_ms_chunks() -> None:
    session = started()
    added = text_turn(session, "what time is it")
    assert types(added) == ["conversation.item.added", "conversation.item.done"]
    assert types(send(session, {"type": "response.create"})) == ["response.created"]
    events = session.run_until_idle()
    assert types(events)[:3] == ["response.output_item.added", "conversation.item.added",
                                 "response.content_part.added"]
    assert types(events)[-6:] == [
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "conversation.item.done",
        "response.done"]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == 10
    assert all(len(base64.b64decode(d["delta"])) == 4800 for d in deltas)
    done = only(events, "response.done")["response"]
    assert done["object"] == "realtime.response"
    assert done["output"][0]["content"] == [
        {"type": "output_audio", "transcript": 'You wrote: "what time is it".'}]
    assert done["usage"]["output_token_details"]["audio_tokens"] == 10
    assert session.audio_sent_ms(done["output"][0]["id"]) == 1000


def test_pump_produces_one_chunk_at_a_time() -> None:
    session = SimSession(reply_chunk_ms=50)
    text_turn(session)
    send(session, {"type": "response.create"})
    assert session.pump(1) == 50
    first = session.events_to_send()
    assert types(first)[-1] == "response.output_audio.delta"
    assert types(first).count("response.output_audio.delta") == 1
    assert session.response_active


def test_text_only_response() -> None:
    session = started()
    text_turn(session, "one two three four five")
    send(session, {"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = session.run_until_idle()
    assert "response.output_audio.delta" not in types(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == only(events, "response.output_text.done")["text"]
    assert text == 'You wrote: "one two three four five".'


def test_response_create_while_active_is_refused() -> None:
    session = started()
    text_turn(session)
    send(session, {"type": "response.create"})
    error = only(send(session, {"type": "response.create"}), "error")["error"]
    assert error["code"] == "conversation_already_has_active_response"


def test_response_create_validates_its_options() -> None:
    session = SimSession(session_id="sess_test", profile=resolve("fast,strict"))
    session.events_to_send()
    events = send(session, {"type": "response.create", "response": {"modalities": ["text"]}})
    assert only(events, "error")["error"]["param"] == "response.modalities"
    events = send(session, {"type": "response.create",
                            "response": {"output_modalities": ["text", "text"]}})
    assert only(events, "error")["error"]["param"] == "response.output_modalities"
    assert not session.response_active


def test_response_cancel_without_a_response_is_an_error() -> None:
    session = started()
    error = only(send(session, {"type": "response.cancel"}), "error")["error"]
    assert error["code"] == "response_cancel_not_active"


def test_response_cancel_closes_what_is_open() -> None:
    session = started()
    text_turn(session)
    response_id = only(send(session, {"type": "response.create"}), "response.created")[
        "response"]["id"]
    session.pump(3)
    session.events_to_send()
    events = send(session, {"type": "response.cancel", "response_id": response_id})
    assert types(events) == [
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "conversation.item.done",
        "response.done"]
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    assert done["output"][0]["status"] == "incomplete"
    assert session.audio_sent_ms(done["output"][0]["id"]) == 300
    assert session.pump() == 0 and session.events_to_send() == []


def test_response_cancel_before_any_output() -> None:
    session = started()
    text_turn(session)
    send(session, {"type": "response.create"})
    events = send(session, {"type": "response.cancel"})
    assert types(events) == ["response.done"]
    assert events[0]["response"]["output"] == []


# --------------------------------------------------------------------------- truncate


def _cancelled_after(session: SimSession, chunks: int) -> str:
    text_turn(session)
    send(session, {"type": "response.create"})
    session.pump(chunks)
    events = session.events_to_send() + send(session, {"type": "response.cancel"})
    item_id: str = only(events, "response.output_item.added")["item"]["id"]
    return item_id


def test_truncate_is_bounded_by_the_audio_sent() -> None:
    session = started()
    item_id = _cancelled_after(session, 3)
    too_far = send(session, {"type": "conversation.item.truncate", "item_id": item_id,
                             "content_index": 0, "audio_end_ms": 301})
    error = only(too_far, "error")["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "audio_end_ms")
    events = send(session, {"type": "conversation.item.truncate", "item_id": item_id,
                            "content_index": 0, "audio_end_ms": 300})
    assert only(events, "conversation.item.truncated") | {"event_id": None} == {
        "type": "conversation.item.truncated", "event_id": None, "item_id": item_id,
        "content_index": 0, "audio_end_ms": 300}
    retrieved = send(session, {"type": "conversation.item.retrieve", "item_id": item_id})
    assert only(retrieved, "conversation.item.retrieved")["item"]["content"] == [
        {"type": "output_audio", "transcript": ""}]


@pytest.mark.parametrize(("fields", "param"), [
    ({"item_id": "item_nope", "content_index": 0, "audio_end_ms": 0}, "item_id"),
    ({"content_index": 1, "audio_end_ms": 0}, "content_index"),
    ({"content_index": 0, "audio_end_ms": -5}, "audio_end_ms"),
    ({"content_index": 0}, "audio_end_ms"),
])
def test_truncate_errors(fields: Json, param: str) -> None:
    session = started()
    item_id = _cancelled_after(session, 1)
    events = send(session, {"type": "conversation.item.truncate", "item_id": item_id, **fields})
    assert only(events, "error")["error"]["param"] == param


def test_truncate_refuses_user_items() -> None:
    session = started()
    user_id = only(text_turn(session), "conversation.item.added")["item"]["id"]
    events = send(session, {"type": "conversation.item.truncate", "item_id": user_id,
                            "content_index": 0, "audio_end_ms": 0})
    assert only(events, "error")["error"]["param"] == "item_id"


# ----------------------------------------------------------------------- conversation


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "message", "role": "user", "content": [{"type": "text", "text": "x"}]},
     "item.content[0].type"),
    ({"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]},
     "item.content[0].type"),
    ({"type": "message", "role": "user", "content": [{"type": "input_text"}]},
     "item.content[0].text"),
    ({"type": "message", "role": "user",
      "content": [{"type": "input_text", "text": "a"}, {"type": "input_audio", "audio": "AAE"}]},
     "item.content[1].audio"),
    ({"type": "message", "role": "robot", "content": []}, "item.role"),
    ({"type": "message", "role": "user", "content": []}, "item.content"),
    ({"type": "message", "role": "user", "content": "hi"}, "item.content"),
    ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}],
      "extra": 1}, "item.extra"),
    ({"type": "function_call", "name": "x"}, "item.type"),
    ({"type": "function_call_output", "call_id": "call_nope", "output": "{}"}, "item.call_id"),
    ({"type": "function_call_output", "call_id": "call_nope"}, "item.output"),
])
def test_item_create_errors_name_the_param(item: Json, param: str) -> None:
    session = started()
    events = send(session, {"type": "conversation.item.create", "item": item})
    assert only(events, "error")["error"]["param"] == param
    assert len(session.conversation) == 0


def test_item_create_with_audio_and_placement() -> None:
    session = started()
    first = only(text_turn(session, "first"), "conversation.item.added")["item"]["id"]
    events = send(session, {"type": "conversation.item.create", "previous_item_id": "root",
                            "item": {"id": "mine", "type": "message", "role": "user",
                                     "content": [{"type": "input_audio",
                                                  "audio": b64(noise(500, -20))}]}})
    added = only(events, "conversation.item.added")
    assert added["previous_item_id"] is None
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert [r.id for r in session.conversation] == ["mine", first]
    dup = send(session, {"type": "conversation.item.create", "item": {
        "id": "mine", "type": "message", "role": "system",
        "content": [{"type": "input_text", "text": "x"}]}})
    assert only(dup, "error")["error"]["param"] == "item.id"
    bad_after = send(session, {"type": "conversation.item.create", "previous_item_id": "nope",
                               "item": {"type": "message", "role": "system",
                                        "content": [{"type": "input_text", "text": "x"}]}})
    assert only(bad_after, "error")["error"]["param"] == "previous_item_id"


def test_delete_and_retrieve() -> None:
    session = started()
    item_id = only(text_turn(session), "conversation.item.added")["item"]["id"]
    retrieved = send(session, {"type": "conversation.item.retrieve", "item_id": item_id})
    assert only(retrieved, "conversation.item.retrieved")["item"]["id"] == item_id
    deleted = send(session, {"type": "conversation.item.delete", "item_id": item_id})
    assert only(deleted, "conversation.item.deleted")["item_id"] == item_id
    again = send(session, {"type": "conversation.item.delete", "item_id": item_id})
    assert only(again, "error")["error"]["param"] == "item_id"
    missing = send(session, {"type": "conversation.item.retrieve", "item_id": item_id})
    assert only(missing, "error")["error"]["param"] == "item_id"


# ------------------------------------------------------------------------- tool calls

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_scripted_tool_call_flow() -> None:
    script = SimScript(tool_calls=(ToolCall("get_weather", '{"city": "Oslo"}'),))
    session = SimSession(script)
    send(session, {"type": "session.update", "session": {"tools": [WEATHER_TOOL]}})
    text_turn(session, "weather in Oslo?")
    send(session, {"type": "response.create"})
    events = session.run_until_idle()
    assert "response.output_audio.delta" not in types(events)
    added = only(events, "response.output_item.added")["item"]
    assert added["type"] == "function_call"
    assert added["status"] == "in_progress"
    args_done = only(events, "response.function_call_arguments.done")
    assert args_done["name"] == "get_weather"
    assert args_done["arguments"] == '{"city": "Oslo"}'
    assert "".join(e["delta"] for e in events
                   if e["type"] == "response.function_call_arguments.delta") == args_done[
        "arguments"]
    call_id = args_done["call_id"]
    done = only(events, "response.done")["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["call_id"] == call_id
    assert done["output"][0]["arguments"] == '{"city": "Oslo"}'

    out = send(session, {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": '{"temp": 21}'}})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    send(session, {"type": "response.create"})
    answer = session.run_until_idle()
    assert "response.function_call_arguments.done" not in types(answer)
    assert "response.output_audio.delta" in types(answer)
    transcript = only(answer, "response.output_audio_transcript.done")["transcript"]
    assert transcript.startswith('get_weather returned {"temp": 21}.')


def test_scripted_tool_is_not_called_unless_offered() -> None:
    session = SimSession(SimScript(tool_calls=(ToolCall("get_weather"),)))
    text_turn(session)
    send(session, {"type": "response.create"})
    events = session.run_until_idle()
    assert "response.function_call_arguments.done" not in types(events)
    assert "response.output_audio.delta" in types(events)


def test_function_call_output_for_an_unknown_call_is_refused() -> None:
    session = started()
    events = send(session, {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_123", "output": "{}"}})
    error = only(events, "error")["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "item.call_id")


def test_tool_call_arguments_must_be_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        ToolCall("f", "{oops")


# ------------------------------------------------------------------------------ G.711


def test_g711_codes_round_trip() -> None:
    codes = bytes(range(256))
    mu = bytes(c for c in codes if c != 0x7F)  # 0x7F and 0xFF both decode to zero
    assert ulaw_encode(ulaw_decode(mu)) == mu
    assert alaw_encode(alaw_decode(codes)) == codes
    ramp = np.linspace(-32768, 32767, 5000).astype(np.int32)
    assert np.max(np.abs(ulaw_decode(ulaw_encode(ramp)) - ramp)) <= 1024
    assert np.max(np.abs(alaw_decode(alaw_encode(ramp)) - ramp)) <= 1024


def test_pcmu_session_decodes_input_and_encodes_replies() -> None:
    session = started()
    send(session, {"type": "session.update", "session": {"audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}}}}})
    wire = CODECS["audio/pcmu"].encode(noise(600, -20)[:12003])  # one byte per sample
    assert len(wire) == 4001
    assert send(session, {"type": "input_audio_buffer.append", "audio": b64(wire)}) == []
    assert session.input_buffer_ms == 500.125
    send(session, {"type": "input_audio_buffer.commit"})
    send(session, {"type": "response.create"})
    events = session.run_until_idle()
    sizes = [len(base64.b64decode(e["delta"])) for e in events
             if e["type"] == "response.output_audio.delta"]
    assert sizes[0] == 800  # 100 ms at 8 kHz, one byte per sample
    assert only(events, "response.done")["response"]["audio"]["output"]["format"] == {
        "type": "audio/pcmu"}


def test_split_words_keeps_the_text() -> None:
    text = "You said something 1.52 seconds long."
    for pieces in (1, 2, 5, 17):
        parts = split_words(text, pieces)
        assert len(parts) == pieces and "".join(parts) == text
        assert parts[0]
