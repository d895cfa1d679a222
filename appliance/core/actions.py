"""What the session asks the daemon to do: the actions drained with ``Session.take()``.

Imports the standard library and ``appliance.core``.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core.protocol import ClientEvent
from appliance.core.state import State


@dataclass(frozen=True, slots=True)
class Send:
    """A client event for the server (the transport encodes it)."""

    event: ClientEvent


@dataclass(frozen=True, slots=True)
class Play:
    """Reply audio (PCM16 mono 24 kHz) for the player, tagged with its item."""

    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndOfReply:
    """No more audio is coming for now: play out what is queued."""


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Barge-in or disconnect: stop the speaker now and report what was played."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: State
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transcript:
    role: str  # "user" or "agent"
    text: str


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """One turn's latency: end of user speech to the first reply audio written to the
    device; ``end_of_turn_ms``: end of user speech to the commit (None: the server's VAD)."""

    turn_id: int
    latency_ms: int
    end_of_turn_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TooShort:
    """A push-to-talk press held too little audio to commit; the user gets a cue."""

    sent_ms: int


@dataclass(frozen=True, slots=True)
class CallTool:
    """Run a tool and hand the output to ``Session.tool_result`` with the same ``call_id``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Drop this connection and open a new one. ``immediate``: a planned renewal (or a
    session the server ended), no backoff; otherwise the connection is considered dead."""

    reason: str
    immediate: bool = False


Action = (
    Send
    | Play
    | EndOfReply
    | StopPlayback
    | StateChanged
    | Transcript
    | TurnTimings
    | TooShort
    | CallTool
    | Reconnect
)
