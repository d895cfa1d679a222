"""The typed events and their JSON codec: decoding is strict, never raises, and a frame it
cannot use becomes ``Malformed`` naming the problem; client events encode to the protocol's
JSON."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.core import protocol
from appliance.core.protocol import (
    AppendAudio,
    CancelResponse,
    ClearInput,
    Commit,
    CreateResponse,
    DeleteItem,
    FunctionCallOutput,
    Malformed,
    ServerEvent,
    SessionUpdate,
    Truncate,
    UserText,
)
from appliance.errors import ProtocolError
from appliance.transport import codec


def decoded(frame: str | bytes, sample_width: int = 2) -> ServerEvent:
    event = codec.decode(frame, sample_width)
    assert isinstance(event, ServerEvent), event
    return event


def test_audio_delta_is_decoded() -> None:
    pcm = b"\x01\x00\xff\x7f"
    ev = decoded(json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": base64.b64encode(pcm).decode()}))
    assert ev.type == "response.output_audio.delta"
    assert ev.audio == pcm


def test_g711_deltas_may_hold_an_odd_byte_count() -> None:
    frame = json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": "AAEC"})
    assert decoded(frame, sample_width=1).audio == b"\x00\x01\x02"
    assert isinstance(codec.decode(frame), Malformed)


def test_beta_names_are_mapped() -> None:
    ev = decoded(json.dumps({"type": "response.audio.delta", "item_id": "i", "delta": "AAA="}))
    assert ev.type == "response.output_audio.delta"
    assert decoded('{"type":"conversation.item.created","item":{}}').type == "conversation.item.added"


@pytest.mark.parametrize(
    ("frame", "message", "event_type"),
    [
        (b"\x00\x01", "unexpected binary frame of 2 bytes", ""),
        ("{nope", "invalid JSON", ""),
        ("[1,2]", "expected a JSON object, got list", ""),
        ('{"x":1}', "event has no string 'type'", ""),
        ('{"type":"response.output_audio.delta","item_id":"i"}', "response.output_audio.delta: field 'delta' is missing", "response.output_audio.delta"),
        ('{"type":"response.output_audio.delta","item_id":"i","delta":"@@@"}', "not valid base64", "response.output_audio.delta"),
        ('{"type":"response.output_audio.delta","item_id":"i","delta":"AAEC"}', "holds 3 bytes", "response.output_audio.delta"),
        ('{"type":"input_audio_buffer.speech_started","audio_start_ms":"5"}', "field 'audio_start_ms' is not an integer", "input_audio_buffer.speech_started"),
        ('{"type":"error","error":{"code":5}}', "field 'error.code' is not a string", "error"),
        ('{"type":"response.done","response":{}}', "field 'response.id' is missing", "response.done"),
    ],
)
def test_malformed_frames_name_the_problem(frame: str | bytes, message: str, event_type: str) -> None:
    event = codec.decode(frame)
    assert isinstance(event, Malformed)
    assert message in event.reason
    assert event.event_type == event_type


def test_the_core_checks_parsed_objects_without_a_wire_format() -> None:
    assert protocol.check({"type": "response.text.delta", "item_id": "i", "delta": "x"}) == "response.output_text.delta"
    with pytest.raises(ProtocolError, match="field 'item' is missing"):
        protocol.check({"type": "conversation.item.added"})
    with pytest.raises(ProtocolError, match="not whole PCM16 samples"):
        protocol.check_pcm(b"\x00")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(protocol.REQUIRED) + ["unknown.event"]),
    st.dictionaries(st.sampled_from(["item_id", "delta", "response", "error", "session", "item", "audio_start_ms", "transcript", "call_id", "arguments"]), json_values, max_size=6),
)
def test_decoder_never_raises(kind: str, fields: dict[str, object]) -> None:
    event = codec.decode(json.dumps({"type": kind, **fields}))
    assert isinstance(event, ServerEvent | Malformed)


def test_client_events_encode_to_the_protocols_json() -> None:
    assert json.loads(codec.encode(AppendAudio(b"\x00\x01"))) == {"type": "input_audio_buffer.append", "audio": "AAE="}
    pcm = bytes(range(256)) * 19  # the bytes frame is the same text, byte for byte
    assert codec.append_frame(pcm) == codec.encode(AppendAudio(pcm)).encode()
    assert json.loads(codec.encode(AppendAudio(b"\x00\x01", event_id="evt_9"))) == {
        "type": "input_audio_buffer.append", "event_id": "evt_9", "audio": "AAE="}
    assert json.loads(codec.encode(Truncate("item_1", 1234, event_id="evt_1"))) == {
        "type": "conversation.item.truncate",
        "event_id": "evt_1",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
    assert json.loads(codec.encode(UserText("hi"))) == {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}
    assert json.loads(codec.encode(FunctionCallOutput("c1", "{}"))) == {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": "{}"}}
    assert json.loads(codec.encode(DeleteItem("i1"))) == {"type": "conversation.item.delete", "item_id": "i1"}
    assert json.loads(codec.encode(SessionUpdate({"type": "realtime"}))) == {"type": "session.update", "session": {"type": "realtime"}}
    for event, kind in ((Commit(), "input_audio_buffer.commit"), (ClearInput(), "input_audio_buffer.clear"),
                        (CreateResponse(), "response.create"), (CancelResponse(), "response.cancel")):
        assert json.loads(codec.encode(event)) == {"type": kind}


def test_client_events_are_frozen_values() -> None:
    event = Commit(event_id="evt_1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_id = "evt_2"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")  # slotted
