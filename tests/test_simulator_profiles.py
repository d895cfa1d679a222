"""The simulator's server profiles, at the engine: what the simulated service sends back.

Synchronous, no sockets, no sleeps: the profiles' delays are timers on the clock the test
hands to :meth:`SimSession.advance`.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import numpy as np
import pytest

from realtime_sim import SimScript, SimSession, ToolCall
from realtime_sim.profiles import FAST, PROFILES, REALISTIC, ServerProfile, resolve

RATE = 24_000
Json = dict[str, Any]
WEATHER_TOOL: Json = {"type": "function", "name": "get_weather", "description": "Weather.",
                      "parameters": {"type": "object", "properties": {}}}


def session_with(names: str, script: SimScript | None = None) -> SimSession:
    session = SimSession(script, session_id="sess_test", profile=REALISTIC.with_names(names))
    session.advance(0.0)
    session.events_to_send()
    return session


def send(session: SimSession, event: Json) -> list[Json]:
    session.receive(json.dumps(event))
    return session.events_to_send()


def types(events: list[Json]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[Json], event_type: str) -> list[Json]:
    return [e for e in events if e["type"] == event_type]


def tone(ms: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(RATE * ms // 1000) / RATE
    pcm: np.ndarray[Any, np.dtype[np.int16]] = np.rint(8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    return pcm


def silence(ms: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def append(session: SimSession, pcm: np.ndarray[Any, Any], chunk_ms: int = 20) -> list[Json]:
    step = RATE * chunk_ms // 1000
    events: list[Json] = []
    for start in range(0, pcm.size, step):
        chunk = pcm[start : start + step].astype("<i2").tobytes()
        events += send(session, {"type": "input_audio_buffer.append",
                                 "audio": base64.b64encode(chunk).decode("ascii")})
    return events


def text_turn(session: SimSession, text: str = "hello") -> list[Json]:
    return send(session, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def pump_all(session: SimSession) -> list[Json]:
    return session.run_until_idle()


# ------------------------------------------------------------------------ profile names


def test_profile_names_combine_in_order_and_unknown_names_are_refused() -> None:
    assert resolve(None) == REALISTIC
    assert resolve("fast") == FAST
    combined = resolve("fast,auto-tool-response,slow-first-audio")
    assert combined.auto_tool_response and combined.reply_pace == 4.0
    assert combined.first_audio_delay_ms == 2500
    with pytest.raises(ValueError, match="unknown simulator profile 'loud'"):
        resolve("fast,loud")
    assert set(PROFILES) >= {"keeps-turn-detection", "auto-tool-response", "param-less-errors",
                             "slow-first-audio", "text-and-audio", "fast", "realistic"}


def test_realistic_is_the_servers_default_and_paces_like_the_service() -> None:
    assert REALISTIC.reply_pace == 1.0
    assert 200 <= REALISTIC.first_audio_delay_ms <= 600
    assert not REALISTIC.transcript_lockstep and not REALISTIC.strict_schema
    assert FAST.first_audio_delay_ms == 0 and FAST.reply_pace > 1


# --------------------------------------------------------------- asynchronous transcripts


def test_the_input_transcript_arrives_after_the_commit_on_its_own_clock() -> None:
    session = session_with("realistic")
    send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None, "transcription": {"model": "assemblyai/u3-rt-pro"}}}}})
    append(session, tone(600))
    committed = send(session, {"type": "input_audio_buffer.commit"})
    assert "input_audio_buffer.committed" in types(committed)
    assert not of_type(committed, "conversation.item.input_audio_transcription.completed")
    started = send(session, {"type": "response.create"})
    assert types(started) == ["response.created"]  # the reply starts before the transcript
    session.advance(0.399)
    assert not of_type(session.events_to_send(),
                       "conversation.item.input_audio_transcription.completed")
    session.advance(0.4)
    done = of_type(session.events_to_send(),
                   "conversation.item.input_audio_transcription.completed")
    assert [e["transcript"] for e in done] == ["[0.60 s of speech]"]
    assert session.next_deadline is None


def test_the_audio_transcript_is_not_in_lockstep_with_the_audio() -> None:
    session = session_with("realistic")
    text_turn(session)
    send(session, {"type": "response.create"})
    events = pump_all(session)
    kinds = [t for t in types(events) if t in ("response.output_audio.delta",
                                                "response.output_audio_transcript.delta")]
    audio = kinds.count("response.output_audio.delta")
    words = kinds.count("response.output_audio_transcript.delta")
    assert audio == 10 and 1 <= words < audio  # fewer, bigger pieces
    assert kinds[0] == "response.output_audio_transcript.delta"  # the text leads the audio
    whole = "".join(e["delta"] for e in of_type(events, "response.output_audio_transcript.delta"))
    assert of_type(events, "response.output_audio_transcript.done")[0]["transcript"] == whole


def test_fast_keeps_the_old_lockstep_transcript() -> None:
    session = session_with("fast")
    text_turn(session, "one two three four five six seven eight nine ten eleven")
    send(session, {"type": "response.create"})
    kinds = types(pump_all(session))
    pairs = [kinds[i + 1] for i, k in enumerate(kinds)
             if k == "response.output_audio_transcript.delta"]
    assert pairs and set(pairs) == {"response.output_audio.delta"}


# --------------------------------------------------------------------------- tolerance


def test_provider_data_and_beta_modalities_are_accepted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = session_with("realistic")
    with caplog.at_level(logging.WARNING, logger="realtime_sim.engine"):
        updated = send(session, {"type": "session.update", "session": {
            "providerData": {"auto_tool_response": False, "stt": {"voice_profile": True}},
            "instructions": "Be brief."}})
        assert types(updated) == ["session.updated"]
        assert updated[0]["session"]["instructions"] == "Be brief."
        assert session.provider_data == {"auto_tool_response": False,
                                         "stt": {"voice_profile": True}}
        text_turn(session)
        created = send(session, {"type": "response.create",
                                 "response": {"modalities": ["text"]}})
    assert types(created) == ["response.created"]
    assert created[0]["response"]["output_modalities"] == ["text"]
    assert "response.output_text.delta" in types(pump_all(session))
    assert session.schema_notes == ["session.providerData (Inworld extension)",
                                    "response.modalities (beta alias of output_modalities)"]
    logged = [r.getMessage() for r in caplog.records]
    assert any("GA schema would reject: session.providerData" in m for m in logged)
    assert any("GA schema would reject: response.modalities" in m for m in logged)


def test_the_strict_profile_refuses_what_the_ga_schema_does_not_know() -> None:
    session = session_with("strict")
    error = send(session, {"type": "session.update", "session": {"providerData": {}}})
    assert types(error) == ["error"]
    assert error[0]["error"]["code"] == "unknown_parameter"
    assert error[0]["error"]["param"] == "session.providerData"
    error = send(session, {"type": "response.create", "response": {"modalities": ["text"]}})
    assert error[0]["error"]["param"] == "response.modalities"
    assert session.schema_notes == []


# ------------------------------------------------------------------ keeps-turn-detection


def test_keeps_turn_detection_ends_the_turn_and_answers_by_itself() -> None:
    session = session_with("keeps-turn-detection")
    updated = send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}})
    assert updated[0]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    events = append(session, np.concatenate([silence(300), tone(800), silence(1500)]))
    assert types(events)[:2] == ["input_audio_buffer.speech_started",
                                 "input_audio_buffer.speech_stopped"]
    assert "input_audio_buffer.committed" in types(events)
    assert "response.created" not in types(events)  # the service takes a moment
    session.advance(0.2)
    assert types(session.events_to_send()) == ["response.created"]
    # The client, believing it owns the turn, commits the tail and asks for a response.
    send(session, {"type": "input_audio_buffer.commit"})
    refused = send(session, {"type": "response.create"})
    assert [e["error"]["code"] for e in of_type(refused, "error")] == [
        "conversation_already_has_active_response"]


def test_without_the_profile_turn_detection_null_is_honoured() -> None:
    session = session_with("realistic")
    updated = send(session, {"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}})
    assert updated[0]["session"]["audio"]["input"]["turn_detection"] is None
    events = append(session, np.concatenate([silence(300), tone(800), silence(1500)]))
    session.advance(5.0)
    assert types(events + session.events_to_send()) == []


# -------------------------------------------------------------------- auto-tool-response


def tool_round(session: SimSession) -> tuple[str, list[Json]]:
    send(session, {"type": "session.update", "session": {"tools": [WEATHER_TOOL]}})
    text_turn(session, "weather?")
    send(session, {"type": "response.create"})
    events = pump_all(session)
    call = of_type(events, "response.function_call_arguments.done")[0]
    return str(call["call_id"]), events


def output_item(call_id: str) -> Json:
    return {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": '{"sky": "clear"}'}}


def test_auto_tool_response_answers_a_tool_output_by_itself() -> None:
    script = SimScript(tool_calls=(ToolCall("get_weather", "{}"),))
    session = session_with("auto-tool-response", script)
    call_id, _ = tool_round(session)
    events = send(session, output_item(call_id))
    assert types(events) == ["conversation.item.added", "conversation.item.done",
                             "response.created"]
    # A client that sends its own response.create, as the GA protocol asks, is refused.
    refused = send(session, {"type": "response.create"})
    assert refused[0]["error"]["code"] == "conversation_already_has_active_response"
    done = of_type(pump_all(session), "response.done")
    transcript = done[0]["response"]["output"][0]["content"][0]["transcript"]
    assert transcript.startswith('get_weather returned {"sky": "clear"}.')


def test_provider_data_turns_the_automatic_tool_response_off() -> None:
    script = SimScript(tool_calls=(ToolCall("get_weather", "{}"),))
    session = session_with("auto-tool-response", script)
    send(session, {"type": "session.update",
                   "session": {"providerData": {"auto_tool_response": False}}})
    call_id, _ = tool_round(session)
    assert "response.created" not in types(send(session, output_item(call_id)))
    assert types(send(session, {"type": "response.create"})) == ["response.created"]


def test_without_the_profile_a_tool_output_waits_for_response_create() -> None:
    script = SimScript(tool_calls=(ToolCall("get_weather", "{}"),))
    session = session_with("realistic", script)
    call_id, _ = tool_round(session)
    assert "response.created" not in types(send(session, output_item(call_id)))


# --------------------------------------------------------------------- param-less-errors


def test_param_less_errors_refuse_an_unknown_voice_with_param_null() -> None:
    session = session_with("param-less-errors")
    error = send(session, {"type": "session.update", "event_id": "u1", "session": {
        "instructions": "Hi.", "audio": {"output": {"voice": "Nobody"}}}})
    assert types(error) == ["error"]
    assert error[0]["error"]["param"] is None
    assert error[0]["error"]["event_id"] == "u1"
    assert "Nobody" in error[0]["error"]["message"]
    assert session.session["instructions"] == ""  # nothing of the update was applied
    error = send(session, {"type": "session.update", "session": {
        "audio": {"output": {"speed": 9}}}})
    assert error[0]["error"]["param"] is None
    assert types(send(session, {"type": "session.update", "session": {
        "audio": {"output": {"voice": "Olivia"}}}})) == ["session.updated"]


def test_without_the_profile_errors_name_their_param_and_any_voice_goes() -> None:
    session = session_with("realistic")
    assert types(send(session, {"type": "session.update", "session": {
        "audio": {"output": {"voice": "Nobody"}}}})) == ["session.updated"]
    error = send(session, {"type": "session.update", "session": {
        "audio": {"output": {"speed": 9}}}})
    assert error[0]["error"]["param"] == "session.audio.output.speed"


# ------------------------------------------------------------------------ text-and-audio


def test_text_and_audio_streams_text_and_transcript_separately() -> None:
    session = session_with("text-and-audio")
    send(session, {"type": "session.update", "session": {"output_modalities": ["audio", "text"]}})
    text_turn(session, "hello there")
    send(session, {"type": "response.create"})
    events = pump_all(session)
    transcript = of_type(events, "response.output_audio_transcript.delta")
    text = of_type(events, "response.output_text.delta")
    assert transcript and text
    assert {e["content_index"] for e in transcript} == {0}
    assert {e["content_index"] for e in text} == {1}
    said = "".join(e["delta"] for e in transcript)
    assert "".join(e["delta"] for e in text) == said
    assert of_type(events, "response.output_text.done")[0]["text"] == said
    content = of_type(events, "response.done")[0]["response"]["output"][0]["content"]
    assert content == [{"type": "output_audio", "transcript": said},
                       {"type": "output_text", "text": said}]


def test_without_the_profile_audio_and_text_gives_the_transcript_only() -> None:
    session = session_with("realistic")
    send(session, {"type": "session.update", "session": {"output_modalities": ["audio", "text"]}})
    text_turn(session)
    send(session, {"type": "response.create"})
    events = pump_all(session)
    assert of_type(events, "response.output_audio_transcript.delta")
    assert not of_type(events, "response.output_text.delta")


def test_server_profile_is_a_frozen_settings_object() -> None:
    with pytest.raises(AttributeError):
        ServerProfile().reply_pace = 2.0  # type: ignore[misc]


# ------------------------------------------------------------------------- cancel lag


def test_deltas_keep_coming_for_a_while_after_a_cancel() -> None:
    session = session_with("realistic")
    text_turn(session)
    send(session, {"type": "response.create"})
    session.pump(2)
    session.events_to_send()
    assert send(session, {"type": "response.cancel"}) == []  # not yet: the pipeline drains
    session.pump(1)
    late = session.events_to_send()
    assert "response.output_audio.delta" in types(late)
    session.advance(0.149)
    assert session.events_to_send() == [] and session.response_active
    session.advance(0.15)
    done = of_type(session.events_to_send(), "response.done")
    assert done[0]["response"]["status"] == "cancelled"
    assert not session.response_active


def test_fast_cancels_at_once() -> None:
    session = session_with("fast")
    text_turn(session)
    send(session, {"type": "response.create"})
    session.pump(2)
    session.events_to_send()
    events = send(session, {"type": "response.cancel"})
    assert of_type(events, "response.done")[0]["response"]["status"] == "cancelled"
