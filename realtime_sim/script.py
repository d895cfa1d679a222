"""What a test tells the simulated model to do, beyond echoing the user.

Owns :class:`SimScript`, the per-simulator scenario. It is immutable and shared by every
connection; each :class:`~realtime_sim.engine.SimSession` keeps its own progress
through it. New behaviours (faults, delays, refusals) are added as new fields with defaults
that keep today's behaviour.

Imports nothing from the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    """One function call the simulated model makes."""

    name: str
    """Function name; it must be among the tools the session (or response) offers."""
    arguments: str = "{}"
    """The call's arguments as JSON text, sent verbatim in the argument deltas."""

    def __post_init__(self) -> None:
        try:
            json.loads(self.arguments)
        except ValueError as exc:
            raise ValueError(f"ToolCall {self.name!r}: arguments are not JSON: {exc}") from exc


@dataclass(frozen=True)
class SimScript:
    """A scenario for the simulated model. The default script only echoes."""

    tool_calls: tuple[ToolCall, ...] = ()
    """Issued together, instead of audio, on the first response of a session whose tools
    include every named function and whose tool_choice is not "none". Once per session."""
    max_session_s: float | None = None
    """The service's cap on a session's duration (OpenAI: 60 minutes): when a connection
    reaches it the server sends an ``error`` with code ``session_expired`` and closes the
    connection. None: no cap."""
