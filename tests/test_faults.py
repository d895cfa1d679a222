"""A hostile server against the real daemon: every simulator fault, one daemon per fault.

The daemon runs in-process (its real session, websockets client, capture and playback
threads on the ALSA ``file`` plugin) against the loopback simulator with a fault switched
on (realtime_sim.faults). Turns are push-to-talk presses over a recorded voice, so
each test knows exactly when a turn starts. For each fault the test asserts what the issue
asks: the daemon keeps running or reconnects, its state says what is wrong, the log has one
clear line and no traceback, the outgoing and playback queues stay within their bounds, and
the next turn works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from waiting import accepts, until

from appliance import daemon as daemon_module
from appliance.config import parse_config
from appliance.core.protocol import AppendAudio
from appliance.core.session import Action, Play, Send, StateChanged, StopPlayback
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import OUTGOING_FRAMES, Daemon
from appliance.demo import speech_recording
from realtime_sim.faults import ERROR_EVENTS, MALFORMED, Fault
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv

pytest_plugins = ["alsa_env", "gpio_env"]  # mock_pins: the daemon drives a real (mock-pin) LED

KEY = "dGVzdDpmYXVsdC1rZXk="
PLAYBACK_CAPACITY_MS = 120_000  # PlaybackThread's default queue


@dataclass
class Run:
    daemon: Daemon
    sim: RealtimeSimulator
    actions: list[tuple[float, Action]] = field(default_factory=list)

    def states(self) -> list[State]:
        return [a.state for _, a in self.actions if isinstance(a, StateChanged)]

    def first_reconnect_index(self) -> int:
        return next(i for i, (_, a) in enumerate(self.actions)
                    if isinstance(a, StateChanged) and a.state is State.OFFLINE)

    def plays_since(self, index: int) -> int:
        return sum(isinstance(a, Play) for _, a in self.actions[index:])

    async def wait(self, what: str, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        await until(pred, timeout, lambda: f"{what}; states {self.states()}")

    async def ready(self, timeout: float = 10.0) -> None:
        await self.wait("READY", lambda: self.daemon.session.state is State.READY, timeout)

    async def press(self, hold_s: float = 0.5) -> int:
        """Hold the talk button for ``hold_s``; returns the action index at the release."""
        self.daemon.set_talking(True)
        await self.wait("LISTENING", lambda: self.daemon.session.state is State.LISTENING)
        await asyncio.sleep(hold_s)
        self.daemon.set_talking(False)
        return len(self.actions)

    async def turn(self, timeout: float = 10.0) -> None:
        """A whole turn that must work: reply audio played, then back to READY."""
        await self.ready(timeout)
        start = await self.press()
        await self.wait("reply audio", lambda: self.plays_since(start) > 0, timeout)
        await self.ready(timeout)
        self.check_bounds()

    def check_bounds(self) -> None:
        d = self.daemon
        assert d._outq.qsize() <= OUTGOING_FRAMES
        assert d.player is not None and d.player.queued_ms <= PLAYBACK_CAPACITY_MS
        assert d.capture is not None and d.capture.alive
        assert d.player.alive


def config(url: str, gpio: dict[str, Any] | None = None, **realtime: Any) -> Any:
    return parse_config(
        {
            "realtime": {"url": url, "ping_interval_s": 5, **realtime},
            "audio": {
                "capture_device": "mic",
                "capture_rate": 16000,
                "playback_device": "spk",
                "playback_rate": 24000,
            },
            "gate": {"mode": "push_to_talk"},
            "gpio": gpio or {"enabled": False},
        },
        "<test_faults>",
    )


async def with_daemon(
    alsa_env: AlsaEnv,
    faults: list[Fault],
    body: Callable[[Run], Awaitable[None]],
    gpio: dict[str, Any] | None = None,
    **realtime: Any,
) -> Run:
    speech, rate = speech_recording()
    assert rate == 16000
    # Long enough for any test here: the plugin repeats stale data past the end.
    alsa_env.write_mic(np.tile(np.frombuffer(speech, dtype=np.int16), 12))
    async with RealtimeSimulator(api_key=KEY, profile="fast", faults=faults, reply_pace=8.0) as sim:
        run = Run(daemon=None, sim=sim)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()

        def observe(action: Action) -> None:
            run.actions.append((loop.time(), action))

        run.daemon = Daemon(
            config(sim.url, gpio, **realtime), ApiKey(KEY, "test"), observers=[observe]
        )
        stop = asyncio.Event()
        task = asyncio.create_task(run.daemon.run(stop))
        try:
            await body(run)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    return run


def clean_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The daemon's warnings and errors; none may carry a traceback."""
    records = [r for r in caplog.records if r.name.startswith("appliance")
               and not r.name.startswith("realtime_sim")]
    assert not [r for r in records if r.exc_info], "a traceback was logged"
    return [r for r in records if r.levelno >= logging.WARNING]


def lines(records: list[logging.LogRecord], text: str) -> list[str]:
    return [r.getMessage() for r in records if text in r.getMessage()]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("drop:2", "connection lost"),
        ("reset:2", "connection lost"),
        ("close:1011", "code 1011"),
        ("on-demand", "connection lost"),  # RealtimeSimulator.drop_connections(), as the soak
    ],
)
def test_connection_cut_mid_response(
    alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture, spec: str, expected: str
) -> None:
    caplog.set_level(logging.INFO)

    on_demand = spec == "on-demand"

    async def body(run: Run) -> None:
        await run.ready()
        start = await run.press()
        if on_demand:
            await run.wait("reply audio", lambda: run.plays_since(start) > 0)
            assert run.sim.drop_connections() == 1
        await run.wait("reconnect", lambda: run.sim.connections == 2)
        assert run.plays_since(start) >= 1, "the reply had started before the cut"
        await run.turn()

    faults = [] if on_demand else [Fault.parse(spec)]
    run = asyncio.run(with_daemon(alsa_env, faults, body))
    assert run.sim.faults_tripped[0] == ([] if on_demand else [spec.split(":", maxsplit=1)[0]])
    states = run.states()
    assert State.OFFLINE in states and states[-1] is State.READY
    # Playback stopped cleanly when the connection went, and the session was set up again.
    assert any(isinstance(a, StopPlayback) for _, a in run.actions)
    assert run.sim.sessions[1].received[0]["type"] == "session.update"
    warnings = clean_log(caplog)
    assert len(lines(warnings, "connection lost")) == 1, [r.getMessage() for r in warnings]
    assert lines(warnings, expected)


@pytest.mark.parametrize("status", [401, 403, 500])
def test_handshake_refused(
    alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture, *, monkeypatch: pytest.MonkeyPatch,
    mock_pins: MockFactory, tmp_path: Path, status: int,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(daemon_module, "AUTH_RETRY_S", 0.3)  # the real one is 60 s
    offline_detail: list[str] = []
    gpio = {"enabled": True, "led": "led", "led_pin": "GPIO25", "talk_pin": "",
            "state_dir": str(tmp_path)}

    async def body(run: Run) -> None:
        await run.wait("a refusal", lambda: run.daemon.session.state is State.OFFLINE)
        offline_detail.append(run.daemon.session._detail)
        assert run.daemon.gpio is not None and run.daemon.gpio.leds is not None
        assert run.daemon.gpio.leds.state is State.OFFLINE  # the LED says so too
        await run.turn()
        assert run.daemon.gpio.leds.state is State.READY  # type: ignore[comparison-overlap]  # after the turn

    run = asyncio.run(with_daemon(alsa_env, [Fault("refuse", str(status))], body, gpio))
    assert run.sim.connections == 1
    assert f"HTTP {status}" in offline_detail[0]
    warnings = clean_log(caplog)
    refused = lines(warnings, f"HTTP {status}")
    assert len(refused) == 1, refused
    if status in (401, 403):
        assert "refused the API key from test" in refused[0]
        assert KEY not in refused[0]


def test_no_session_created(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(run: Run) -> None:
        await run.wait("reconnect", lambda: run.sim.connections == 2, timeout=10)
        assert run.daemon.session.state in (State.OFFLINE, State.CONNECTING, State.READY)
        await run.turn()

    run = asyncio.run(with_daemon(alsa_env, [Fault("no-session-created")], body,
                                  open_timeout_s=0.5))
    assert run.sim.faults_tripped[0] == ["no-session-created"]
    assert State.OFFLINE in run.states()
    assert len(lines(clean_log(caplog), "no session.created")) == 1


def test_server_stops_reading(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    """Sends pile up and pings go unanswered: the ping timeout ends the connection, what
    was queued for it is dropped with one line, capture never blocks, the next turn works."""
    caplog.set_level(logging.INFO)
    frames_during: list[int] = []

    async def body(run: Run) -> None:
        await run.ready()
        assert run.daemon.capture is not None
        before = run.daemon.capture.frames
        await run.press(hold_s=1.5)  # speech the server never reads
        frames_during.append(run.daemon.capture.frames - before)
        await run.wait("reconnect", lambda: run.sim.connections == 2, timeout=10)
        # The daemon sent the turn's audio; the server never read any of it.
        sent = sum(len(a.event.audio) for _, a in run.actions[: run.first_reconnect_index()]
                   if isinstance(a, Send) and isinstance(a.event, AppendAudio))
        assert sent >= 24000 * 2 * 1.2  # 1.2 s of 24 kHz PCM16, in chunks of any length
        assert not [e for e in run.sim.sessions[0].received
                    if e["type"] == "input_audio_buffer.append"]
        run.check_bounds()
        await run.turn()
        # Nothing spoken into the dead connection reached the new one before its update.
        assert run.sim.sessions[1].received[0]["type"] == "session.update"

    run = asyncio.run(with_daemon(alsa_env, [Fault("stop-reading", "10")], body,
                                  ping_interval_s=1))
    assert run.sim.faults_tripped[0] == ["stop-reading"]
    # The microphone kept running in real time while the socket was stuck (16 kHz).
    assert frames_during[0] >= 16000 * 1.2
    warnings = clean_log(caplog)
    assert len(lines(warnings, "connection lost")) == 1, [r.getMessage() for r in warnings]


def test_server_goes_silent(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(run: Run) -> None:
        await run.ready()
        await run.press()
        await run.wait("THINKING", lambda: run.daemon.session.state is State.THINKING)
        await run.wait("reconnect", lambda: run.sim.connections == 2, timeout=10)
        await run.turn()

    run = asyncio.run(with_daemon(alsa_env, [Fault("silent")], body, response_timeout_s=1))
    assert run.sim.faults_tripped[0] == ["silent"]
    assert State.OFFLINE in run.states()
    assert len(lines(clean_log(caplog), "connection lost")) == 1


def test_slow_drip_of_deltas(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(run: Run) -> None:
        await run.turn(timeout=15)

    run = asyncio.run(with_daemon(alsa_env, [Fault("drip", "200")], body))
    assert run.sim.connections == 1
    assert run.sim.faults_tripped[0] == ["drip"]
    warnings = clean_log(caplog)
    assert len(warnings) <= 4, [r.getMessage() for r in warnings]  # no storm of underruns


def test_malformed_frames(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    """Every malformed frame kind in the middle of a reply: one log line each, the reply and
    the next turn still play, no reconnect."""
    caplog.set_level(logging.INFO)

    async def body(run: Run) -> None:
        await run.turn(timeout=20)
        await run.turn()

    run = asyncio.run(with_daemon(alsa_env, [Fault("malformed", k) for k in MALFORMED], body))
    assert run.sim.connections == 1
    assert run.sim.faults_tripped[0] == ["malformed"]
    # unknown-event is legal (ignored at debug level); huge-delta is valid audio.
    malformed = len(MALFORMED) - 2
    assert run.daemon.session.protocol_errors == malformed
    warnings = clean_log(caplog)
    assert len(lines(warnings, "malformed server event")) == malformed
    # The 20 MiB delta was survived: the playback queue is bounded and said so once.
    assert len(lines(warnings, "playback queue full")) == 1
    assert len(warnings) == malformed + 1, [r.getMessage() for r in warnings]


BENIGN = ("response_cancel_not_active", "conversation_already_has_active_response")


def test_error_events(alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture) -> None:
    """Every documented error type and code, in the middle of a reply: each real error is
    one log line naming its type, code and param; benign ones are not errors; the daemon
    carries on (or, for a code that ends the session, reconnects) and the next turn works."""
    caplog.set_level(logging.INFO)

    async def body(run: Run) -> None:
        await run.ready()
        start = await run.press()
        await run.wait("reply audio", lambda: run.plays_since(start) > 0)
        await run.turn()

    run = asyncio.run(with_daemon(alsa_env, [Fault("error")], body))
    assert run.sim.faults_tripped[0] == ["error"]
    errors = [r.getMessage() for r in clean_log(caplog) if r.levelno >= logging.ERROR]
    for etype, code, param in ERROR_EVENTS:
        said = [m for m in errors if f"{etype}/{code or '-'}:" in m]
        if code in BENIGN:
            assert not said, said
            continue
        if param is not None:
            said = [m for m in said if f"param {param}" in m]
            expected = 1
        else:  # lines for this type/code, with a param or without
            expected = sum((t, c) == (etype, code) for t, c, _ in ERROR_EVENTS)
        assert len(said) == expected, (etype, code, said)
    assert any("config key session.audio.input.transcription.model" in m for m in errors)


# --- the CLI: `appliance simulate --fault` -------------------------------------------------


def test_simulate_fault_flag_switches_a_fault_on() -> None:
    """`appliance simulate --fault refuse:503@2`: the first two handshakes get HTTP 503, the
    third is accepted; the startup lines say which faults are on."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["INWORLD_API_KEY"] = KEY
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "simulate", "--port", str(port),
         "--fault", "refuse:503@2"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    url = f"ws://127.0.0.1:{port}/api/v1/realtime/session?key=t&protocol=realtime"
    auth = {"Authorization": f"Basic {KEY}"}

    async def talk() -> list[object]:
        seen: list[object] = []
        await until(lambda: accepts(port), 10, "the simulator's port")
        for _ in range(3):
            try:
                async with connect(url, additional_headers=auth, compression=None) as ws:
                    seen.append(json.loads(await ws.recv())["type"])
            except InvalidStatus as exc:
                seen.append(exc.response.status_code)
        return seen

    try:
        assert asyncio.run(talk()) == [503, 503, "session.created"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
    assert "Fault on: refuse:503 (first 2 connection attempt(s))" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("explode", "unknown fault 'explode'"),
        ("refuse", "fault refuse needs an argument"),
        ("refuse:200", "status must be 400-599"),
        ("drop:soon", "expected a number"),
        ("malformed:weird", "unknown kind 'weird'"),
        ("silent@x", "@N must be a whole number"),
    ],
)
def test_simulate_rejects_a_bad_fault_in_one_line(
    capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    from appliance.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--fault", spec])
    assert exited.value.code == 2  # argparse's usage error, before anything starts
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1], err
