"""The realtime event protocol, sans I/O: client event builders and a strict server decoder.

Shapes are the GA OpenAI Realtime ones that Inworld's Realtime API speaks (see the seeds).
The decoder checks the fields the daemon relies on and raises ``ProtocolError`` naming the
event type and field; it never raises anything else. Beta event names are mapped to GA ones.
``appended_audio`` and ``event_type`` are lenient peeks at a frame, for the transports'
adapters and the simulator's endpoints.
Imports only the standard library and ``appliance.errors``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import ProtocolError

# Older beta names still sent by some servers, mapped to the GA names.
BETA_ALIASES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

_STR, _INT, _DICT, _LIST = str, int, dict, list
# Fields each event type must carry, with their JSON types. Events not listed need only "type".
REQUIRED: dict[str, dict[str, type]] = {
    "session.created": {"session": _DICT},
    "session.updated": {"session": _DICT},
    "error": {"error": _DICT},
    "input_audio_buffer.speech_started": {"audio_start_ms": _INT},
    "input_audio_buffer.speech_stopped": {"audio_end_ms": _INT},
    "input_audio_buffer.committed": {"item_id": _STR},
    "input_audio_buffer.timeout_triggered": {},
    "conversation.item.added": {"item": _DICT},
    "conversation.item.done": {"item": _DICT},
    "conversation.item.input_audio_transcription.delta": {"item_id": _STR, "delta": _STR},
    "conversation.item.input_audio_transcription.completed": {"item_id": _STR, "transcript": _STR},
    "conversation.item.truncated": {"item_id": _STR, "audio_end_ms": _INT},
    "conversation.item.deleted": {"item_id": _STR},
    "response.created": {"response": _DICT},
    "response.done": {"response": _DICT},
    "response.output_item.added": {"item": _DICT},
    "response.output_item.done": {"item": _DICT},
    "response.output_audio.delta": {"item_id": _STR, "delta": _STR},
    "response.output_audio.done": {"item_id": _STR},
    "response.output_audio_transcript.delta": {"item_id": _STR, "delta": _STR},
    "response.output_audio_transcript.done": {"item_id": _STR},
    "response.output_text.delta": {"item_id": _STR, "delta": _STR},
    "response.output_text.done": {"item_id": _STR},
    "response.function_call_arguments.done": {"call_id": _STR, "arguments": _STR},
}

_JSON_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "an array"}


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One decoded server event. ``audio`` holds the decoded PCM of audio deltas."""

    type: str
    data: dict[str, Any]
    audio: bytes = b""

    def get_str(self, name: str, default: str = "") -> str:
        value = self.data.get(name, default)
        return value if isinstance(value, str) else default


def decode(frame: str | bytes) -> ServerEvent:
    """Decode one WebSocket frame into a ``ServerEvent`` or raise ``ProtocolError``."""
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
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("event has no string 'type'")
    kind = BETA_ALIASES.get(kind, kind)
    for name, expected in REQUIRED.get(kind, {}).items():
        value = data.get(name)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            what = "missing" if value is None else f"not {_JSON_TYPE_NAMES[expected]}"
            raise ProtocolError(f"field '{name}' is {what}", kind)
    audio = b""
    if kind == "response.output_audio.delta":
        audio = decode_audio(data["delta"], kind)
    elif kind == "error":
        err = data["error"]
        for name in ("type", "code", "message", "param"):
            if err.get(name) is not None and not isinstance(err[name], str):
                raise ProtocolError(f"field 'error.{name}' is not a string", kind)
    elif kind in ("response.created", "response.done") and not isinstance(
        data["response"].get("id"), str
    ):
        raise ProtocolError("field 'response.id' is missing", kind)
    return ServerEvent(kind, data, audio)


def decode_audio(b64: str, kind: str) -> bytes:
    """Base64 PCM16 to bytes; rejects invalid base64 and odd byte counts."""
    try:
        pcm = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("field 'delta' is not valid base64", kind) from None
    if len(pcm) % 2:
        raise ProtocolError(f"field 'delta' holds {len(pcm)} bytes, not whole PCM16 samples", kind)
    return pcm


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


# --- client events ------------------------------------------------------------------------


_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_SUFFIX = '"}'


def append_audio(pcm: bytes) -> str:
    """``input_audio_buffer.append``; built by hand because it is the hot path."""
    return _APPEND_PREFIX + base64.b64encode(pcm).decode("ascii") + _APPEND_SUFFIX


def appended_audio(frame: str) -> bytes | None:
    """The PCM of an ``append_audio`` frame, without parsing JSON (the hot path of the
    transports that carry audio otherwise); ``None`` for any other frame."""
    if frame.startswith(_APPEND_PREFIX) and frame.endswith(_APPEND_SUFFIX):
        return base64.b64decode(frame[len(_APPEND_PREFIX) : -len(_APPEND_SUFFIX)])
    return None


def event_type(frame: str) -> str:
    """The ``type`` of a client event the session built (or a peer sent), ``"?"`` when the
    frame is not a JSON object with a string ``type``; no other checks."""
    try:
        event = json.loads(frame)
    except ValueError:
        return "?"
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else "?"


def session_update(session: dict[str, Any]) -> str:
    return encode({"type": "session.update", "session": session})


def commit() -> str:
    return '{"type":"input_audio_buffer.commit"}'


def clear_input() -> str:
    return '{"type":"input_audio_buffer.clear"}'


def response_create() -> str:
    return '{"type":"response.create"}'


def response_cancel() -> str:
    return '{"type":"response.cancel"}'


def truncate(item_id: str, audio_end_ms: int, content_index: int = 0) -> str:
    return encode(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }
    )


def user_text(text: str) -> str:
    return encode(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )


def function_call_output(call_id: str, output: str) -> str:
    return encode(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def delete_item(item_id: str) -> str:
    return encode({"type": "conversation.item.delete", "item_id": item_id})
