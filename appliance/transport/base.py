"""The one interface every transport presents to the daemon: realtime-protocol text frames.

Each transport is an adapter. Whatever it carries on its wire (base64 PCM16 or G.711 in JSON
events, Opus RTP plus a data channel, binary PCM frames plus control messages), it hands the
daemon the OpenAI Realtime GA events the sans-I/O ``Session`` understands and accepts the
events the ``Session`` produces. So the session, gate, player, LEDs and systemd parts never
know which transport is in use (README "Transports"). Imports only the standard library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class Connection(Protocol):
    """One open connection; ``send`` is called from a single writer task."""

    session_key: str
    """An id for this connection, for logs."""

    async def send(self, text: str) -> None:
        """Send one client event (a JSON text frame); ``TransportError`` when it is gone."""
        ...

    def frames(self) -> AsyncIterator[str | bytes]:
        """Server events until the connection ends (then ``TransportError``)."""
        ...

    async def close(self) -> None:
        """Close the connection and release what it holds (idempotent)."""
        ...

    @property
    def latency(self) -> float:
        """Seconds the last keepalive round trip took (0 when unknown)."""
        ...
