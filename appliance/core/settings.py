"""What the session needs to know from the config, as one frozen value.

``appliance.config`` maps its ``Config`` to this (``config.session_settings``), so the core
does not depend on the config module. Imports only the standard library.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class BargeIn(enum.StrEnum):
    """What interrupts the agent (``[gate] barge_in``); each value is its TOML spelling."""

    LOCAL = "local"
    """The local gate's speech onset (and, with server turns, the server's)."""
    SERVER = "server"
    """Only the server's ``speech_started`` (server turn detection)."""
    OFF = "off"
    """Nothing: the agent finishes speaking."""


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """The session's settings; one value per config (re)load."""

    session: Mapping[str, Any] = field(default_factory=lambda: {"type": "realtime"})
    """The ``session`` object for ``session.update``, tools not included."""
    tools: tuple[Mapping[str, Any], ...] = ()
    """``session.tools``: the function definitions, in the API's shape."""
    local_turns: bool = True
    """The local gate ends turns (commit + ``response.create``); else the server's VAD does."""
    barge_in: BargeIn = BargeIn.LOCAL
    """What interrupts the agent."""
    interrupt_response: bool = True
    """Server turn detection's ``interrupt_response``: it cancels its own response."""
    create_response: bool = True
    """Server turn detection's ``create_response``: it creates the response itself."""
    greeting: str = ""
    """A user text item sent once per run when the first session is ready ("" = none)."""
    fresh_after_idle_s: float = 600.0
    """After this long with no turn, the conversation's items are deleted; 0 = never."""
    max_turns: int = 20
    """Turns kept in the conversation; 0 = no limit."""
    response_timeout_s: float = 15.0
    """No server event for this long while a response is expected: the connection is dead."""
    renew_after_s: float = 3300.0
    """The session is renewed at a quiet moment after this long."""

    @property
    def server_interrupts(self) -> bool:
        """With server turns the server cancels its own response on ``speech_started``."""
        return not self.local_turns and self.interrupt_response

    @property
    def server_creates(self) -> bool:
        """With server turns the server creates the response after ``speech_stopped``."""
        return not self.local_turns and self.create_response

    def full_session(self) -> dict[str, Any]:
        """The whole ``session`` object (a fresh dict: adapters may rewrite their copy)."""
        session = dict(self.session)
        if self.tools:
            session["tools"] = [dict(tool) for tool in self.tools]
        return session
