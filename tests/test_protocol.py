"""The event decoder is strict and never raises anything but ProtocolError."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.core import protocol
from appliance.errors import ProtocolError


def test_audio_delta_is_decoded() -> None:
    pcm = b"\x01\x00\xff\x7f"
    ev = protocol.decode(json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": base64.b64encode(pcm).decode()}))
    assert ev.type == "response.output_audio.delta"
    assert ev.audio == pcm


def test_beta_names_are_mapped() -> None:
    ev = protocol.decode(json.dumps({"type": "response.audio.delta", "item_id": "i", "delta": "AAA="}))
    assert ev.type == "response.output_audio.delta"
    assert protocol.decode('{"type":"conversation.item.created","item":{}}').type == "conversation.item.added"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x00\x01", "unexpected binary frame of 2 bytes"),
        ("{nope", "invalid JSON"),
        ("[1,2]", "expected a JSON object, got list"),
        ('{"x":1}', "event has no string 'type'"),
        ('{"type":"response.output_audio.delta","item_id":"i"}', "response.output_audio.delta: field 'delta' is missing"),
        ('{"type":"response.output_audio.delta","item_id":"i","delta":"@@@"}', "not valid base64"),
        ('{"type":"response.output_audio.delta","item_id":"i","delta":"AAEC"}', "holds 3 bytes"),
        ('{"type":"input_audio_buffer.speech_started","audio_start_ms":"5"}', "field 'audio_start_ms' is not an integer"),
        ('{"type":"error","error":{"code":5}}', "field 'error.code' is not a string"),
        ('{"type":"response.done","response":{}}', "field 'response.id' is missing"),
    ],
)
def test_malformed_frames_name_the_problem(frame: str | bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        protocol.decode(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(protocol.REQUIRED) + ["unknown.event"]),
    st.dictionaries(st.sampled_from(["item_id", "delta", "response", "error", "session", "item", "audio_start_ms", "transcript", "call_id", "arguments"]), json_values, max_size=6),
)
def test_decoder_never_raises_anything_else(kind: str, fields: dict[str, object]) -> None:
    frame = json.dumps({"type": kind, **fields})
    try:
        protocol.decode(frame)
    except ProtocolError:
        pass


def test_client_events_are_valid_json() -> None:
    frame = json.loads(protocol.append_audio(b"\x00\x01"))
    assert frame == {"type": "input_audio_buffer.append", "audio": "AAE="}
    assert json.loads(protocol.truncate("item_1", 1234)) == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
