"""The control socket end to end: the real daemon in this process against the loopback
simulator over real websockets and ALSA file devices; the CLI's commands as a user runs
them (``appliance status|say|ask|mute|volume``), through the socket."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from daemon_env import running
from waiting import until

from appliance import cli
from appliance.config import Config, parse_config
from appliance.core.session import Action, Play, StateChanged, Transcript
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.timer_tools import TimerTools
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv

pytest_plugins = ["alsa_env"]

KEY = "dGVzdDpjb250cm9sLWtleQ=="


@pytest.fixture(autouse=True)
def silent_mic(alsa_env: AlsaEnv) -> Iterator[None]:
    alsa_env.write_mic(np.zeros(16000 * 60, dtype=np.int16))
    yield


def config(url: str, sock: Path, **control: Any) -> Config:
    return parse_config({
        "realtime": {"url": url},
        "audio": {"capture_device": "mic", "playback_device": "spk"},
        "gate": {"mode": "push_to_talk"},
        "gpio": {"enabled": False, "mixer_control": "NoSuchCtl"},
        "control": {"socket": str(sock), **control},
    })


async def cli_run(*argv: str) -> tuple[int, str, str]:
    """``appliance ARGV`` in a subprocess, as a user runs it."""
    proc = await asyncio.create_subprocess_exec(
        *cli_argv(), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "appliance.cli"]


class Seen:
    def __init__(self) -> None:
        self.actions: list[Action] = []

    def __call__(self, action: Action) -> None:
        self.actions.append(action)

    def of(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


def test_cli_commands_through_the_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = tmp_path / "control.sock"

    async def scenario() -> tuple[Daemon, RealtimeSimulator, Seen, dict[str, Any]]:
        out: dict[str, Any] = {}
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=20) as sim:
            seen = Seen()
            daemon = Daemon(config(sim.url, sock), ApiKey(KEY, "test"), observers=[seen])
            async with running(daemon):
                await until(lambda: daemon.session.state is State.READY and sock.exists(), 10, "ready")
                out["mode"] = stat.S_IMODE(os.stat(sock).st_mode)
                out["status"] = await cli_run("status", "--socket", str(sock))
                # An announcement: the earcon, then an out-of-band response that is spoken.
                plays = len(seen.of(Play))
                out["say"] = await cli_run("say", "--socket", str(sock), "Dinner", "is", "ready")
                await until(lambda: len(seen.of(Play)) > plays and daemon.session.state is State.READY, 10, "the announcement")
                # A prompt the agent answers in the conversation.
                out["ask"] = await cli_run("ask", "--socket", str(sock), "Shall I order pizza?")
                await until(lambda: sum(1 for t in seen.of(Transcript) if t.role == "agent") >= 2 and daemon.session.state is State.READY, 10, "the answer")
                out["mute"] = await cli_run("mute", "--socket", str(sock), "on")
                out["muted_state"] = daemon.session.state
                out["unmute"] = await cli_run("mute", "--socket", str(sock), "off")
                out["volume"] = await cli_run("volume", "--socket", str(sock), "40")
                out["bad"] = await cli_run("volume", "--socket", str(sock), "140")
                out["status2"] = await cli_run("status", "--socket", str(sock))
            return daemon, sim, seen, out

    with caplog.at_level(logging.INFO):
        daemon, sim, seen, out = asyncio.run(scenario())
    assert out["mode"] == 0o600
    code, text, _ = out["status"]
    assert code == 0 and "state: ready" in text and f"session: {daemon.session.session_id}" in text
    assert out["say"][0] == 0 and out["say"][1].strip() == "say: speaking"
    # The service got the announcement as an out-of-band response in the session's voice.
    creates = [e for e in sim.received if e["type"] == "response.create"]
    oob = creates[0]["response"]
    assert oob["conversation"] == "none" and oob["instructions"] == "Say exactly: Dinner is ready"
    agent = [t.text for t in seen.of(Transcript) if t.role == "agent"]
    assert agent[0] == "Dinner is ready"
    # Not in the conversation: the simulator holds no item of it.
    texts = json.dumps([r.item for r in sim.sessions[0].conversation.records()])
    assert "Dinner is ready" not in texts
    # The earcon played first (the wake cue by default).
    assert "wake" in daemon.earcons.played
    # ask: a user text item, then a response in the conversation.
    assert out["ask"][0] == 0
    items = [e for e in sim.received if e["type"] == "conversation.item.create"]
    assert items[-1]["item"]["content"] == [{"type": "input_text", "text": "Shall I order pizza?"}]
    assert "Shall I order pizza?" in agent[1]
    assert out["mute"][1].strip() == "mute: on" and out["muted_state"] is State.MUTED
    assert out["unmute"][1].strip() == "mute: off"
    # No such mixer control: the volume's error names it, in one line.
    code, _, err = out["volume"]
    assert code == 1 and "NoSuchCtl" in err and err.count("\n") == 1, err
    code, _, err = out["bad"]
    assert code == 2 and "0 to 100" in err
    code, text, _ = out["status2"]
    assert "mute: off" in text
    assert not sock.exists()  # removed at stop


def test_not_running_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"appliance: the daemon is not running (nothing listens on {tmp_path / 'none.sock'})\n"


def test_offline_announcement_plays_the_earcon_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = tmp_path / "c.sock"

    async def scenario() -> tuple[Daemon, str]:
        # Nothing listens at this URL: the daemon is offline between attempts.
        cfg = config("ws://127.0.0.1:9/", sock)
        daemon = Daemon(cfg, ApiKey(KEY, "test"))
        async with running(daemon):
            await until(lambda: daemon.session.state is State.OFFLINE and sock.exists(), 10, "offline")
            code, text, _ = await cli_run("say", "--socket", str(sock), "Door is open")
            await asyncio.sleep(0.2)
        return daemon, text

    with caplog.at_level(logging.INFO):
        daemon, text = asyncio.run(scenario())
    assert text.strip() == "say: dropped"
    assert "wake" in daemon.earcons.played
    assert any("not spoken" in r.getMessage() and "Door is open" in r.getMessage() for r in caplog.records)


def test_group_makes_the_socket_0660(tmp_path: Path) -> None:
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    sock = tmp_path / "g.sock"

    async def scenario() -> int:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            daemon = Daemon(config(sim.url, sock, group=group), ApiKey(KEY, "test"))
            async with running(daemon):
                await until(sock.exists, 10, "the socket")
                return stat.S_IMODE(os.stat(sock).st_mode)

    assert asyncio.run(scenario()) == 0o660


def test_bad_requests_get_one_line_errors() -> None:
    from appliance.control import BadRequest, handle

    class Host:
        def status(self) -> dict[str, Any]:
            return {}

        def announce(self, text: str, *, ask: bool) -> str:
            return "queued"

        def set_muted(self, muted: bool) -> None:
            pass

        def set_volume(self, percent: int) -> int:
            return percent

    for req, words in [
        ([], '"command"'),
        ({"command": "say"}, '"text"'),
        ({"command": "mute", "on": "yes"}, '"on"'),
        ({"command": "fly"}, "unknown command"),
    ]:
        with pytest.raises(BadRequest, match=words):
            handle(Host(), req)


def test_wake_mode_listens_after_an_ask_but_not_after_a_say(tmp_path: Path) -> None:
    """A follow-up window (no wake word needed) opens after the agent's answer to an ask,
    not after an announcement, which is not a question."""

    async def scenario() -> tuple[list[State], list[State]]:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=20) as sim:
            cfg = parse_config({
                "realtime": {"url": sim.url},
                "audio": {"capture_device": "mic", "playback_device": "spk"},
                "gate": {"mode": "wake", "follow_up_s": 3},
                "gpio": {"enabled": False},
                "control": {"enabled": False},
            })
            seen = Seen()
            daemon = Daemon(cfg, ApiKey(KEY, "test"), observers=[seen])

            def states() -> list[State]:
                return [a.state for a in seen.of(StateChanged)]

            async with running(daemon):
                await until(lambda: daemon.session.state is State.READY, 10, "ready")
                mark = len(states())
                daemon.announce("The door is open")
                await until(lambda: State.SPEAKING in states()[mark:] and daemon.session.state is State.READY, 10, "the say")
                await asyncio.sleep(0.5)
                after_say = states()[mark:]
                mark = len(states())
                daemon.announce("Ask me about the weather", ask=True)
                await until(lambda: State.LISTENING in states()[mark:], 10, "the follow-up window")
                after_ask = states()[mark:]
            return after_say, after_ask

    after_say, after_ask = asyncio.run(scenario())
    assert after_say[-1] is State.READY and State.LISTENING not in after_say
    i = after_ask.index(State.SPEAKING)
    assert after_ask[i + 1 : i + 3] == [State.READY, State.LISTENING]


def test_an_announcement_waits_for_the_reply_in_progress(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, list[tuple[str, State]], RealtimeSimulator, Seen]:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=2.0) as sim:
            seen = Seen()
            cfg = config(sim.url, tmp_path / "q.sock")
            daemon = Daemon(cfg, ApiKey(KEY, "test"), observers=[seen])
            order: list[tuple[str, State]] = []
            async with running(daemon):
                await until(lambda: daemon.session.state is State.READY, 10, "ready")
                daemon.set_talking(True)
                await asyncio.sleep(0.5)
                daemon.set_talking(False)
                await until(lambda: daemon.session.state is State.SPEAKING, 10, "the reply")
                outcome = daemon.announce("Timer done").value
                order.append(("asked", daemon.session.state))
                await until(lambda: len([t for t in seen.of(Transcript) if t.role == "agent"]) >= 2 and daemon.session.state is State.READY, 15, "the announcement")
            return outcome, order, sim, seen

    outcome, order, sim, seen = asyncio.run(scenario())
    assert outcome == "queued" and order == [("asked", State.SPEAKING)]
    creates = [e for e in sim.received if e["type"] == "response.create"]
    assert "response" not in creates[0] and creates[1]["response"]["conversation"] == "none"
    # The reply was heard whole (no barge-in, no truncate), then the announcement.
    assert not [e for e in sim.received if e["type"] in ("response.cancel", "conversation.item.truncate")]
    agent = [t.text for t in seen.of(Transcript) if t.role == "agent"]
    assert agent[-1] == "Timer done"


def test_a_second_daemon_does_not_take_a_live_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = tmp_path / "one.sock"

    async def scenario() -> tuple[int, int]:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            first = Daemon(config(sim.url, sock), ApiKey(KEY, "test"))
            async with running(first):
                await until(sock.exists, 10, "the first socket")
                inode = os.stat(sock).st_ino
                second = Daemon(config(sim.url, sock), ApiKey(KEY, "test"))
                async with running(second):
                    await until(lambda: second.session.state is State.READY, 10, "the second")
                    code, _, _ = await cli_run("status", "--socket", str(sock))
                return inode, os.stat(sock).st_ino if code == 0 else -1

    with caplog.at_level(logging.INFO):
        before, after = asyncio.run(scenario())
    assert before == after  # the first one's socket was left alone, and still answers
    assert any("another daemon is listening" in r.getMessage() for r in caplog.records)


def test_no_runtime_directory_is_an_info_line_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = tmp_path / "missing" / "c.sock"

    async def scenario() -> State:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            daemon = Daemon(config(sim.url, sock), ApiKey(KEY, "test"))
            async with running(daemon):
                await until(lambda: daemon.session.state is State.READY, 10, "ready")
                return daemon.session.state

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) is State.READY
    lines = [r for r in caplog.records if "no control socket" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("appliance")]


def test_status_shows_the_timers_alarms_and_a_ring(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            daemon = Daemon(config(sim.url, sock), ApiKey(KEY, "test"))
            async with running(daemon):
                await until(lambda: daemon.session.state is State.READY and sock.exists(), 10, "ready")
                out["none"] = await cli_run("status", "--socket", str(sock))
                tools = TimerTools(daemon.alarms)  # the tools the model calls
                tools.call("set_timer", {"seconds": 600, "label": "stew"})
                tools.call("set_alarm", {"time": "07:30", "label": "wake", "repeat": ["weekdays"]})
                out["set"] = await cli_run("status", "--socket", str(sock))
                tools.call("set_timer", {"seconds": 1, "label": "egg"})
                await until(lambda: daemon.alarms.is_ringing, 10, "the egg timer ringing")
                out["ringing"] = await cli_run("status", "--socket", str(sock))
                daemon.alarms.stop_ringing("the test")
                out["stopped"] = await cli_run("status", "--socket", str(sock))
        return out

    out = asyncio.run(scenario())
    code, text, _ = out["none"]
    assert code == 0 and "timer:" not in text and "alarm:" not in text and "ringing:" not in text
    code, text, _ = out["set"]
    lines = text.splitlines()
    assert code == 0
    assert any(line.startswith("timer: stew timer, ") and line.endswith(" left") and "minutes" in line for line in lines), text
    assert any(line.startswith("alarm: wake alarm, rings 07:30 on ") and line.endswith(", every monday, tuesday, wednesday, thursday, friday") for line in lines), text
    code, text, _ = out["ringing"]
    assert code == 0 and "ringing: egg timer" in text.splitlines() and "timer: stew timer" in text
    code, text, _ = out["stopped"]
    assert code == 0 and "ringing:" not in text and "timer: stew timer" in text
