"""The one interface every transport presents to the daemon: typed realtime events.

Each transport is an adapter. Whatever it carries on its wire (base64 PCM16 or G.711 in JSON
events, Opus RTP plus a data channel, binary PCM frames plus control messages), it hands the
daemon the OpenAI Realtime GA server events the sans-I/O ``Session`` understands, as
``ServerEvent`` (``Malformed`` for a frame it could not use), and accepts the typed client
events the ``Session`` produces (``appliance.core.protocol``). So the session, gate, player,
LEDs and systemd parts never know which transport is in use, nor its wire format
(docs/transports.md). Imports only the standard library and ``appliance.core.protocol``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from appliance.core.protocol import ClientEvent, Incoming


class Connection(Protocol):
    """One open connection; ``send`` is called from a single writer task."""

    session_key: str
    """An id for this connection, for logs."""

    async def send(self, event: ClientEvent) -> None:
        """Send one client event; ``TransportError`` when the connection is gone."""
        ...

    def events(self) -> AsyncIterator[Incoming]:
        """Server events until the connection ends (then ``TransportError``)."""
        ...

    async def close(self) -> None:
        """Close the connection and release what it holds (idempotent)."""
        ...

    @property
    def latency(self) -> float:
        """Seconds the last keepalive round trip took (0 when unknown)."""
        ...
