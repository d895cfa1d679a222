"""The realtime events' JSON wire format: typed client events to text, text to server events.

Shared by the adapters that carry the realtime events as JSON (the WebSocket and the WebRTC
data channel; the Voice SDK adapter makes typed events directly). Apart from the simulator
(the server side), the only place where the realtime protocol's JSON and base64 are written
and read.
``encode`` builds ``input_audio_buffer.append`` by hand, the hot path; ``decode`` never
raises: a frame it cannot use becomes ``Malformed``, for the session to log and count.
Imports the standard library and ``appliance.core.protocol``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from appliance.core import protocol
from appliance.core.protocol import (
    AppendAudio,
    ClientEvent,
    CreateResponse,
    DeleteItem,
    FunctionCallOutput,
    Incoming,
    Malformed,
    ServerEvent,
    SessionUpdate,
    Truncate,
    UserText,
)
from appliance.errors import ProtocolError

_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_SUFFIX = '"}'
_APPEND_PREFIX_BYTES = _APPEND_PREFIX.encode()
_APPEND_SUFFIX_BYTES = _APPEND_SUFFIX.encode()


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def encode(event: ClientEvent) -> str:
    """One client event as its JSON text frame."""
    if isinstance(event, AppendAudio):
        audio = base64.b64encode(event.audio).decode("ascii")
        if event.event_id:
            return dumps({"type": event.type, "event_id": event.event_id, "audio": audio})
        return _APPEND_PREFIX + audio + _APPEND_SUFFIX
    return dumps(to_dict(event))


def append_frame(audio: bytes) -> bytes:
    """``input_audio_buffer.append`` (no event id) as the UTF-8 bytes of its JSON text
    frame, for a sender that takes bytes as text: base64 and one join, with no round trip
    through ``str`` (three copies of each chunk fewer than ``encode``)."""
    return b"".join((_APPEND_PREFIX_BYTES, base64.b64encode(audio), _APPEND_SUFFIX_BYTES))


def to_dict(event: ClientEvent) -> dict[str, Any]:
    """A non-audio client event as the JSON object the protocol defines."""
    out: dict[str, Any] = {"type": event.type}
    if event.event_id:
        out["event_id"] = event.event_id
    if isinstance(event, SessionUpdate):
        out["session"] = event.session
    elif isinstance(event, Truncate):
        out.update(
            item_id=event.item_id,
            content_index=event.content_index,
            audio_end_ms=event.audio_end_ms,
        )
    elif isinstance(event, UserText):
        out["item"] = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": event.text}],
        }
    elif isinstance(event, FunctionCallOutput):
        out["item"] = {
            "type": "function_call_output",
            "call_id": event.call_id,
            "output": event.output,
        }
    elif isinstance(event, AppendAudio):
        out["audio"] = base64.b64encode(event.audio).decode("ascii")
    elif isinstance(event, DeleteItem):
        out["item_id"] = event.item_id
    elif isinstance(event, CreateResponse) and event.response is not None:
        out["response"] = event.response
    return out


def decode(frame: str | bytes, sample_width: int = 2) -> Incoming:
    """One text frame as a ``ServerEvent`` (audio deltas' base64 decoded), or ``Malformed``
    saying what was wrong. ``sample_width``: bytes per sample of the wire's audio (1 for
    G.711, whose adapter makes PCM16 of it)."""
    try:
        return _decode(frame, sample_width)
    except ProtocolError as exc:
        return Malformed(str(exc), exc.event_type or "")


def _decode(frame: str | bytes, sample_width: int) -> ServerEvent:
    if isinstance(frame, bytes):
        raise ProtocolError(f"unexpected binary frame of {len(frame)} bytes")
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(
            f"invalid JSON ({exc.__class__.__name__}) in a {len(frame)}-byte frame"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    kind = protocol.check(data)
    if kind != protocol.AUDIO_DELTA:
        return ServerEvent(kind, data)
    audio = decode_audio(data["delta"], kind)
    if sample_width == 2:
        protocol.check_pcm(audio, kind)
    return ServerEvent(kind, data, audio)


def decode_audio(b64: str, kind: str) -> bytes:
    """Base64 to bytes; ``ProtocolError`` for invalid base64."""
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("field 'delta' is not valid base64", kind) from None


def event_type(frame: str) -> str:
    """The ``type`` of a JSON event frame, ``"?"`` when it is not an object with a string
    ``type``; no other checks (the simulator's endpoints peek with it)."""
    try:
        event = json.loads(frame)
    except ValueError:
        return "?"
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else "?"
