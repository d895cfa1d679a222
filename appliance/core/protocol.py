"""The realtime event protocol as typed events, sans I/O and without a wire format.

Client events are frozen dataclasses the session builds; server events arrive as a
``ServerEvent`` (the event's decoded fields, and for audio deltas the decoded PCM) or, when a
frame could not be used, as ``Malformed``, so the session can log and count it. The shapes
are the GA OpenAI Realtime ones that Inworld's Realtime API speaks (see the seeds).

JSON and base64 are the transports' business (``appliance.transport.codec``): this module
only checks already-parsed objects. ``check`` names the event type and field that is wrong
and raises ``ProtocolError``, nothing else; beta event names are mapped to GA ones.
Imports only the standard library and ``appliance.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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

AUDIO_DELTA = "response.output_audio.delta"

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
    AUDIO_DELTA: {"item_id": _STR, "delta": _STR},
    "response.output_audio.done": {"item_id": _STR},
    "response.output_audio_transcript.delta": {"item_id": _STR, "delta": _STR},
    "response.output_audio_transcript.done": {"item_id": _STR},
    "response.output_text.delta": {"item_id": _STR, "delta": _STR},
    "response.output_text.done": {"item_id": _STR},
    "response.function_call_arguments.done": {"call_id": _STR, "arguments": _STR},
}

_JSON_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "an array"}


# --- server events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One server event: its GA ``type``, its fields and, for audio deltas, the decoded PCM16
    (24 kHz mono; a transport with another wire audio format converts before this)."""

    type: str
    data: Mapping[str, Any]
    audio: bytes = b""

    def get_str(self, name: str, default: str = "") -> str:
        value = self.data.get(name, default)
        return value if isinstance(value, str) else default


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame a transport received but could not turn into a ``ServerEvent``; the session
    logs and counts it (``protocol_errors``) and carries on."""

    reason: str
    event_type: str = ""


Incoming = ServerEvent | Malformed


def audio_delta(item_id: str, pcm: bytes, response_id: str = "") -> ServerEvent:
    """A reply audio delta made by a transport that receives audio off the event stream."""
    return ServerEvent(AUDIO_DELTA, {"item_id": item_id, "response_id": response_id}, pcm)


def check(data: Mapping[str, Any]) -> str:
    """The GA type of a parsed server event, after checking the fields the daemon relies on
    (``ProtocolError`` naming the event type and field otherwise). The ``delta`` of an audio
    event is checked as a string here; decoding it is the transport's."""
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("event has no string 'type'")
    kind = BETA_ALIASES.get(kind, kind)
    for name, expected in REQUIRED.get(kind, {}).items():
        value = data.get(name)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            what = "missing" if value is None else f"not {_JSON_TYPE_NAMES[expected]}"
            raise ProtocolError(f"field '{name}' is {what}", kind)
    if kind == "error":
        err = data["error"]
        for name in ("type", "code", "message", "param"):
            if err.get(name) is not None and not isinstance(err[name], str):
                raise ProtocolError(f"field 'error.{name}' is not a string", kind)
    elif kind in ("response.created", "response.done") and not isinstance(
        data["response"].get("id"), str
    ):
        raise ProtocolError("field 'response.id' is missing", kind)
    return kind


def check_pcm(pcm: bytes, kind: str = AUDIO_DELTA) -> bytes:
    """Decoded PCM16 must hold whole samples."""
    if len(pcm) % 2:
        raise ProtocolError(f"field 'delta' holds {len(pcm)} bytes, not whole PCM16 samples", kind)
    return pcm


# --- client events ---------------------------------------------------------------------------
# ``event_id`` is assigned by the session ("evt_<n>"); the server's ``error`` event names it in
# ``error.event_id`` when the error is about that event. Empty: not sent.


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    type: ClassVar[str] = "session.update"
    session: Mapping[str, Any]
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """``input_audio_buffer.append``: PCM16 24 kHz mono from the session (a transport with
    another wire format may carry its own encoding in ``audio`` below the session)."""

    type: ClassVar[str] = "input_audio_buffer.append"
    audio: bytes
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class Commit:
    type: ClassVar[str] = "input_audio_buffer.commit"
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class ClearInput:
    type: ClassVar[str] = "input_audio_buffer.clear"
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """``response.create``; ``response``: the response's own settings (e.g. an out-of-band
    announcement: ``conversation: "none"`` and its ``instructions``), None for the session's."""

    type: ClassVar[str] = "response.create"
    response: Mapping[str, Any] | None = None
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class CancelResponse:
    type: ClassVar[str] = "response.cancel"
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class Truncate:
    """``conversation.item.truncate``: the agent's audio item was heard up to ``audio_end_ms``."""

    type: ClassVar[str] = "conversation.item.truncate"
    item_id: str
    audio_end_ms: int
    content_index: int = 0
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class UserText:
    """``conversation.item.create`` of a user message with one ``input_text``."""

    type: ClassVar[str] = "conversation.item.create"
    text: str
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class FunctionCallOutput:
    """``conversation.item.create`` of a ``function_call_output`` item."""

    type: ClassVar[str] = "conversation.item.create"
    call_id: str
    output: str
    event_id: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class DeleteItem:
    type: ClassVar[str] = "conversation.item.delete"
    item_id: str
    event_id: str = field(default="", kw_only=True)


ClientEvent = (
    SessionUpdate
    | AppendAudio
    | Commit
    | ClearInput
    | CreateResponse
    | CancelResponse
    | Truncate
    | UserText
    | FunctionCallOutput
    | DeleteItem
)
