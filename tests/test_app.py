"""The application layer's seams: the supervisor's classification and backoff on a fake
connection factory, the link's connection-scoped tasks on an in-memory connection, and the
daemon's shutdown deadline with a tool program running (real daemon, loopback simulator).

The supervisor and link tests run no real sleeps: the supervisor's clock and sleep are
given to it, the in-memory connection hands frames over as fast as they are queued.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from waiting import until, wait_until

from appliance.app.link import Ended, Link
from appliance.app.supervisor import Down, Failure, RetryPolicy, Supervisor, classify
from appliance.config import parse_config, session_settings
from appliance.core.backoff import Backoff
from appliance.core.protocol import AppendAudio, ClientEvent, Incoming
from appliance.core.session import Action, CallTool, Send, Session
from appliance.credentials import ApiKey
from appliance.daemon import STOP_TASKS_S, Daemon, _stop_within
from appliance.errors import AuthenticationError, ConfigError, TransportError
from appliance.tools import Toolbox
from appliance.transport import codec
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv

pytest_plugins = ["alsa_env"]

KEY = "dGVzdDphcHAta2V5"
SESSION_CREATED = '{"type":"session.created","event_id":"e1","session":{"id":"s1"}}'


# --- the supervisor, on a fake connection factory ------------------------------------------


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Script:
    """A connection factory and a serve that play a list of outcomes, one per attempt:
    an exception to raise at connect, ("serve", outcome, seconds up) with outcome an
    ``Ended`` to return or an exception to raise while serving.

    Each delay is recorded and skipped (``Supervisor.wake``), unless ``skip`` is False;
    when the script is played the supervisor is stopped."""

    def __init__(self, steps: list[Any], *, skip: bool = True) -> None:
        self.steps = list(steps)
        self.skip = skip
        self.now = 0.0
        self.conns: list[FakeConn] = []
        self.downs: list[Down] = []
        self.slept: list[float] = []
        self.connecting = 0
        self._serving: Any = None
        self.sup: Supervisor[FakeConn] | None = None

    async def connect(self) -> FakeConn:
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        self._serving = step
        conn = FakeConn(len(self.conns))
        self.conns.append(conn)
        return conn

    async def serve(self, conn: FakeConn) -> Ended:
        _, outcome, up_s = self._serving
        self.now += up_s
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, Ended)
        return outcome

    def down(self, down: Down) -> None:
        self.downs.append(down)
        self.slept.append(down.delay)
        if not self.steps:
            raise asyncio.CancelledError  # the script is played: stop the supervisor
        if self.skip:
            assert self.sup is not None
            self.sup.wake()

    def supervisor(
        self, policy: RetryPolicy | None = None, backoff: Backoff | None = None
    ) -> Supervisor[FakeConn]:
        def connecting() -> None:
            self.connecting += 1

        self.sup = Supervisor(
            self.connect,
            self.serve,
            connecting=connecting,
            down=self.down,
            waited=lambda: None,
            policy=policy or RetryPolicy(auth_retry_s=60.0, healthy_after_s=30.0),
            # The ceiling of each delay, no jitter.
            backoff=backoff or Backoff(first=1.0, cap=30.0, rand=lambda: 1.0),
            clock=lambda: self.now,
        )
        return self.sup

    def play(self, policy: RetryPolicy | None = None) -> None:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(self.supervisor(policy).run())


def test_failures_are_classed() -> None:
    assert classify(AuthenticationError("refused")) is Failure.REFUSED
    assert classify(TransportError("reset")) is Failure.RETRY
    assert classify(ConfigError("realtime.transport", "not installed")) is Failure.FATAL
    assert classify(RuntimeError("bug")) is Failure.FATAL


def test_transient_failures_back_off_and_a_refused_key_waits_without_advancing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Script([
        TransportError("refused connection"),
        TransportError("refused connection"),
        AuthenticationError("the server refused the API key"),
        ("serve", TransportError("reset by peer"), 1.0),
    ])
    with caplog.at_level(logging.INFO, logger="appliance.app.supervisor"):
        s.play()
    assert s.slept == [1.0, 2.0, 60.0, 4.0]
    assert [(d.reason, d.planned) for d in s.downs] == [
        ("refused connection", False),
        ("refused connection", False),
        ("the server refused the API key", False),
        ("reset by peer", False),
    ]
    assert s.connecting == 4 and s.conns[0].closed
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("WARNING", "connect failed: refused connection"),
        ("WARNING", "connect failed: refused connection"),
        ("ERROR", "the server refused the API key; retrying in 60 s"),
        ("WARNING", "connection lost: reset by peer"),
    ]


def test_a_planned_reconnect_is_no_failure_and_a_healthy_session_resets_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Script([
        TransportError("down"),  # 1 s
        TransportError("down"),  # 2 s
        ("serve", Ended("session renewal", planned=True), 5.0),  # at once, backoff kept
        ("serve", TransportError("reset"), 5.0),  # 4 s: the third failure in a row
        ("serve", Ended("no server event for 20 s", planned=False), 31.0),  # healthy: reset, 1 s
        ("serve", TransportError("reset"), 1.0),  # 2 s
    ])
    with caplog.at_level(logging.INFO, logger="appliance.app.supervisor"):
        s.play()
    assert s.slept == [1.0, 2.0, 0.0, 4.0, 1.0, 2.0]
    assert [d.planned for d in s.downs] == [False, False, True, False, False, False]
    assert all(c.closed for c in s.conns)
    assert ("INFO", "reconnecting: session renewal") in [
        (r.levelname, r.getMessage()) for r in caplog.records
    ]


def test_a_reconnect_asked_for_while_offline_cuts_the_backoff_wait_short() -> None:
    s = Script([TransportError("down"), TransportError("down")], skip=False)

    async def scenario() -> float:
        sup = s.supervisor(backoff=Backoff(first=30.0, cap=60.0, rand=lambda: 1.0))
        running = asyncio.create_task(sup.run())
        await until(lambda: s.slept, 5, "the first failure")
        started = time.monotonic()
        sup.wake()  # a [realtime] reload, offline
        await until(lambda: len(s.slept) == 2, 5, "the second attempt")
        took = time.monotonic() - started
        with pytest.raises(asyncio.CancelledError):
            await running
        return took

    took = asyncio.run(scenario())
    assert s.slept == [30.0, 60.0] and s.connecting == 2
    assert took < 1.0


def test_a_fatal_failure_ends_the_supervisor_after_closing_the_connection() -> None:
    s = Script([TransportError("down"), ("serve", RuntimeError("a bug in serve"), 1.0)])
    with pytest.raises(RuntimeError, match="a bug in serve"):
        asyncio.run(s.supervisor().run())
    assert s.slept == [1.0] and s.conns[0].closed
    s = Script([ConfigError("realtime.transport", "webrtc is not installed")])
    with pytest.raises(ConfigError):
        asyncio.run(s.supervisor().run())
    assert s.slept == []


# --- the link, on an in-memory connection ----------------------------------------------------


class MemoryConn:
    """A ``Connection``: frames are what the test queues (None ends the stream), sends are
    kept."""

    session_key = "memory"
    latency = 0.0

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[ClientEvent] = []
        self.stuck = False
        """The server stopped reading: a send never completes."""

    async def send(self, event: ClientEvent) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(event)

    async def events(self) -> AsyncIterator[Incoming]:
        while (frame := await self.incoming.get()) is not None:
            yield codec.decode(frame)

    async def close(self) -> None:
        pass


class Harness:
    def __init__(self, tools: list[dict[str, Any]]) -> None:
        config = parse_config(
            {"realtime": {"url": "ws://127.0.0.1:9/"}, "tools": tools, "gpio": {"enabled": False}},
            "<test_app>",
        )
        self.session = Session(session_settings(config))
        self.events: list[Incoming] = []
        self.link = Link(
            self.session,
            Toolbox(config.tools, _NoHost(), secret="secret"),
            dispatch=self.dispatch,
            on_event=self.on_event,
            stop_clock=lambda: None,
            open_timeout=lambda: 5.0,
        )

    def on_event(self, event: Incoming, now: float) -> None:
        self.events.append(event)
        self.session.server_event(event, now)
        self.dispatch()

    def dispatch(self) -> None:
        for action in self.session.take():
            if isinstance(action, Send):
                self.link.send(action.event)


class _NoHost:
    def set_muted(self, muted: bool) -> None:
        raise AssertionError("no built-in tool here")

    def set_volume(self, percent: int) -> int:
        raise AssertionError("no built-in tool here")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def hang_tool(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    pidfile = tmp_path / "hang.pid"
    # The file appears with the pid in it (a rename): a daemon stopped at once may kill the
    # tool between the open and the write, and an empty file read as no pid (seen under load).
    part = f"{str(pidfile)!r} + '.part'"
    code = (
        f"import os, time; open({part}, 'w').write(str(os.getpid()));"
        f" os.replace({part}, {str(pidfile)!r}); time.sleep(60)"
    )
    return {"name": "hang", "command": [sys.executable, "-c", code], "timeout_s": 60}, pidfile


def test_a_requested_reconnect_returns_and_ends_the_tool_runs_of_the_connection(
    tmp_path: Path,
) -> None:
    tool, pidfile = hang_tool(tmp_path)
    h = Harness([tool])

    async def scenario() -> Ended:
        conn = MemoryConn()
        assert not h.link.request("too early", planned=True)  # nothing served yet
        serving = asyncio.create_task(h.link.serve(conn))
        await conn.incoming.put(SESSION_CREATED)
        await until(lambda: h.events, 5, "the first event")
        h.link.call_tool(CallTool("call_1", "hang", "{}"))
        await until(pidfile.exists, 10, "the tool program")
        assert h.link.request("session renewal", planned=True)
        assert not h.link.request("a second reason", planned=False)  # the first one stands
        ended = await asyncio.wait_for(serving, 5)
        assert not h.link.serving
        return ended

    assert asyncio.run(scenario()) == Ended("session renewal", planned=True)
    pid = int(pidfile.read_text())
    assert wait_until(lambda: not _alive(pid), 3), "the tool program outlived its connection"


def test_a_connection_that_ends_is_a_failure_and_its_queue_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness([])

    async def scenario() -> MemoryConn:
        conn = MemoryConn()
        serving = asyncio.create_task(h.link.serve(conn))
        await conn.incoming.put(SESSION_CREATED)
        await until(lambda: conn.sent, 5, "the session.update")
        conn.stuck = True
        for _ in range(3):
            h.link.send(AppendAudio(b"\0\0" * 160))
        await asyncio.sleep(0)  # the writer takes one and hangs in send
        await conn.incoming.put(None)  # then the server closes
        with pytest.raises(TransportError, match="server closed the connection"):
            await asyncio.wait_for(serving, 5)
        return conn

    with caplog.at_level(logging.WARNING, logger="appliance.app.link"):
        conn = asyncio.run(scenario())
    assert [codec.to_dict(e)["type"] for e in conn.sent] == ["session.update"]
    assert h.link.outq.empty()
    assert "dropped 2 frames (2 of audio) queued for the previous connection" in caplog.text


# --- the daemon's shutdown ---------------------------------------------------------------------


def test_a_task_that_outlives_the_shutdown_deadline_is_named_and_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancels: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancels.append("first")
        try:
            await asyncio.sleep(30)  # ignores the first cancel, as a hung close would
        except asyncio.CancelledError:
            cancels.append("second")
            raise

    async def scenario() -> float:
        task = asyncio.create_task(stubborn(), name="connection")
        await asyncio.sleep(0)
        started = time.monotonic()
        await _stop_within([task], 0.2)
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    with caplog.at_level(logging.ERROR, logger="appliance.daemon"):
        took = asyncio.run(scenario())
    assert cancels == ["first", "second"]
    assert 0.2 <= took < 1.0
    assert "connection did not stop within 0.2 s of shutdown" in caplog.text



@pytest.fixture
def quiet_mic(alsa_env: AlsaEnv) -> Iterator[None]:
    alsa_env.write_mic(np.zeros(16000 * 30, dtype=np.int16))
    yield


@pytest.mark.usefixtures("quiet_mic")
def test_shutdown_stops_a_running_tool_within_its_deadline(tmp_path: Path) -> None:
    tool, pidfile = hang_tool(tmp_path)
    calls: list[Action] = []

    async def scenario() -> float:
        script = SimScript(tool_calls=(ToolCall("hang"),))
        async with RealtimeSimulator(api_key=KEY, profile="fast", script=script) as sim:
            config = parse_config(
                {
                    "realtime": {"url": sim.url},
                    "audio": {"capture_device": "mic", "playback_device": "spk"},
                    "gate": {"mode": "push_to_talk"},
                    "gpio": {"enabled": False},
                    "session_policy": {"greeting": "Hello", "fresh_after_idle_s": 0, "max_turns": 0},
                    "tools": [tool],
                },
                "<test_app>",
            )
            daemon = Daemon(config, ApiKey(KEY, "test"), observers=[calls.append])
            stop = asyncio.Event()
            runner = asyncio.create_task(daemon.run(stop))
            try:
                await until(pidfile.exists, 15, "the tool program")
            finally:
                stop.set()
                started = time.monotonic()
                await asyncio.wait_for(runner, 15)
            return time.monotonic() - started

    took = asyncio.run(scenario())
    assert any(isinstance(a, CallTool) and a.name == "hang" for a in calls)
    assert took < STOP_TASKS_S
    pid = int(pidfile.read_text())
    assert wait_until(lambda: not _alive(pid), 3), "the tool program outlived the daemon"
