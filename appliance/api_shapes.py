"""The configured session and tools in the realtime API's own shape (``session.update``).

Owns the mapping from ``[session]`` and ``[[tools]]`` to the JSON-ready objects the API
takes: which fields are sent (unset ones are left to the server), where each lives in the
nested ``audio`` object, and the audio format this daemon always uses (PCM16, 24 kHz; a
G.711 wire format is swapped in by the transport). Imports only the standard library (and
the settings types, for annotations only).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.settings import SessionSettings, ToolSettings

PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}


def session_object(s: SessionSettings, *, turn_detection_null: bool) -> dict[str, Any]:
    """The ``session`` object for ``session.update``, tools not included.

    ``turn_detection_null``: the device ends turns itself (gate mode "vad", "push_to_talk"
    or "wake"), so the server's turn detection is switched off whatever is configured.
    """
    session: dict[str, Any] = {"type": "realtime"}
    for name in ("model", "instructions", "temperature", "tool_choice"):
        value = getattr(s, name)
        if value is not None:
            session[name] = value
    if s.output_modalities is not None:
        session["output_modalities"] = list(s.output_modalities)
    if s.max_output_tokens is not None:
        session["max_output_tokens"] = s.max_output_tokens
    audio_in: dict[str, Any] = {"format": dict(PCM_FORMAT)}
    if s.transcription is not None:
        audio_in["transcription"] = dict(s.transcription)
    if turn_detection_null:
        audio_in["turn_detection"] = None
    elif s.turn_detection is not None:
        audio_in["turn_detection"] = dict(s.turn_detection)
    audio_out: dict[str, Any] = {"format": dict(PCM_FORMAT)}
    for api_name, value in (("voice", s.voice), ("model", s.tts_model), ("speed", s.speed)):
        if value is not None:
            audio_out[api_name] = value
    session["audio"] = {"input": audio_in, "output": audio_out}
    if s.provider_data is not None:
        session["providerData"] = copy.deepcopy(dict(s.provider_data))
    return session


def tool_object(tool: ToolSettings) -> dict[str, Any]:
    """One function definition for ``session.tools``."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
    }
