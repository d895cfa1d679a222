"""The Voice SDK token socket as a realtime-protocol adapter (``transport = "voice-sdk"``).

The protocol (seeds/05): ``POST {api_url}/api/v1/sdk/token`` with ``Authorization: Bearer
<key>`` answers ``{token, ws_url}``; the client opens ``ws_url``, sends ``{"token": ...}``
first, then streams 640-byte binary frames (20 ms of 16 kHz PCM16) and receives the agent's
audio the same way. JSON control messages: ``connected``, ``agent_ready``, ``session_ended``
(``reason``: agent_disconnected / session_closed / server_shutdown) and ``error`` (``code``,
``message``). The service does its own turn detection and barge-in.

The session above sees typed realtime events (no JSON is made or parsed for them), mapped
like this:

==============================  ===========================================================
``connected``                   ``session.created``
``session.update`` (sent)       not carried (the agent is configured server-side);
                                ``session.updated`` is synthesized once ``agent_ready`` came
``input_audio_buffer.append``   24 -> 16 kHz (soxr stream), cut into 640-byte binary frames
``input_audio_buffer.commit``   the partial frame is padded and sent, then ``TAIL_MS`` of
                                silence, so the service's own end-of-turn detector fires
                                even though the gate sends speech only
binary agent audio              ``response.created`` at the first frame after a pause, then
                                ``response.output_audio.delta`` (16 -> 24 kHz), and
                                ``response.output_audio.done`` + ``response.done`` after
                                ``REPLY_GAP_S`` without agent audio
``response.create`` (sent)      nothing, unless the service already answered every committed
                                turn (its VAD may end a turn during the local hang-over):
                                then an empty ``response.created`` + ``response.done``
``error``                       a realtime ``error`` event with the same code and message
``session_ended``               ``TransportError("session ended: <reason>")``: reconnect
==============================  ===========================================================

Dropped with a debug log, because the protocol has no way to say them: ``response.cancel``, ``conversation.item.truncate`` (the server cannot know how much of its
reply was heard), ``conversation.item.create`` (no text input, no tool results),
``input_audio_buffer.clear``. Barge-in still stops local playback at once (the session's
``StopPlayback``); the rest of the interrupted reply is ignored by the session as a
cancelled response. JSON here is the Voice SDK's own control messages. Imports websockets,
numpy, soxr, ``appliance.core.protocol`` and ``appliance.transport.http``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from appliance import __version__
from appliance.config import RealtimeSettings
from appliance.core import protocol
from appliance.core.protocol import (
    AppendAudio,
    ClearInput,
    ClientEvent,
    Commit,
    CreateResponse,
    Incoming,
    ServerEvent,
    SessionUpdate,
)
from appliance.credentials import ApiKey
from appliance.errors import AuthenticationError, TransportError
from appliance.transport.http import request_json

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/sdk/token"
SDK_RATE = 16_000
FRAME_BYTES = 640
"""One binary frame: 20 ms of 16 kHz PCM16 mono, both ways."""
TAIL_MS = 500
"""Silence sent after a committed turn: the service ends turns on silence, not on commit."""
REPLY_GAP_S = 0.5
"""No agent audio for this long ends the synthetic response."""
AUTH_CODES = frozenset({"invalid_token", "unauthorized", "token_expired", "forbidden"})


class VoiceSdkConnection:
    """An open Voice SDK socket presenting typed realtime events."""

    def __init__(self, ws: ClientConnection, session_key: str) -> None:
        self._ws = ws
        self.session_key = session_key
        # Received messages, and realtime events made here (``ServerEvent``).
        self._inbox: asyncio.Queue[str | bytes | ServerEvent | TransportError] = asyncio.Queue()
        self._agent_ready = False
        self._update_pending: Mapping[str, Any] | None = None
        self._up = self._new_stream(24_000, SDK_RATE)
        self._partial = bytearray()
        self._down = self._new_stream(SDK_RATE, 24_000)
        self._response: str | None = None
        self._item = ""
        self._responses = 0
        self._commits = 0
        self._dropped_logged: set[str] = set()
        self.frames_sent = 0
        """Binary frames sent (tests and the benchmark read it)."""
        self._inbox.put_nowait(ServerEvent("session.created", {"session": {
            "id": session_key, "object": "realtime.session", "type": "realtime"}}))
        self._reader = asyncio.create_task(self._read(), name="voice-sdk reader")

    @staticmethod
    def _new_stream(rate_in: int, rate_out: int) -> soxr.ResampleStream:
        return soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="MQ")

    # --- upstream -----------------------------------------------------------------------------

    async def send(self, event: ClientEvent) -> None:
        if isinstance(event, AppendAudio):
            narrow = self._up.resample_chunk(np.frombuffer(event.audio, dtype="<i2"))
            self._partial += narrow.astype("<i2").tobytes()
            await self._send_frames()
            return
        kind = event.type
        if isinstance(event, Commit):
            tail = self._up.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._up = self._new_stream(24_000, SDK_RATE)
            self._partial += tail.astype("<i2").tobytes()
            if self._partial:
                self._partial += bytes(-len(self._partial) % FRAME_BYTES)
            self._partial += bytes(SDK_RATE * 2 * TAIL_MS // 1000)
            self._commits += 1
            await self._send_frames()
        elif isinstance(event, CreateResponse) and self._response is None:
            if self._responses >= self._commits:
                # The service already answered this turn (its VAD can end a turn during the
                # local hang-over): close the session's request with an empty response.
                self._responses += 1
                rid = f"resp_{self.session_key}_{self._responses}"
                self._inbox.put_nowait(ServerEvent(
                    "response.created", {"response": _response(rid, "in_progress")}))
                self._inbox.put_nowait(ServerEvent(
                    "response.done", {"response": _response(rid, "completed")}))
        elif isinstance(event, SessionUpdate):
            self._update_pending = event.session
            if self._agent_ready:
                self._confirm_update()
        elif isinstance(event, ClearInput):
            self._up = self._new_stream(24_000, SDK_RATE)
            self._partial.clear()
        elif kind not in self._dropped_logged:
            self._dropped_logged.add(kind)
            log.debug("voice-sdk: %s has no equivalent in this protocol; not sent", kind)

    async def _send_frames(self) -> None:
        whole = len(self._partial) - len(self._partial) % FRAME_BYTES
        try:
            for i in range(0, whole, FRAME_BYTES):
                await self._ws.send(bytes(self._partial[i : i + FRAME_BYTES]))
                self.frames_sent += 1
        except ConnectionClosed as exc:
            raise TransportError(_closed_reason(exc)) from None
        finally:
            del self._partial[:whole]

    def _confirm_update(self) -> None:
        session, self._update_pending = self._update_pending, None
        self._inbox.put_nowait(ServerEvent("session.updated", {"session": session}))

    # --- downstream ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                self._inbox.put_nowait(message)
            self._inbox.put_nowait(TransportError("server closed the connection"))
        except ConnectionClosed as exc:
            self._inbox.put_nowait(TransportError(_closed_reason(exc)))

    async def events(self) -> AsyncIterator[Incoming]:
        """Realtime events until the socket closes or the session ends (``TransportError``)."""
        while True:
            timeout = REPLY_GAP_S if self._response is not None else None
            try:
                async with asyncio.timeout(timeout):
                    message = await self._inbox.get()
            except TimeoutError:
                for event in self._end_response():
                    yield event
                continue
            if isinstance(message, TransportError):
                raise message
            if isinstance(message, ServerEvent):
                yield message
            elif isinstance(message, bytes):
                for event in self._on_audio(message):
                    yield event
            else:
                for event in self._on_control(message):
                    yield event

    def _on_audio(self, data: bytes) -> list[ServerEvent]:
        if len(data) % 2:
            log.warning("voice-sdk: dropped an agent audio frame of %d bytes (odd)", len(data))
            return []
        out: list[ServerEvent] = []
        if self._response is None:
            self._responses += 1
            self._response = f"resp_{self.session_key}_{self._responses}"
            self._item = f"item_{self.session_key}_{self._responses}"
            out.append(ServerEvent("response.created",
                                   {"response": _response(self._response, "in_progress")}))
        wide = self._down.resample_chunk(np.frombuffer(data, dtype="<i2"))
        if wide.size:
            out.append(self._delta(wide))
        return out

    def _delta(self, pcm: np.ndarray) -> ServerEvent:
        return protocol.audio_delta(self._item, pcm.astype("<i2").tobytes(), str(self._response))

    def _end_response(self) -> list[ServerEvent]:
        if self._response is None:
            return []
        out: list[ServerEvent] = []
        tail = self._down.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._down = self._new_stream(SDK_RATE, 24_000)
        if tail.size:
            out.append(self._delta(tail))
        where = {"response_id": self._response, "item_id": self._item, "output_index": 0,
                 "content_index": 0}
        out.append(ServerEvent("response.output_audio.done", where))
        out.append(ServerEvent("response.done",
                               {"response": _response(self._response, "completed")}))
        self._response = None
        return out

    def _on_control(self, text: str) -> list[ServerEvent]:
        try:
            msg = json.loads(text)
        except ValueError:
            log.warning("voice-sdk: ignored a control message that is not JSON (%d bytes)",
                        len(text))
            return []
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "agent_ready":
            self._agent_ready = True
            if self._update_pending is not None:
                self._confirm_update()
            log.info("voice-sdk: agent ready")
        elif kind == "session_ended":
            reason = msg.get("reason")
            raise TransportError(f"session ended: {reason if isinstance(reason, str) else 'unknown'}")
        elif kind == "error":
            code, message = msg.get("code"), msg.get("message")
            return [ServerEvent("error", {"error": {
                "type": "voice_sdk_error",
                "code": code if isinstance(code, str) else str(code or ""),
                "message": message if isinstance(message, str) else "",
            }})]
        elif kind == "connected":
            pass
        else:
            log.debug("voice-sdk: ignored control message %r", kind)
        return []

    @property
    def latency(self) -> float:
        """The socket's last ping round trip, in seconds."""
        return float(self._ws.latency)

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._ws.close()


def _response(response_id: str, status: str) -> dict[str, Any]:
    return {"id": response_id, "object": "realtime.response", "status": status, "output": []}


def _closed_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost"
    return f"connection closed by server (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"


async def open_voice_sdk(settings: RealtimeSettings, key: ApiKey) -> VoiceSdkConnection:
    """Token, socket, ``{"token"}``, ``connected``; raises ``TransportError`` subclasses only."""
    data = await request_json(
        "POST", settings.api_url.rstrip("/") + TOKEN_PATH, key,
        what="voice-sdk token", timeout_s=settings.connect_timeout_s,
    )
    token, ws_url = data.get("token"), data.get("ws_url")
    if not isinstance(token, str) or not token:
        raise TransportError("voice-sdk token answer has no 'token'")
    if not isinstance(ws_url, str) or not ws_url.startswith(("ws://", "wss://")):
        raise TransportError("voice-sdk token answer has no ws:// or wss:// 'ws_url'")
    try:
        ws = await connect(
            ws_url,
            compression=None,
            open_timeout=settings.connect_timeout_s,
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_interval_s,
            close_timeout=2,
            max_size=1024 * 1024,
            user_agent_header=f"appliance/{__version__}",
        )
    except InvalidStatus as exc:
        raise TransportError(
            f"voice-sdk socket refused with HTTP {exc.response.status_code}"
        ) from None
    except InvalidURI:
        raise TransportError("voice-sdk token answer has an invalid 'ws_url'") from None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
        raise TransportError(
            f"voice-sdk socket: {text or ('connect timed out' if isinstance(exc, TimeoutError) else exc.__class__.__name__)}"
        ) from None
    try:
        await ws.send(json.dumps({"token": token}))
        async with asyncio.timeout(settings.open_timeout_s):
            first = await ws.recv()
        _expect_connected(first)
    except BaseException as exc:
        await ws.close()
        if isinstance(exc, TimeoutError):
            raise TransportError("voice-sdk: no 'connected' from the server") from None
        if isinstance(exc, ConnectionClosed):
            raise TransportError(f"voice-sdk: {_closed_reason(exc)}") from None
        raise
    session_key = f"appliance-{uuid.uuid4().hex[:12]}"
    log.info("voice-sdk: connected", extra={"SESSION_ID": session_key})
    return VoiceSdkConnection(ws, session_key)


def _expect_connected(first: str | bytes) -> None:
    msg: Any = None
    if isinstance(first, str):
        try:
            msg = json.loads(first)
        except ValueError:
            msg = None
    if not isinstance(msg, dict):
        raise TransportError("voice-sdk: the server's first message is not a JSON control message")
    if msg.get("type") == "error":
        code, message = str(msg.get("code") or "-"), str(msg.get("message") or "")
        error = AuthenticationError if code in AUTH_CODES else TransportError
        raise error(f"voice-sdk refused the token: {code}: {message}")
    if msg.get("type") == "session_ended":
        raise TransportError(f"session ended: {msg.get('reason')}")
    if msg.get("type") != "connected":
        raise TransportError(f"voice-sdk: expected 'connected', got {msg.get('type')!r}")
