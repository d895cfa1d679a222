"""websockets adapter for the simulator: handshake checks, one reader and one writer per
connection, reply pacing.

Owns the network side of the loopback realtime server: it refuses handshakes the real
service would refuse (wrong path 404, missing ``key`` / ``protocol=realtime`` query 400,
wrong ``Authorization: Basic <key>`` 401), feeds each connection's text frames to its own
:class:`~realtime_sim.engine.SimSession`, and sends the session's events from a single
writer loop that paces reply audio as its :class:`~realtime_sim.profiles.ServerProfile`
says (real time, first audio a few hundred ms after ``response.created``, by default; the
``fast`` profile for tests where timing is not the point) and feeds the engine its clock
for the profile's other delays. All protocol behaviour lives in the engine; switchable faults (refused handshakes, drops, malformed
frames, ...) in ``faults``, which sees every handshake and every outgoing event.

Imports websockets and the simulator's engine.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from realtime_sim.engine import DEFAULT_REPLY_CHUNK_MS, Json, SimSession
from realtime_sim.faults import ConnectionFaults, Fault, FaultPlan
from realtime_sim.profiles import ServerProfile, resolve
from realtime_sim.script import SimScript

log = logging.getLogger(__name__)

PATH = "/api/v1/realtime/session"
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest client frame accepted (an append of 15 MiB of audio, base64-encoded, fits)."""


class RealtimeSimulator:
    """A loopback realtime server; use ``async with RealtimeSimulator(api_key=...) as sim``."""

    def __init__(
        self,
        *,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        script: SimScript | None = None,
        reply_chunk_ms: int = DEFAULT_REPLY_CHUNK_MS,
        reply_pace: float | None = None,
        faults: Sequence[Fault] = (),
        profile: str | ServerProfile | None = None,
    ) -> None:
        """``profile``: a :class:`ServerProfile` or names from ``realtime_sim.profiles``
        (``"fast"``, ``"fast,auto-tool-response"``, ...); default ``realistic``.
        ``reply_pace`` overrides the profile's pace (0: as fast as the socket takes)."""
        self.profile = resolve(profile)
        if reply_pace is None:
            reply_pace = self.profile.reply_pace
        if reply_pace < 0:
            raise ValueError(f"reply_pace must be >= 0, got {reply_pace}")
        self._api_key = api_key
        self._host = host
        self._port = port
        self._script = script
        self._reply_chunk_ms = reply_chunk_ms
        self._reply_pace = reply_pace
        self._server: Server | None = None
        self._faults = FaultPlan(tuple(faults))
        self._attempts = 0  # handshakes seen, refused ones included: faults count these
        self._attempt_of: dict[ServerConnection, int] = {}
        self._live_faults: set[ConnectionFaults] = set()
        self.faults_tripped: list[list[str]] = []
        """Per accepted connection, the faults that acted on it (realtime_sim.faults)."""
        self.received: list[Json] = []
        """Every client event of every connection, in arrival order."""
        self.sessions: list[SimSession] = []
        """One engine per accepted connection, in order."""
        self.request_paths: list[str] = []
        """Path and query of every accepted handshake."""

    @property
    def connections(self) -> int:
        """Handshakes accepted so far."""
        return len(self.sessions)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The endpoint without its query (clients add ``?key=...&protocol=realtime``)."""
        return f"ws://{self._host}:{self.port}{PATH}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._check_handshake,
            compression=None,
            max_size=MAX_FRAME_BYTES,
        )
        log.info("realtime simulator listening on %s", self.url)

    async def close(self) -> None:
        """Close every connection (code 1001) and wait for their handlers to finish."""
        server, self._server = self._server, None
        for faults in self._live_faults:
            faults.release()
        if server is not None:
            server.close()
            await server.wait_closed()

    def drop_connections(self) -> int:
        """A fault on demand: cut every open connection (TCP FIN, no closing handshake), as
        a Wi-Fi drop that the client notices. Returns how many were cut."""
        if self._server is None:
            return 0
        connections = list(self._server.connections)
        for connection in connections:
            connection.transport.close()
        return len(connections)

    async def __aenter__(self) -> RealtimeSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------- handshake

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        attempt, self._attempts = self._attempts, self._attempts + 1
        if (status := self._faults.refusal(attempt)) is not None:
            return connection.respond(HTTPStatus(status), "Simulated fault: handshake refused.\n")
        self._attempt_of[connection] = attempt
        url = urlsplit(request.path)
        if url.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"Not found: {url.path}\n")
        query = parse_qs(url.query)
        if not query.get("key", [""])[0]:
            return connection.respond(
                HTTPStatus.BAD_REQUEST, "Missing required query parameter 'key'.\n"
            )
        if query.get("protocol") != ["realtime"]:
            return connection.respond(
                HTTPStatus.BAD_REQUEST, "Query parameter 'protocol' must be 'realtime'.\n"
            )
        if request.headers.get_all("Authorization") != [f"Basic {self._api_key}"]:
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, "Missing or invalid Authorization header.\n"
            )
        return None

    # ---------------------------------------------------------------------- connection

    async def _handle(self, websocket: ServerConnection) -> None:
        session = SimSession(self._script, reply_chunk_ms=self._reply_chunk_ms,
                             profile=self.profile)
        session.advance(asyncio.get_running_loop().time())
        faults = self._faults.for_connection(self._attempt_of.pop(websocket, 0))
        self.faults_tripped.append(faults.tripped)
        self._live_faults.add(faults)
        self.sessions.append(session)
        self.request_paths.append(websocket.request.path if websocket.request else "")
        log.info("simulator session %s connected", session.session_id)
        wake = asyncio.Event()
        reader = asyncio.create_task(self._read(websocket, session, wake))
        cap = session.script.max_session_s

        def expire() -> None:
            session.expire()
            wake.set()

        expiry = None if cap is None else asyncio.get_running_loop().call_later(cap, expire)
        try:
            await self._write(websocket, session, reader, wake, faults)
        except ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            self._live_faults.discard(faults)
            reader.cancel()
            await asyncio.wait([reader])
            if not reader.cancelled() and (error := reader.exception()) is not None:
                raise error
            log.info("simulator session %s disconnected", session.session_id)

    async def _read(self, websocket: ServerConnection, session: SimSession,
                    wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in websocket:
                session.advance(loop.time())
                if isinstance(message, str):
                    seen = len(session.received)
                    session.receive(message)
                    self.received.extend(session.received[seen:])
                else:
                    session.receive_binary(message)
                wake.set()
        except ConnectionClosed:
            pass
        finally:
            wake.set()

    async def _write(self, websocket: ServerConnection, session: SimSession,
                     reader: asyncio.Task[None], wake: asyncio.Event,
                     faults: ConnectionFaults) -> None:
        """The connection's only sender: flushes engine events and paces reply chunks."""
        loop = asyncio.get_running_loop()
        next_chunk_at = loop.time()
        first_audio_s = self.profile.first_audio_delay_ms / 1000
        paced_response: str | None = None  # the response whose first-audio delay was set
        while True:
            wake.clear()
            session.advance(loop.time())
            for event in session.events_to_send():
                if not await faults.send(websocket, event):
                    return  # a fault ended the connection
            if reader.done():
                return
            if session.expired:  # the duration cap: the error is sent, now the close
                await websocket.close(1000, "session expired")
                return
            timeout: float | None = None
            now = loop.time()
            if session.response_active and session.active_response_id != paced_response:
                # A new response: the model and the TTS take a while before the first audio.
                paced_response = session.active_response_id
                next_chunk_at = max(now, next_chunk_at) + first_audio_s
            if session.response_active:
                if now >= next_chunk_at:
                    audio_ms = session.pump(1)
                    delay = audio_ms / 1000 / self._reply_pace if self._reply_pace else 0.0
                    next_chunk_at = max(now, next_chunk_at) + delay
                    if delay == 0:
                        await asyncio.sleep(0)  # let the reader in between chunks
                    continue
                timeout = next_chunk_at - now
            if (deadline := session.next_deadline) is not None:
                timeout = deadline - now if timeout is None else min(timeout, deadline - now)
                timeout = max(0.0, timeout)
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                pass


async def serve_forever(port: int, api_key: str, *, host: str = "127.0.0.1",
                        script: SimScript | None = None, faults: Sequence[Fault] = (),
                        profile: str | None = None) -> None:
    """Run a simulator until SIGINT or SIGTERM; print its URL once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with RealtimeSimulator(
            api_key=api_key, host=host, port=port, script=script, faults=faults, profile=profile
        ) as sim:
            print(f"Realtime simulator listening on {sim.url}", flush=True)
            if profile is not None:
                print(f"Profile: {profile}", flush=True)
            for fault in faults:
                print(f"Fault on: {fault.name}{':' + fault.arg if fault.arg else ''} "
                      f"({'every connection' if fault.attempts == 0 else f'first {fault.attempts} connection attempt(s)'})",
                      flush=True)
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def run_simulator(port: int, api_key: str, faults: Sequence[Fault] = (),
                  profile: str | None = None) -> None:
    """Blocking entry point for ``appliance simulate --port N [--fault SPEC ...]
    [--profile NAME[,NAME...]]``."""
    asyncio.run(serve_forever(port, api_key, faults=faults, profile=profile))
