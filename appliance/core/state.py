"""The appliance's one explicit state, as the LEDs, sd_notify STATUS and the journal show it."""

from __future__ import annotations

import enum


class State(enum.Enum):
    STARTING = "starting"
    CONNECTING = "connecting"
    READY = "ready"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    MUTED = "muted"
    OFFLINE = "offline"
    ERROR = "error"

    @property
    def words(self) -> str:
        """How STATUS= and the log say it."""
        return self.value.capitalize()
