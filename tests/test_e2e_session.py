"""The session's life end to end: the real daemon (in this process, on its own event loop)
against the loopback simulator over real websockets, with real alsa-lib file devices.

Scripted tool calls (valid, invalid, hanging), the greeting, a connection dropped
mid-response, auth refusal, a dead connection, renewal before the service's duration cap,
pruning of old items and WebSocket pings. Turns are driven with push-to-talk over a silent
microphone, so no VAD timing is involved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import waiting
from daemon_env import running as daemon_running

from appliance.config import Config, parse_config
from appliance.core.session import Action, CallTool, Play, StateChanged, StopPlayback, Transcript
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.transport.websocket import open_connection
from realtime_sim.faults import Fault
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv

pytest_plugins = ["alsa_env"]

KEY = "dGVzdDpzZXNzaW9uLWtleQ=="
ENV_SOURCE = "environment variable INWORLD_API_KEY"


@pytest.fixture(autouse=True)
def silent_mic(alsa_env: AlsaEnv) -> Iterator[None]:
    alsa_env.write_mic(np.zeros(16000 * 90, dtype=np.int16))  # 90 s of a quiet room
    yield


def config(url: str, tools: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> Config:
    base: dict[str, Any] = {
        "realtime": {"url": url},
        "audio": {"capture_device": "mic", "playback_device": "spk"},
        "gate": {"mode": "push_to_talk"},
        "gpio": {"enabled": False},
        "session_policy": {"fresh_after_idle_s": 0, "max_turns": 0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    if tools:
        base["tools"] = tools
    return parse_config(base)


class Run:
    """A running daemon and what it did: actions with their time, in order."""

    daemon: Daemon

    def __init__(self, sim: RealtimeSimulator) -> None:
        self.sim = sim
        self.actions: list[tuple[float, Action]] = []
        self.t0 = time.monotonic()

    def observe(self, action: Action) -> None:
        self.actions.append((time.monotonic() - self.t0, action))

    def of(self, kind: type[Any]) -> list[Any]:
        return [a for _, a in self.actions if isinstance(a, kind)]

    def states(self) -> list[State]:
        return [a.state for a in self.of(StateChanged)]

    def types(self, conn: int | None = None) -> list[str]:
        events = self.sim.received if conn is None else self.sim.sessions[conn].received
        return [e["type"] for e in events]

    async def until(self, what: Callable[[], bool], timeout: float, why: str) -> None:
        await waiting.until(what, timeout, lambda: f"{why}; states {self.states()}; sent {self.types()}")

    async def turn(self, seconds: float = 0.4) -> None:
        """Hold the talk button over the silent microphone, then release: a committed turn."""
        self.daemon.set_talking(True)
        await asyncio.sleep(seconds)
        self.daemon.set_talking(False)


@asynccontextmanager
async def running(cfg: Config, sim: RealtimeSimulator, key: str = KEY) -> AsyncIterator[Run]:
    run = Run(sim)
    run.daemon = Daemon(cfg, ApiKey(key, ENV_SOURCE), observers=[run.observe])
    async with daemon_running(run.daemon):
        yield run


def ready(run: Run) -> Callable[[], bool]:
    return lambda: run.daemon.session.state is State.READY


# --- tools and greeting -----------------------------------------------------------------------

WEATHER = """
import json, sys
args = json.load(sys.stdin)
print(json.dumps({"city": args["city"], "sky": "clear"}))
"""


def test_greeting_then_scripted_tool_calls_valid_invalid_and_hanging(tmp_path: Any) -> None:
    weather = tmp_path / "weather.py"
    weather.write_text(WEATHER)
    tools: list[dict[str, Any]] = [
        {"name": "get_time"},
        {"name": "weather", "command": [sys.executable, str(weather)], "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "slow", "command": [sys.executable, "-c", "import time; time.sleep(60)"], "timeout_s": 0.5},
    ]
    tools.append({"name": "mute"})
    script = SimScript(tool_calls=(ToolCall("get_time"), ToolCall("weather", '{"city": 5}'), ToolCall("weather", '{"city": "Oslo"}'), ToolCall("slow"), ToolCall("mute", '{"muted": true}')))

    async def scenario() -> Run:
        async with RealtimeSimulator(api_key=KEY, profile="fast", script=script, reply_pace=20) as sim:
            cfg = config(sim.url, tools, session_policy={"greeting": "Greet the user"})
            async with running(cfg, sim) as run:
                await run.until(lambda: bool(run.of(Transcript)) and run.daemon.session.state is State.MUTED, 20, "the reply after the tools")
                assert run.daemon.frontend is not None and run.daemon.controls.muted  # the mic is gated
            return run

    run = asyncio.run(scenario())
    sim = run.sim
    types = run.types(0)
    # Greeting: a user text item, then one response; it calls five functions.
    assert types[:3] == ["session.update", "conversation.item.create", "response.create"]
    assert sim.received[1]["item"]["content"] == [{"type": "input_text", "text": "Greet the user"}]
    assert [a.name for a in run.of(CallTool)] == ["get_time", "weather", "weather", "slow", "mute"]
    # All five answered (same call_ids), then exactly one response.create.
    assert types[3:] == ["conversation.item.create"] * 5 + ["response.create"]
    calls = {r.item["call_id"]: r.item for r in sim.sessions[0].conversation.records() if r.item["type"] == "function_call"}
    outputs = {e["item"]["call_id"]: json.loads(e["item"]["output"]) for e in sim.received[3:8]}
    assert set(outputs) == set(calls)
    by_args = {(calls[c]["name"], calls[c]["arguments"]): out for c, out in outputs.items()}
    assert "local_time" in by_args[("get_time", "{}")]
    assert by_args[("weather", '{"city": 5}')] == {"error": "invalid arguments: argument city: expected string, got 5"}
    assert by_args[("weather", '{"city": "Oslo"}')] == {"city": "Oslo", "sky": "clear"}
    assert by_args[("slow", "{}")] == {"error": "timed out after 0.5 s and was stopped"}
    assert by_args[("mute", '{"muted": true}')] == {"muted": True}
    # The model's answer used them, and was spoken.
    agent = [t.text for t in run.of(Transcript) if t.role == "agent"]
    assert len(agent) == 1 and "slow returned {\"error\": \"timed out after 0.5 s and was stopped\"}" in agent[0]
    assert run.of(Play)
    assert State.THINKING in run.states() and run.states()[-1] is State.MUTED


# --- connection lifetime -------------------------------------------------------------------------


def test_dropped_mid_response_stops_playback_reconnects_and_the_next_turn_works(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Run:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=1.0, faults=[Fault("drop", "3")]) as sim:
            async with running(config(sim.url), sim) as run:
                await run.until(ready(run), 10, "the first session")
                await run.turn(1.0)  # a 1 s echo reply, dropped after 3 of its 10 deltas
                await run.until(lambda: sim.connections == 2 and ready(run)(), 10, "the reconnect")
                await asyncio.sleep(0.3)
                plays_before = len(run.of(Play))
                await run.turn(0.4)
                await run.until(lambda: len(run.of(Play)) > plays_before and ready(run)(), 10, "the next turn")
            return run

    with caplog.at_level(logging.INFO):
        run = asyncio.run(scenario())
    states = run.states()
    # Speaking when the connection dropped: playback stopped, offline, then back.
    i = states.index(State.SPEAKING)
    assert states[i + 1 : i + 4] == [State.OFFLINE, State.CONNECTING, State.READY]
    assert run.of(StopPlayback)
    stop_at = next(t for t, a in run.actions if isinstance(a, StopPlayback))
    offline_at = next(t for t, a in run.actions if isinstance(a, StateChanged) and a.state is State.OFFLINE)
    assert abs(stop_at - offline_at) < 0.05
    # The second connection was configured again, and its turn was answered.
    assert run.types(1)[0] == "session.update"
    assert run.sim.sessions[1].received[0]["session"] == run.sim.sessions[0].received[0]["session"]
    assert run.types(1)[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert any("connection lost" in r.getMessage() for r in caplog.records)
    # First retry within 1 s (full jitter).
    back_at = [t for t, a in run.actions if isinstance(a, StateChanged) and a.state is State.CONNECTING and t > offline_at][0]
    assert back_at - offline_at < 1.5


def test_auth_refusal_names_the_key_source_and_retries_slowly(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Run:
        async with RealtimeSimulator(api_key="c29tZW9uZTplbHNl", profile="fast") as sim:
            async with running(config(sim.url), sim) as run:
                await run.until(lambda: State.OFFLINE in run.states(), 10, "the refusal")
                await asyncio.sleep(2.0)
            return run

    with caplog.at_level(logging.DEBUG):
        run = asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"the server refused the API key from {ENV_SOURCE} (HTTP 401); retrying in 60 s" in errors
    assert run.states().count(State.CONNECTING) == 1  # no second attempt within 2 s
    offline = [a for a in run.of(StateChanged) if a.state is State.OFFLINE]
    assert ENV_SOURCE in offline[0].detail
    # (websockets' own debug lines show headers; the journal handler redacts those: test_logs)
    assert all(KEY not in r.getMessage() for r in caplog.records if r.name.startswith("appliance"))


def test_no_event_while_a_response_is_expected_reconnects() -> None:
    async def scenario() -> tuple[Run, float]:
        async with RealtimeSimulator(api_key=KEY, profile="fast", faults=[Fault("silent")]) as sim:
            cfg = config(sim.url, realtime={"response_timeout_s": 1.0})
            async with running(cfg, sim) as run:
                await run.until(ready(run), 10, "the first session")
                await run.turn(0.5)
                started = time.monotonic()
                await run.until(lambda: sim.connections == 2 and ready(run)(), 10, "the reconnect")
                waited = time.monotonic() - started
            return run, waited

    run, waited = asyncio.run(scenario())
    assert 1.0 <= waited < 4.5, waited
    offline = [a for a in run.of(StateChanged) if a.state is State.OFFLINE]
    assert offline[0].detail == "no server event for 1 s while a response was expected"


def test_session_is_renewed_before_the_cap_and_not_mid_turn() -> None:
    async def scenario() -> Run:
        async with RealtimeSimulator(api_key=KEY, profile="fast", script=SimScript(max_session_s=9.0), reply_pace=8) as sim:
            cfg = config(sim.url, realtime={"renew_after_s": 1.0})
            async with running(cfg, sim) as run:
                await run.until(ready(run), 10, "the first session")
                await run.turn(1.5)  # the session is past its renewal age during this turn
                await run.until(lambda: sim.connections == 2 and ready(run)(), 15, "the renewal")
            return run

    run = asyncio.run(scenario())
    sim = run.sim
    assert not sim.sessions[0].expired  # renewed before the service's cap
    assert run.types(1) == ["session.update"]
    # Not mid-turn: the first session's turn was committed, answered and played out first.
    assert run.types(0)[-2:] == ["input_audio_buffer.commit", "response.create"]
    last_play = max(t for t, a in run.actions if isinstance(a, Play))
    renewal = next(t for t, a in run.actions if isinstance(a, StateChanged) and a.state is State.CONNECTING and t > last_play)
    assert renewal - last_play >= 3.0  # a quiet moment
    assert State.OFFLINE not in run.states()  # a planned renewal is not an outage


def test_the_service_cap_ends_a_session_and_the_daemon_reconnects_at_once() -> None:
    async def scenario() -> Run:
        async with RealtimeSimulator(api_key=KEY, profile="fast", script=SimScript(max_session_s=1.0)) as sim:
            async with running(config(sim.url), sim) as run:
                await run.until(lambda: sim.connections == 2 and ready(run)(), 10, "the reconnect")
            return run

    run = asyncio.run(scenario())
    assert run.sim.sessions[0].expired
    assert run.types(1) == ["session.update"]


def test_old_turns_are_deleted_to_keep_at_most_n() -> None:
    async def scenario() -> Run:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=20) as sim:
            cfg = config(sim.url, session_policy={"max_turns": 1})
            async with running(cfg, sim) as run:
                await run.until(ready(run), 10, "the session")
                for n in (1, 2):
                    await run.turn(0.5)
                    await run.until(lambda n=n: run.types(0).count("response.create") == n and ready(run)(), 10, f"turn {n}")  # type: ignore[misc]
                await run.until(lambda: "conversation.item.delete" in run.types(0), 5, "the pruning")
                await asyncio.sleep(0.3)
            return run

    run = asyncio.run(scenario())
    records = run.sim.sessions[0].conversation.records()
    assert [(r.item["type"], r.item["role"]) for r in records] == [("message", "user"), ("message", "assistant")]
    deleted = [e["item_id"] for e in run.sim.received if e["type"] == "conversation.item.delete"]
    assert len(deleted) == 2 and not set(deleted) & {r.id for r in records}
    assert not [e for e in run.sim.received if e["type"] == "error"]


def test_websocket_pings_keep_the_connection_alive() -> None:
    async def scenario() -> float | None:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            cfg = config(sim.url, realtime={"ping_interval_s": 1.0})
            conn = await open_connection(cfg.realtime, ApiKey(KEY, ENV_SOURCE))
            try:
                assert conn.latency == 0.0
                # The first ping goes out after one interval; its pong sets the latency.
                await waiting.until(lambda: conn.latency > 0, 5, "a pong")
                return conn.latency
            finally:
                await conn.close()

    latency = asyncio.run(scenario())
    assert latency is not None and latency > 0  # a ping went out and its pong came back
