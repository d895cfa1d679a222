"""One connection, served: its reader, its single writer, the outgoing queue, the tool runs.

Owns the tasks of a connection. ``Link.serve`` runs the reader, the writer and every tool
run the session asks for in one ``asyncio.TaskGroup`` scoped to the connection, so all of
them end with it (a tool program still running answers a session that is gone: it is
killed). A connection ends in one of two ways: a failure (a ``TransportError`` the reader
or the writer met, raised from ``serve`` for the supervisor to class), or a reconnect asked
for (``request``: renewal, a button, a reload, a session rule), which ``serve`` returns as
an ``Ended`` value, not an exception.

Imports: the standard library, ``appliance.core.protocol``, ``appliance.core.session``, ``appliance.errors``,
``appliance.tools``, ``appliance.transport.base``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from appliance.core.protocol import AppendAudio, ClientEvent, Incoming
from appliance.core.session import CallTool, Session
from appliance.errors import TransportError
from appliance.tools import Toolbox
from appliance.transport.base import Connection

log = logging.getLogger(__name__)

OUTGOING_FRAMES = 256  # about 10 s of 40 ms chunks; past that the socket is stuck


@dataclass(frozen=True)
class Ended:
    """A connection ended because a reconnect was asked for."""

    reason: str
    planned: bool
    """At once, as planned (renewal, button, reload); else after the backoff delay, as a
    failure (a session rule that gave up on the server)."""


class Link:
    """Serves one connection at a time (``serve``); between connections it holds nothing.

    ``dispatch`` routes the session's actions; ``on_event(event, now)`` takes each server
    event; ``stop_clock`` stops the session's timer when a connection ends.
    """

    def __init__(
        self,
        session: Session,
        toolbox: Toolbox,
        *,
        dispatch: Callable[[], None],
        on_event: Callable[[Incoming, float], None],
        stop_clock: Callable[[], None],
        open_timeout: Callable[[], float],
    ) -> None:
        self._session = session
        self._toolbox = toolbox
        self._dispatch = dispatch
        self._on_event = on_event
        self._stop_clock = stop_clock
        self._open_timeout = open_timeout
        self.outq: asyncio.Queue[ClientEvent] = asyncio.Queue(OUTGOING_FRAMES)
        self._end: Callable[[Ended | TransportError], bool] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tools: set[asyncio.Task[None]] = set()

    @property
    def serving(self) -> bool:
        return self._end is not None

    def send(self, event: ClientEvent) -> None:
        """Queue a client event for the writer; when the queue is full the socket is stuck
        and the frame is dropped (counted, logged every 100)."""
        try:
            self.outq.put_nowait(event)
        except asyncio.QueueFull:
            self._session.dropped_chunks += 1
            if self._session.dropped_chunks % 100 == 1:
                log.warning(
                    "server is not reading; dropped %d outgoing frames",
                    self._session.dropped_chunks,
                )

    def request(self, reason: str, *, planned: bool) -> bool:
        """End the connection being served; False when none is, or it already ends (the
        first reason stands)."""
        return self._end is not None and self._end(Ended(reason, planned))

    def call_tool(self, call: CallTool) -> None:
        """Run a tool in the connection's task group (cancelled with the connection)."""
        if self._group is None:
            log.warning("tool %s: no connection to answer; not run", call.name)
            return
        task = self._group.create_task(self._run_tool(call), name=f"tool {call.name}")
        self._tools.add(task)
        task.add_done_callback(self._tools.discard)

    async def serve(self, conn: Connection) -> Ended:
        """Run one connection until it fails (``TransportError``) or a reconnect is asked
        for (returned)."""
        self.drop_outgoing()  # nothing from a previous connection goes to this one
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Ended | TransportError] = loop.create_future()

        def end(result: Ended | TransportError) -> bool:
            if outcome.done():
                return False
            outcome.set_result(result)
            return True

        self._end = end
        try:
            self._session.connected()
            self._dispatch()
            async with asyncio.TaskGroup() as group:
                self._group = group
                tasks = [
                    group.create_task(self._failing(self._reader(conn), end), name="reader"),
                    group.create_task(self._failing(self._writer(conn), end), name="writer"),
                ]
                try:
                    result = await outcome
                finally:
                    self._group = None
                    self._stop_clock()
                    for task in (*tasks, *self._tools):
                        task.cancel()
        finally:
            self._end = None
            self._group = None
            self.drop_outgoing()
        if isinstance(result, TransportError):
            raise result
        return result

    @staticmethod
    async def _failing(
        work: Awaitable[None], end: Callable[[Ended | TransportError], bool]
    ) -> None:
        """A reader's or writer's ``TransportError`` ends the connection as a failure."""
        try:
            await work
        except TransportError as exc:
            end(exc)

    async def _reader(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        events = conn.events()
        try:  # not wait_for (see appliance.app.supervisor): a stop during set-up ends this
            async with asyncio.timeout(self._open_timeout()):
                first = await anext(events)
        except TimeoutError:
            raise TransportError("no session.created from the server") from None
        self._on_event(first, loop.time())
        async for event in events:
            self._on_event(event, loop.time())
        raise TransportError("server closed the connection")

    async def _writer(self, conn: Connection) -> None:
        while True:
            await conn.send(await self.outq.get())

    async def _run_tool(self, call: CallTool) -> None:
        output = await self._toolbox.call(call.name, call.arguments)
        self._session.tool_result(call.call_id, output, asyncio.get_running_loop().time())
        self._dispatch()

    def drop_outgoing(self) -> None:
        """Empty the outgoing queue, saying what was lost.

        The bound on upstream audio in flight across a drop (docs/reliability.md): at most
        ``OUTGOING_FRAMES`` frames wait for a live socket, and what is still queued when the
        connection ends is dropped, not replayed: a new session has no use for half a turn.
        """
        frames = appends = 0
        while not self.outq.empty():
            event = self.outq.get_nowait()
            frames += 1
            appends += isinstance(event, AppendAudio)
        if frames:
            log.warning(
                "dropped %d frames (%d of audio) queued for the previous connection",
                frames,
                appends,
            )
