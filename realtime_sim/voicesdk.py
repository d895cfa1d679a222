"""The Voice SDK token socket on loopback (seeds/05), for the voice-sdk transport's tests.

``POST /api/v1/sdk/token`` (``Authorization: Bearer <key>``, else 401) answers
``{token, ws_url}``; a token is good for one socket. On ``ws_url`` the first message must be
``{"token": ...}`` (else an ``error`` with code ``invalid_token`` and close code 4001); then
``connected`` and ``agent_ready``. Binary frames must be 640 bytes (20 ms of 16 kHz PCM16;
any other size gets an ``error`` with code ``invalid_audio_frame`` and is dropped), text
messages after the token get ``unexpected_message``.

Behind it is the same engine as the realtime simulator (:class:`SimSession`) with
``server_vad`` turn detection, so the agent echoes each user turn back, as 640-byte frames
paced at ``reply_pace`` times real time; user speech during a reply stops it (the service
does its own barge-in). :meth:`VoiceSdkSimulator.end_sessions` sends ``session_ended``.

Imports aiohttp (server), numpy, soxr and the simulator's engine and endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from typing import Any

import numpy as np
import soxr
from aiohttp import WSMsgType, web

from realtime_sim.endpoint import Endpoint
from realtime_sim.engine import SimSession

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/sdk/token"
WS_PATH = "/api/v1/sdk/ws"
FRAME_BYTES = 640
TURN_DETECTION = {"type": "server_vad", "silence_duration_ms": 400, "prefix_padding_ms": 300,
                  "threshold": 0.5, "create_response": True, "interrupt_response": True}


class VoiceSdkSimulator(Endpoint):
    """``async with VoiceSdkSimulator(api_key=...) as sim``; ``sim.api_url`` is the base URL."""

    def __init__(self, *, api_key: str, host: str = "127.0.0.1", port: int = 0,
                 reply_pace: float = 4.0) -> None:
        super().__init__(host=host, port=port)
        self._api_key = api_key
        self._reply_pace = reply_pace
        self._tokens: set[str] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.token_requests: list[str] = []
        """Path and query of every token request (the key must never be in them)."""
        self.sessions: list[SimSession] = []
        self.received_audio: list[bytearray] = []
        """Per socket: the user's PCM16 16 kHz audio, as received."""
        self.frame_sizes: list[int] = []
        """Size of every binary frame received, all sockets."""
        self.sent_frames = 0
        """Agent audio frames sent, all sockets."""
        self.errors_sent: list[dict[str, Any]] = []

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(TOKEN_PATH, self._token)
        router.add_get(WS_PATH, self._socket)

    async def start(self) -> None:
        await super().start()
        log.info("voice-sdk simulator listening on %s", self.api_url)

    async def _close_peers(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def end_sessions(self, reason: str = "session_closed") -> None:
        """Tell every open socket its session ended, then close it."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"type": "session_ended", "reason": reason}))
            await ws.close()

    # ---------------------------------------------------------------------------- token

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests.append(request.path_qs)
        if request.headers.getall("Authorization", []) != [f"Bearer {self._api_key}"]:
            return web.json_response({"error": "invalid API key"}, status=401)
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        return web.json_response({"token": token, "ws_url": f"ws://{self._host}:"
                                  f"{self._runner.addresses[0][1] if self._runner else 0}{WS_PATH}"})

    # ---------------------------------------------------------------------------- socket

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1024 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            try:
                async with asyncio.timeout(5):
                    first = await ws.receive()
                token = json.loads(first.data).get("token") if first.type == WSMsgType.TEXT else None
            except (TimeoutError, ValueError, AttributeError):
                token = None
            if not isinstance(token, str) or token not in self._tokens:
                await self._send_error(ws, "invalid_token", "The first message must be "
                                       '{"token": ...} with a token from /api/v1/sdk/token.')
                await ws.close(code=4001, message=b"invalid token")
                return ws
            self._tokens.discard(token)
            await self._serve(ws)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _send_error(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        error = {"type": "error", "code": code, "message": message}
        self.errors_sent.append(error)
        await ws.send_str(json.dumps(error))

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        session = SimSession()
        session.receive(json.dumps({"type": "session.update", "session": {
            "audio": {"input": {"turn_detection": TURN_DETECTION}}}}))
        session.events_to_send()
        self.sessions.append(session)
        audio = bytearray()
        self.received_audio.append(audio)
        await ws.send_str(json.dumps({"type": "connected"}))
        await ws.send_str(json.dumps({"type": "agent_ready"}))
        wake = asyncio.Event()
        writer = asyncio.create_task(self._write(ws, session, wake))
        self._tasks.add(writer)
        up = soxr.ResampleStream(16_000, 24_000, 1, dtype="int16", quality="MQ")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self.frame_sizes.append(len(msg.data))
                    if len(msg.data) != FRAME_BYTES:
                        await self._send_error(ws, "invalid_audio_frame", "Audio frames must be "
                                               f"{FRAME_BYTES} bytes (20 ms of 16 kHz PCM16); got "
                                               f"{len(msg.data)}.")
                        continue
                    audio += msg.data
                    wide = up.resample_chunk(np.frombuffer(msg.data, dtype="<i2"))
                    session.receive(json.dumps({"type": "input_audio_buffer.append", "audio":
                                                base64.b64encode(wide.tobytes()).decode()}))
                    wake.set()
                elif msg.type == WSMsgType.TEXT:
                    await self._send_error(ws, "unexpected_message", "Only audio frames are "
                                           "expected after the token.")
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self._tasks.discard(writer)

    async def _write(self, ws: web.WebSocketResponse, session: SimSession,
                     wake: asyncio.Event) -> None:
        """The socket's audio sender: turns reply deltas into paced 640-byte frames."""
        down = soxr.ResampleStream(24_000, 16_000, 1, dtype="int16", quality="MQ")
        pending = bytearray()
        frame_s = 0.020 / self._reply_pace if self._reply_pace else 0.0
        while not ws.closed:
            wake.clear()
            if session.response_active and len(pending) < 4 * FRAME_BYTES:
                session.pump(1)
            for event in session.events_to_send():
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    pcm = np.frombuffer(base64.b64decode(event["delta"]), dtype="<i2")
                    pending += down.resample_chunk(pcm).astype("<i2").tobytes()
                elif kind == "input_audio_buffer.speech_started":
                    pending.clear()  # the user talks over the agent: it stops
                elif kind == "response.done":
                    pending += down.resample_chunk(np.zeros(0, np.int16), last=True).tobytes()
                    down = soxr.ResampleStream(24_000, 16_000, 1, dtype="int16", quality="MQ")
                    pending += bytes(-len(pending) % FRAME_BYTES)
            if len(pending) >= FRAME_BYTES:
                await ws.send_bytes(bytes(pending[:FRAME_BYTES]))
                del pending[:FRAME_BYTES]
                self.sent_frames += 1
                await asyncio.sleep(frame_s)
                continue
            if session.response_active:
                await asyncio.sleep(0)
                continue
            await wake.wait()
