"""Server profiles: which variant of the real service the simulator plays.

The simulator stands in for Inworld's Realtime API, so by default it behaves like the
service rather than like any client's expectations: reply audio streams at real time, the
first audio comes a few hundred ms after the response starts, transcripts arrive on their
own schedule, and it is tolerant where the service is (``session.providerData``, the beta
``modalities`` alias). A :class:`ServerProfile` holds those knobs; :data:`PROFILES` names
the variants that ``appliance simulate --profile NAME`` and the tests select. Names can be
combined with commas (``fast,auto-tool-response``); later names override earlier ones.

    realistic            the default: real-time pacing (1x), first audio 300 ms after
                         response.created, responses the server creates itself start 200 ms
                         after the turn ends, the input transcript 400 ms after the commit,
                         audio transcript deltas on their own cadence (not one per chunk),
                         deltas keep coming for 150 ms after a cancel
    fast                 the old test speed: replies at 4x real time, no delays (first audio,
                         server-made responses, transcripts, cancels), transcripts in lockstep
                         with the audio; for tests where timing is not the point
    keeps-turn-detection ignores ``turn_detection: null`` (keeps server VAD on): it ends
                         turns itself and creates the responses
    auto-tool-response   after a ``function_call_output`` item the server creates the next
                         response by itself (Inworld's default), unless
                         ``session.providerData.auto_tool_response`` is false
    param-less-errors    a session.update it does not like (e.g. an unknown voice) is
                         refused with an ``error`` whose ``param`` is null
    slow-first-audio     first audio 2.5 s after response.created
    text-and-audio       with output_modalities audio+text, both the audio transcript
                         stream and a separate output_text stream
    strict               rejects what the GA schema rejects (``providerData``,
                         ``response.modalities``) instead of logging it

Imports only the standard library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerProfile:
    """How the simulated service behaves beyond the protocol's letter."""

    reply_pace: float = 1.0
    """Reply audio speed as a multiple of real time; 0 sends as fast as the socket takes."""
    first_audio_delay_ms: int = 300
    """From ``response.created`` to the first output delta (model and TTS latency)."""
    response_delay_ms: int = 200
    """From a turn's end (server VAD) to the ``response.created`` the server makes itself."""
    input_transcript_delay_ms: int = 400
    """From the commit of a user audio item to its ``input_audio_transcription.completed``."""
    cancel_lag_ms: int = 150
    """From ``response.cancel`` (or an interrupting speech_started) to the cancelled
    ``response.done``: deltas already in the pipeline keep coming meanwhile."""
    transcript_lockstep: bool = False
    """True: one audio transcript delta before each audio chunk (the old simulator); False:
    the transcript leads the audio on a cadence of its own, one delta per several chunks."""
    strict_schema: bool = False
    """True: refuse what the GA schema does not know (``session.providerData``,
    ``response.modalities``); False: accept it as the service does and log it."""
    keeps_turn_detection: bool = False
    """Ignore ``turn_detection: null``: server VAD stays on, ends turns, creates responses."""
    auto_tool_response: bool = False
    """Create the next response after a ``function_call_output`` item by itself (unless
    ``session.providerData.auto_tool_response`` is false)."""
    param_less_errors: bool = False
    """Refuse a session.update it dislikes (unknown voice included) with ``param: null``."""
    text_and_audio: bool = False
    """With output_modalities audio+text, stream output_text deltas besides the audio
    transcript."""

    def with_names(self, names: str) -> ServerProfile:
        """This profile with the named variants (comma-separated) applied in order."""
        profile = self
        for name in (part.strip() for part in names.split(",")):
            if not name:
                continue
            if name not in PROFILES:
                known = ", ".join(sorted(PROFILES))
                raise ValueError(f"unknown simulator profile {name!r} (known: {known})")
            profile = dataclasses.replace(profile, **PROFILES[name])
        return profile


PROFILES: dict[str, dict[str, Any]] = {
    "realistic": {},
    "fast": {"reply_pace": 4.0, "first_audio_delay_ms": 0, "response_delay_ms": 0,
             "input_transcript_delay_ms": 0, "cancel_lag_ms": 0, "transcript_lockstep": True},
    "keeps-turn-detection": {"keeps_turn_detection": True},
    "auto-tool-response": {"auto_tool_response": True},
    "param-less-errors": {"param_less_errors": True},
    "slow-first-audio": {"first_audio_delay_ms": 2500},
    "text-and-audio": {"text_and_audio": True},
    "strict": {"strict_schema": True},
}
"""Named variants: the fields each sets on top of the profile it is applied to."""

REALISTIC = ServerProfile()
"""The default of :class:`~realtime_sim.server.RealtimeSimulator`."""
FAST = REALISTIC.with_names("fast")
"""The engine's default (it has no clock of its own) and the tests' opt-in for speed."""


def resolve(profile: str | ServerProfile | None, default: ServerProfile = REALISTIC
            ) -> ServerProfile:
    """A profile from a name list, an instance, or None (``default``)."""
    if profile is None:
        return default
    if isinstance(profile, ServerProfile):
        return profile
    return REALISTIC.with_names(profile)
