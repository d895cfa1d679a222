"""The realtime WebSocket client: the only module that imports websockets' client.

Connects with ``Authorization: Basic <key>`` (never in the URL), adds ``key=<session id>``
and ``protocol=realtime`` to the query, turns permessage-deflate off (it triples the CPU
cost of base64 audio for nothing) and maps websockets' exceptions to ours at the boundary.
Events are JSON text frames both ways (``appliance.transport.codec``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from appliance import __version__
from appliance.config import RealtimeSettings
from appliance.core.protocol import AppendAudio, ClientEvent, Incoming
from appliance.credentials import ApiKey
from appliance.errors import AuthenticationError, TransportError
from appliance.transport import codec

MAX_FRAME = 32 * 1024 * 1024  # a 20 MiB delta must not kill the session


def session_url(base: str, session_key: str) -> str:
    return f"{base}?{urlencode({'key': session_key, 'protocol': 'realtime'})}"


class RealtimeConnection:
    """One open connection. ``send`` is called from a single writer task.

    ``sample_width``: bytes per sample of the audio in the JSON (2: PCM16; 1: G.711, which
    ``appliance.transport.wire`` converts on top of this)."""

    def __init__(self, ws: ClientConnection, session_key: str, sample_width: int = 2) -> None:
        self._ws = ws
        self.session_key = session_key
        self.sample_width = sample_width

    async def send(self, event: ClientEvent) -> None:
        try:
            if isinstance(event, AppendAudio) and not event.event_id:
                # Bytes sent as a text frame (websockets >= 14): the append goes out as
                # built, with no str in between.
                await self._ws.send(codec.append_frame(event.audio), text=True)
            else:
                await self._ws.send(codec.encode(event))
        except ConnectionClosed as exc:
            raise TransportError(_closed_reason(exc)) from None

    async def send_text(self, text: str) -> None:
        """One text frame as it is (the benchmark counts the codec's frames itself)."""
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise TransportError(_closed_reason(exc)) from None

    async def events(self) -> AsyncIterator[Incoming]:
        """Server events until the connection closes (then ``TransportError``)."""
        width = self.sample_width
        try:
            async for frame in self._ws:
                yield codec.decode(frame, width)
        except ConnectionClosed as exc:
            raise TransportError(_closed_reason(exc)) from None
        raise TransportError("server closed the connection")

    async def close(self) -> None:
        await self._ws.close()

    @property
    def latency(self) -> float:
        """Seconds the last keepalive ping took to be answered (0 before the first pong)."""
        return float(self._ws.latency)


def _closed_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost"
    return (
        f"connection closed by server (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
    )


async def open_connection(
    settings: RealtimeSettings, key: ApiKey, sample_width: int = 2
) -> RealtimeConnection:
    """Connect and return the open connection; raises ``TransportError`` subclasses only."""
    session_key = f"appliance-{uuid.uuid4().hex[:12]}"
    url = session_url(settings.url, session_key)
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": key.authorization()},
            compression=None,
            open_timeout=settings.connect_timeout_s,
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_interval_s,
            close_timeout=2,
            max_size=MAX_FRAME,
            max_queue=64,
            user_agent_header=f"appliance/{__version__}",
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthenticationError(
                f"the server refused the API key from {key.source} (HTTP {status})"
            ) from None
        raise TransportError(f"handshake refused with HTTP {status}") from None
    except InvalidURI:
        raise TransportError(f"invalid realtime.url {settings.url!r}") from None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise TransportError(_describe_failure(exc)) from None
    return RealtimeConnection(ws, session_key, sample_width)


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "connect timed out"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if "Name or service not known" in text or "Temporary failure in name resolution" in text:
            return "DNS failure"
        return text
    return f"{exc.__class__.__name__}"
