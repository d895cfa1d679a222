"""Strict validation of what clients send: session updates, response options, items, audio.

Owns the GA schema's rules and its error vocabulary (what the service tolerates beyond
them, such as ``session.providerData``, is taken out first by ``quirks``). Every check raises
:class:`SimError` naming the offending parameter by its dotted path
(``session.audio.output.speed``, ``item.content[0].type``); the engine turns that into a GA
``error`` event. Validators build new values and never mutate their inputs, so a rejected
``session.update`` leaves the session exactly as it was.

Bounds chosen where the seeds give none (documented here, reported in errors):

- ``temperature``: a number in [0.0, 2.0].
- ``max_output_tokens``: an integer in [1, 4096] or ``"inf"``.
- ``audio.output.speed``: a number in [0.5, 1.5].
- ``turn_detection.threshold`` in [0.0, 1.0]; ``prefix_padding_ms``, ``silence_duration_ms``
  and ``idle_timeout_ms`` integers >= 0 (``idle_timeout_ms`` 0 or null disables it).
- Function names match ``^[A-Za-z0-9_-]{1,64}$`` and are unique.
- Wrong JSON types are reported with code ``invalid_value`` like wrong values.

Imports only the simulator's codecs.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from realtime_sim.codecs import CODECS, INTERNAL_RATE, AudioCodec

Json = dict[str, Any]

DEFAULT_MODEL = "google-ai-studio/gemini-2.5-flash"
STT_MODELS = (
    "assemblyai/u3-rt-pro",
    "assemblyai/universal-streaming-multilingual",
    "assemblyai/universal-streaming-english",
    "inworld/inworld-stt-1",
    "soniox/stt-rt-v4",
)
MODALITIES = ("audio", "text")
EAGERNESS = ("low", "medium", "high", "auto")
TOOL_CHOICES = ("auto", "none", "required")
MAX_OUTPUT_TOKENS = 4096
TEMPERATURE_RANGE = (0.0, 2.0)
SPEED_RANGE = (0.5, 1.5)
MAX_APPEND_BYTES = 15 * 1024 * 1024
KNOWN_VOICES = frozenset({
    "Alex", "Ashley", "Clive", "Craig", "Deborah", "Dennis", "Dominus", "Edward", "Elizabeth",
    "Hades", "Julia", "Mark", "Olivia", "Pixie", "Priya", "Ronald", "Sarah", "Theodore",
    "Timothy", "Wendy",
})
"""Voices the ``param-less-errors`` profile knows (Inworld's stock English voices); other
profiles take any non-empty name, as voice lists change and clones have ids of their own."""
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

SEMANTIC_VAD_DEFAULTS: Json = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# Defaults from the session configuration guide (silence 1000 ms, padding 200 ms).
SERVER_VAD_DEFAULTS: Json = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 200,
    "silence_duration_ms": 1000,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_TURN_DETECTION_DEFAULTS = {"semantic_vad": SEMANTIC_VAD_DEFAULTS, "server_vad": SERVER_VAD_DEFAULTS}


class SimError(Exception):
    """A client event the simulated service refuses; becomes an ``error`` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def default_session(session_id: str) -> Json:
    """The session object of ``session.created``."""
    return {
        "id": session_id,
        "object": "realtime.session",
        "type": "realtime",
        "model": DEFAULT_MODEL,
        "instructions": "",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": INTERNAL_RATE},
                "transcription": None,
                "turn_detection": dict(SEMANTIC_VAD_DEFAULTS),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": INTERNAL_RATE},
                "voice": "Dennis",
                "model": "inworld-tts-1.5-mini",
                "speed": 1.0,
            },
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_output_tokens": "inf",
    }


# ---------------------------------------------------------------------------- primitives


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(value: Any, param: str, expected: str) -> SimError:
    return SimError(
        "invalid_value",
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param,
    )


def missing(param: str) -> SimError:
    return SimError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def expect_object(value: Any, param: str, allowed: Collection[str] | None = None) -> Json:
    if not isinstance(value, dict):
        raise _wrong_type(value, param, "an object")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise SimError(
                    "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
                )
    return value


def expect_str(value: Any, param: str, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, param, "a string")
    if nonempty and not value:
        raise SimError("invalid_value", f"Invalid value for '{param}': must not be empty.", param)
    return value


def expect_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(value, param, "a boolean")
    return value


def expect_int(value: Any, param: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(value, param, "an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SimError("invalid_value", f"Invalid value for '{param}': {value} is out of "
                       f"range [{lo if lo is not None else '-inf'}, "
                       f"{hi if hi is not None else 'inf'}].", param)
    return value


def expect_number(value: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(value, param, "a number")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise SimError(
            "invalid_value", f"Invalid value for '{param}': {value} is out of range [{lo}, {hi}].",
            param,
        )
    return float(value)


def expect_enum(value: Any, param: str, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise SimError(
            "invalid_value",
            f"Invalid value for '{param}': {value!r}. Supported values are: {listed}.",
            param,
        )
    return value


def decode_base64_audio(value: Any, param: str, codec: AudioCodec) -> bytes:
    """Strict base64 holding whole samples of ``codec``; returns the wire bytes."""
    text = expect_str(value, param)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SimError("invalid_value", f"Invalid value for '{param}': not base64 ({exc}).",
                       param) from exc
    if len(data) > MAX_APPEND_BYTES:
        raise SimError("invalid_value", f"Invalid value for '{param}': {len(data)} bytes is "
                       f"more than the {MAX_APPEND_BYTES} allowed.", param)
    if len(data) % codec.bytes_per_sample:
        raise SimError("invalid_value", f"Invalid value for '{param}': {len(data)} bytes is not "
                       f"a whole number of {codec.bytes_per_sample}-byte {codec.name} samples.",
                       param)
    return data


# ---------------------------------------------------------------------- session pieces


def validate_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list):
        raise _wrong_type(value, param, "an array")
    if not value:
        raise SimError("invalid_value", f"Invalid value for '{param}': must not be empty.", param)
    for index, item in enumerate(value):
        expect_enum(item, f"{param}[{index}]", MODALITIES)
    if len(set(value)) != len(value):
        raise SimError("invalid_value", f"Invalid value for '{param}': duplicate entries.", param)
    return list(value)


def validate_max_tokens(value: Any, param: str) -> int | str:
    if value == "inf" and isinstance(value, str):
        return "inf"
    if isinstance(value, str):
        raise SimError("invalid_value", f"Invalid value for '{param}': {value!r}; expected an "
                       f"integer in [1, {MAX_OUTPUT_TOKENS}] or 'inf'.", param)
    return expect_int(value, param, 1, MAX_OUTPUT_TOKENS)


def validate_format(value: Any, param: str) -> Json:
    obj = expect_object(value, param, ("type", "rate"))
    if "type" not in obj:
        raise missing(f"{param}.type")
    kind = expect_enum(obj["type"], f"{param}.type", tuple(CODECS))
    codec = CODECS[kind]
    if kind == "audio/pcm":
        if "rate" in obj:
            expect_int(obj["rate"], f"{param}.rate", codec.wire_rate, codec.wire_rate)
        return {"type": kind, "rate": codec.wire_rate}
    if "rate" in obj:
        raise SimError("unknown_parameter", f"Unknown parameter: '{param}.rate' ({kind} is "
                       f"always {codec.wire_rate} Hz).", f"{param}.rate")
    return {"type": kind}


def validate_tools(value: Any, param: str) -> list[Json]:
    if not isinstance(value, list):
        raise _wrong_type(value, param, "an array")
    tools: list[Json] = []
    names: set[str] = set()
    for index, raw in enumerate(value):
        p = f"{param}[{index}]"
        tool = expect_object(raw, p, ("type", "name", "description", "parameters"))
        if "type" not in tool:
            raise missing(f"{p}.type")
        expect_enum(tool["type"], f"{p}.type", ("function",))
        if "name" not in tool:
            raise missing(f"{p}.name")
        name = expect_str(tool["name"], f"{p}.name")
        if not _FUNCTION_NAME.match(name):
            raise SimError("invalid_value", f"Invalid value for '{p}.name': {name!r} must match "
                           f"{_FUNCTION_NAME.pattern}.", f"{p}.name")
        if name in names:
            raise SimError("invalid_value", f"Invalid value for '{p}.name': duplicate function "
                           f"name {name!r}.", f"{p}.name")
        names.add(name)
        if "description" in tool:
            expect_str(tool["description"], f"{p}.description")
        if "parameters" in tool:
            expect_object(tool["parameters"], f"{p}.parameters")
        tools.append(copy.deepcopy(tool))
    return tools


def validate_tool_choice(value: Any, param: str) -> str | Json:
    if isinstance(value, str):
        return expect_enum(value, param, TOOL_CHOICES)
    obj = expect_object(value, param, ("type", "name"))
    if "type" not in obj:
        raise missing(f"{param}.type")
    expect_enum(obj["type"], f"{param}.type", ("function",))
    if "name" not in obj:
        raise missing(f"{param}.name")
    return {"type": "function", "name": expect_str(obj["name"], f"{param}.name", nonempty=True)}


def check_tool_choice_names_a_tool(tool_choice: Any, tools: list[Json], param: str) -> None:
    if isinstance(tool_choice, dict):
        name = tool_choice["name"]
        if all(tool["name"] != name for tool in tools):
            raise SimError("invalid_value", f"Invalid value for '{param}.name': no tool named "
                           f"{name!r} is configured.", f"{param}.name")


def _merge_transcription(current: Any, value: Any, param: str) -> Json | None:
    if value is None:
        return None
    obj = expect_object(value, param, ("model", "prompt", "language"))
    merged: Json = dict(current) if isinstance(current, dict) else {}
    if "model" in obj:
        merged["model"] = expect_enum(obj["model"], f"{param}.model", STT_MODELS)
    if "prompt" in obj:
        merged["prompt"] = expect_str(obj["prompt"], f"{param}.prompt")
    if "language" in obj:
        merged["language"] = expect_str(obj["language"], f"{param}.language", nonempty=True)
    if "model" not in merged:
        raise missing(f"{param}.model")
    return merged


def _merge_turn_detection(current: Any, value: Any, param: str) -> Json | None:
    if value is None:
        return None
    obj = expect_object(value, param)
    current_type = current["type"] if isinstance(current, dict) else None
    kind = expect_enum(obj.get("type", current_type or "semantic_vad"), f"{param}.type",
                       tuple(_TURN_DETECTION_DEFAULTS))
    # Switching type starts from that type's defaults: fields of the old type do not apply.
    base = current if kind == current_type else _TURN_DETECTION_DEFAULTS[kind]
    merged: Json = dict(base)
    expect_object(obj, param, tuple(_TURN_DETECTION_DEFAULTS[kind]))
    for key, raw in obj.items():
        p = f"{param}.{key}"
        if key in ("create_response", "interrupt_response"):
            merged[key] = expect_bool(raw, p)
        elif key == "eagerness":
            merged[key] = expect_enum(raw, p, EAGERNESS)
        elif key == "threshold":
            merged[key] = expect_number(raw, p, 0.0, 1.0)
        elif key in ("prefix_padding_ms", "silence_duration_ms"):
            merged[key] = expect_int(raw, p, 0)
        elif key == "idle_timeout_ms":
            merged[key] = None if raw is None else expect_int(raw, p, 0)
        elif key == "type":
            merged[key] = kind
    return merged


def _merge_audio(current: Json, value: Any, param: str) -> Json:
    obj = expect_object(value, param, ("input", "output"))
    merged = copy.deepcopy(current)
    if "input" in obj:
        p = f"{param}.input"
        patch = expect_object(obj["input"], p, ("format", "transcription", "turn_detection"))
        target = merged["input"]
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "transcription" in patch:
            target["transcription"] = _merge_transcription(
                target["transcription"], patch["transcription"], f"{p}.transcription"
            )
        if "turn_detection" in patch:
            target["turn_detection"] = _merge_turn_detection(
                target["turn_detection"], patch["turn_detection"], f"{p}.turn_detection"
            )
    if "output" in obj:
        p = f"{param}.output"
        patch = expect_object(obj["output"], p, ("format", "voice", "model", "speed"))
        target = merged["output"]
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "voice" in patch:
            target["voice"] = expect_str(patch["voice"], f"{p}.voice", nonempty=True)
        if "model" in patch:
            target["model"] = expect_str(patch["model"], f"{p}.model", nonempty=True)
        if "speed" in patch:
            target["speed"] = expect_number(patch["speed"], f"{p}.speed", *SPEED_RANGE)
    return merged


_SESSION_KEYS = (
    "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
    "temperature", "max_output_tokens",
)


def merge_session_update(current: Json, value: Any) -> Json:
    """The session after applying the partial update ``value``; raises on the first fault."""
    param = "session"
    obj = expect_object(value, param, _SESSION_KEYS)
    merged = copy.deepcopy(current)
    for key, raw in obj.items():
        p = f"{param}.{key}"
        if key == "type":
            expect_enum(raw, p, ("realtime",))
        elif key == "model":
            merged[key] = expect_str(raw, p, nonempty=True)
        elif key == "instructions":
            merged[key] = expect_str(raw, p)
        elif key == "output_modalities":
            merged[key] = validate_modalities(raw, p)
        elif key == "temperature":
            merged[key] = expect_number(raw, p, *TEMPERATURE_RANGE)
        elif key == "max_output_tokens":
            merged[key] = validate_max_tokens(raw, p)
        elif key == "tools":
            merged[key] = validate_tools(raw, p)
        elif key == "tool_choice":
            merged[key] = validate_tool_choice(raw, p)
        else:
            merged[key] = _merge_audio(merged[key], raw, p)
    check_tool_choice_names_a_tool(merged["tool_choice"], merged["tools"], f"{param}.tool_choice")
    return merged


# ------------------------------------------------------------------- response.create


_RESPONSE_KEYS = (
    "output_modalities", "instructions", "tools", "tool_choice", "max_output_tokens",
    "temperature", "metadata", "conversation", "audio",
)


def validate_response_options(value: Any) -> Json:
    """The overrides of ``response.create``'s ``response`` object (validated copies)."""
    param = "response"
    obj = expect_object(value, param, _RESPONSE_KEYS)
    out: Json = {}
    for key, raw in obj.items():
        p = f"{param}.{key}"
        if key == "output_modalities":
            out[key] = validate_modalities(raw, p)
        elif key == "instructions":
            out[key] = expect_str(raw, p)
        elif key == "tools":
            out[key] = validate_tools(raw, p)
        elif key == "tool_choice":
            out[key] = validate_tool_choice(raw, p)
        elif key == "max_output_tokens":
            out[key] = validate_max_tokens(raw, p)
        elif key == "temperature":
            out[key] = expect_number(raw, p, *TEMPERATURE_RANGE)
        elif key == "conversation":
            out[key] = expect_enum(raw, p, ("auto", "none"))
        elif key == "metadata":
            out[key] = None if raw is None else _validate_metadata(raw, p)
        else:
            audio = expect_object(raw, p, ("output",))
            output = expect_object(audio.get("output", {}), f"{p}.output", ("format", "voice"))
            checked: Json = {}
            if "format" in output:
                checked["format"] = validate_format(output["format"], f"{p}.output.format")
            if "voice" in output:
                checked["voice"] = expect_str(output["voice"], f"{p}.output.voice", nonempty=True)
            out[key] = {"output": checked}
    return out


def _validate_metadata(value: Any, param: str) -> dict[str, str]:
    obj = expect_object(value, param)
    if len(obj) > 16:
        raise SimError("invalid_value", f"Invalid value for '{param}': at most 16 keys.", param)
    for key, item in obj.items():
        expect_str(item, f"{param}.{key}")
        if len(key) > 64 or len(item) > 512:
            raise SimError("invalid_value", f"Invalid value for '{param}.{key}': keys are at most "
                           "64 characters and values 512.", f"{param}.{key}")
    return dict(obj)


# --------------------------------------------------------------- conversation.item.create


_CONTENT_TYPES = {
    "user": ("input_text", "input_audio"),
    "system": ("input_text",),
    "assistant": ("output_text",),
}


@dataclass
class NewItem:
    """A validated ``conversation.item.create`` item, before the engine gives it an id."""

    item: Json
    """Wire form without ``id``; ``input_audio`` parts carry no audio bytes."""
    audio: bytes
    """All ``input_audio`` content decoded to internal PCM16 at 24 kHz."""
    client_id: str | None
    """The ``id`` the client chose, if any."""


def validate_item(value: Any, input_codec: AudioCodec) -> NewItem:
    param = "item"
    obj = expect_object(value, param)
    if "type" not in obj:
        raise missing(f"{param}.type")
    kind = expect_enum(obj["type"], f"{param}.type", ("message", "function_call_output"))
    client_id = None
    if "id" in obj:
        client_id = expect_str(obj["id"], f"{param}.id", nonempty=True)
        if len(client_id) > 64:
            raise SimError("invalid_value", f"Invalid value for '{param}.id': longer than 64 "
                           "characters.", f"{param}.id")
    if "object" in obj:
        expect_enum(obj["object"], f"{param}.object", ("realtime.item",))
    if "status" in obj:
        expect_enum(obj["status"], f"{param}.status", ("completed", "incomplete", "in_progress"))
    if kind == "function_call_output":
        expect_object(obj, param, ("type", "id", "object", "status", "call_id", "output"))
        for key in ("call_id", "output"):
            if key not in obj:
                raise missing(f"{param}.{key}")
        call_id = expect_str(obj["call_id"], f"{param}.call_id", nonempty=True)
        output = expect_str(obj["output"], f"{param}.output")
        item: Json = {
            "object": "realtime.item",
            "type": kind,
            "status": "completed",
            "call_id": call_id,
            "output": output,
        }
        return NewItem(item, b"", client_id)
    expect_object(obj, param, ("type", "id", "object", "status", "role", "content"))
    if "role" not in obj:
        raise missing(f"{param}.role")
    role = expect_enum(obj["role"], f"{param}.role", tuple(_CONTENT_TYPES))
    if "content" not in obj:
        raise missing(f"{param}.content")
    raw_content = obj["content"]
    if not isinstance(raw_content, list):
        raise _wrong_type(raw_content, f"{param}.content", "an array")
    if not raw_content:
        raise SimError("invalid_value", f"Invalid value for '{param}.content': must not be "
                       "empty.", f"{param}.content")
    content: list[Json] = []
    audio = bytearray()
    for index, raw_part in enumerate(raw_content):
        p = f"{param}.content[{index}]"
        part = expect_object(raw_part, p)
        if "type" not in part:
            raise missing(f"{p}.type")
        part_type = expect_enum(part["type"], f"{p}.type", _CONTENT_TYPES[role])
        if part_type in ("input_text", "output_text"):
            expect_object(part, p, ("type", "text"))
            if "text" not in part:
                raise missing(f"{p}.text")
            content.append({"type": part_type, "text": expect_str(part["text"], f"{p}.text")})
            continue
        expect_object(part, p, ("type", "audio", "transcript"))
        if "audio" not in part:
            raise missing(f"{p}.audio")
        wire = decode_base64_audio(part["audio"], f"{p}.audio", input_codec)
        audio += input_codec.decode(wire).astype("<i2").tobytes()
        transcript = part.get("transcript")
        if transcript is not None:
            expect_str(transcript, f"{p}.transcript")
        content.append({"type": "input_audio", "transcript": transcript})
    item = {
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": role,
        "content": content,
    }
    return NewItem(item, bytes(audio), client_id)
