"""The response lifecycle: one explicit phase per connection, changed in one place.

    IDLE ──request / server will create──▶ REQUESTED ──response.created──▶ ACTIVE
      ▲                                                                      │ barge-in
      └──────────────── response.done (or a disconnect) ◀── CANCELLED ◀──────┘

``expected_since`` (when a ``response.create`` went out, or the server's turn ended with
``create_response``) is what the response deadline counts from; it can be set while a
response is still ACTIVE or CANCELLED (the server's next one is on its way).
``pending_create``: a ``response.create`` waits for the active response to be done.
Imports the standard library only.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    IDLE = "idle"
    """No response, none expected."""
    REQUESTED = "requested"
    """A response is expected and has not started."""
    ACTIVE = "active"
    """``response.created`` came; its audio, transcript and calls are used."""
    CANCELLED = "cancelled"
    """Interrupted: the rest of its events are ignored until ``response.done``."""


class Reply:
    """The current response of one connection."""

    def __init__(self) -> None:
        self.phase = Phase.IDLE
        # Derived from ``phase`` in ``_set``: plain attributes, read on every audio delta.
        self.exists = False
        """``response.created`` came and ``response.done`` has not (ACTIVE or CANCELLED)."""
        self.active = False
        self.cancelled = False
        self.id = ""
        self.audio_items: list[str] = []
        self.calls = 0  # function calls issued in this response
        self.expected_since: float | None = None
        self.pending_create = False

    def _set(self, phase: Phase) -> None:
        """The one place the phase changes."""
        if phase is self.phase:
            return
        self.phase = phase
        self.active = phase is Phase.ACTIVE
        self.cancelled = phase is Phase.CANCELLED
        self.exists = self.active or self.cancelled
        if log.isEnabledFor(logging.DEBUG):
            log.debug("response %s: %s", self.id or "-", phase.value)

    def request(self, now: float) -> bool:
        """A response is wanted: True when ``response.create`` goes out now, False when it
        waits (``pending_create``) for the active response to be done."""
        if self.exists:
            self.pending_create = True
            return False
        self.expected_since = now
        self._set(Phase.REQUESTED)
        return True

    def server_will_create(self, now: float) -> None:
        """The server ends the turn and creates the response itself."""
        self.expected_since = now
        if self.phase is Phase.IDLE:
            self._set(Phase.REQUESTED)

    def refused(self) -> None:
        """The service refused our ``response.create``: no response is coming for it."""
        self.expected_since = None
        if self.phase is Phase.REQUESTED:
            self._set(Phase.IDLE)

    def created(self, response_id: str) -> None:
        self.id = response_id
        self.audio_items = []
        self.calls = 0
        self.expected_since = None
        self._set(Phase.ACTIVE)

    def cancel(self) -> bool:
        """Barge-in: True when an active response is now cancelled (``response.cancel``)."""
        if self.phase is not Phase.ACTIVE:
            return False
        self._set(Phase.CANCELLED)
        return True

    def done(self) -> int:
        """``response.done``: back to IDLE; returns the calls the response issued."""
        calls = self.calls if self.exists else 0
        self.calls = 0
        self.audio_items = []
        self.expected_since = None
        self._set(Phase.IDLE)
        return calls

    def last_audio_item(self) -> str | None:
        return self.audio_items[-1] if self.exists and self.audio_items else None

    def reset(self) -> None:
        """The connection is gone, and its response with it."""
        self.done()
        self.pending_create = False
