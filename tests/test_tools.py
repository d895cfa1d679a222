"""Local tools: schema checks, real subprocesses (argv, JSON stdin, timeout, output cap, env)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from daemon_env import StateLog, running, statuses
from waiting import until, wait_until

from appliance.config import Config, parse_config
from appliance.core.schema import SchemaError, check_schema, validate
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import DEMO_KEY, demo_config
from appliance.errors import AudioDeviceError, ConfigError
from appliance.tools import Toolbox
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

# alsa_env: file-plugin devices for a daemon; pulse_env: a real ALSA mixer (PulseAudio's ctl plugin)
pytest_plugins = ["alsa_env"]

KEY = "c2VjcmV0OmtleS1mb3ItdG9vbHM="
PY = sys.executable


def toolbox(tools: list[dict[str, Any]], host: Any = None, env: dict[str, str] | None = None) -> Toolbox:
    config = parse_config({"tools": tools})
    return Toolbox(config.tools, host, env=env, secret=KEY)


def call(box: Toolbox, name: str, args: Any) -> Any:
    text = args if isinstance(args, str) else json.dumps(args)
    return json.loads(asyncio.run(box.call(name, text)))


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(body)
    return [PY, str(path)]


# --- the schema subset ----------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["C", "F"]},
        "stops": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ({}, "city", "required property is missing"),
        ({"city": 3}, "city", "expected string, got 3"),
        ({"city": "P"}, "city", "shorter than 2 characters"),
        ({"city": "Paris", "days": 9}, "days", "9 is more than the maximum 7"),
        ({"city": "Paris", "days": 2.5}, "days", "expected integer, got 2.5"),
        ({"city": "Paris", "days": True}, "days", "expected integer, got true"),
        ({"city": "Paris", "unit": "K"}, "unit", "expected one of 'C', 'F', got 'K'"),
        ({"city": "Paris", "stops": [{"name": "a"}, {}]}, "stops[1].name", "required property is missing"),
        ({"city": "Paris", "when": "now"}, "when", "unknown property"),
        ([], "", "expected object, got an array"),
    ],
)
def test_validation_names_the_argument_and_the_rule(value: Any, path: str, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        validate(value, SCHEMA)
    assert (err.value.path, err.value.message) == (path, message)


def test_valid_arguments_pass() -> None:
    validate({"city": "Paris", "days": 3, "unit": "C", "stops": [{"name": "x"}]}, SCHEMA)
    validate({"city": "Paris", "days": 3.0}, SCHEMA)  # JSON has one number type


def test_config_rejects_unsupported_schema_keywords_by_key_path() -> None:
    check_schema(SCHEMA)
    with pytest.raises(ConfigError, match=r"^tools\[0\]\.parameters\.properties\.a\.oneOf: unsupported"):
        parse_config({"tools": [{"name": "t", "command": ["x"], "parameters": {"properties": {"a": {"oneOf": []}}}}]})
    with pytest.raises(ConfigError, match=r"^tools\[0\]\.parameters\.type: must be \"object\""):
        parse_config({"tools": [{"name": "t", "command": ["x"], "parameters": {"type": "string"}}]})
    with pytest.raises(ConfigError, match=r"^tools\[1\]\.command: missing: 'weather' is not a built-in"):
        parse_config({"tools": [{"name": "get_time"}, {"name": "weather"}]})
    with pytest.raises(ConfigError, match=r"^tools\[0\]\.name: expected letters"):
        parse_config({"tools": [{"name": "no spaces", "command": ["x"]}]})


# --- programs ---------------------------------------------------------------------------------


ECHO = """
import json, os, sys
args = json.load(sys.stdin)
print(json.dumps({"args": args, "argv": sys.argv[1:], "env": dict(os.environ)}))
"""


def test_a_program_gets_argv_json_stdin_and_an_environment_without_the_key(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "INWORLD_API_KEY": KEY, "CREDENTIALS_DIRECTORY": "/run/creds", "COPY_OF_KEY": f"Basic {KEY}", "LANG": "C.UTF-8"}
    box = toolbox(
        [{"name": "echo", "command": [*script(tmp_path, "echo.py", ECHO), "--flag", "two words; $HOME"], "parameters": SCHEMA}],
        env=env,
    )
    out = call(box, "echo", {"city": "Paris", "days": 2})
    assert out["args"] == {"city": "Paris", "days": 2}
    assert out["argv"] == ["--flag", "two words; $HOME"]  # no shell: passed verbatim
    assert out["env"]["LANG"] == "C.UTF-8"
    assert KEY not in json.dumps(out["env"])
    assert "CREDENTIALS_DIRECTORY" not in out["env"]


def test_invalid_and_unknown_calls_are_answered_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    box = toolbox([{"name": "touch", "command": [PY, "-c", f"open({str(marker)!r}, 'w')"], "parameters": SCHEMA}])
    assert call(box, "touch", {"city": 5}) == {"error": "invalid arguments: argument city: expected string, got 5"}
    assert call(box, "touch", "{not json")["error"].startswith("the arguments are not valid JSON")
    assert call(box, "nope", {}) == {"error": "unknown tool 'nope' (this device has: touch)"}
    assert not marker.exists()


def test_a_hanging_program_is_killed_at_its_timeout_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(pidfile)!r}, "w").write(str(child.pid))
time.sleep(60)
"""
    # 2 s: long enough for the program to start its child and write the pid file on a
    # loaded machine, so the kill always has a grandchild to take down.
    box = toolbox([{"name": "hang", "command": script(tmp_path, "hang.py", hang), "timeout_s": 2}])
    started = time.monotonic()
    out = call(box, "hang", {})
    assert out == {"error": "timed out after 2 s and was stopped"}
    assert time.monotonic() - started < 6
    child = int(pidfile.read_text())
    assert wait_until(lambda: not _alive(child), 3), "the tool's child process survived"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_output_cap_failure_and_missing_program_are_reported(tmp_path: Path) -> None:
    box = toolbox(
        [
            {"name": "chatty", "command": [PY, "-c", "print('x' * 100000)"], "max_output_bytes": 1000},
            {"name": "fails", "command": [PY, "-c", "import sys; print('bad city', file=sys.stderr); sys.exit(3)"]},
            {"name": "ghost", "command": [str(tmp_path / "does-not-exist")]},
            {"name": "quiet", "command": [PY, "-c", "pass"]},
        ]
    )
    assert call(box, "chatty", {}) == {"error": "printed more than 1000 bytes and was stopped"}
    assert call(box, "fails", {}) == {"error": "failed with exit code 3: bad city"}
    ghost = call(box, "ghost", {})["error"]
    assert ghost.startswith(f"cannot run '{tmp_path / 'does-not-exist'}' (tools[2].command): ")
    assert call(box, "quiet", {}) == {"ok": True}


# --- built-ins ------------------------------------------------------------------------------


class Host:
    """The daemon side of the built-ins, recording what it was asked."""

    def __init__(self) -> None:
        self.muted: list[bool] = []

    def set_muted(self, muted: bool) -> None:
        self.muted.append(muted)

    def set_volume(self, percent: int) -> int:
        raise AudioDeviceError("Master", "cannot open mixer control 'Master'")


def test_builtins() -> None:
    host = Host()
    box = toolbox([{"name": "get_time"}, {"name": "mute"}, {"name": "set_volume"}], host)
    now = call(box, "get_time", {})
    assert abs(time.time() - _parse_iso(now["local_time"])) < 5
    assert now["weekday"] in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    assert call(box, "get_time", {"zone": "x"}) == {"error": "invalid arguments: argument zone: unknown property"}
    assert call(box, "mute", {"muted": True}) == {"muted": True}
    assert host.muted == [True]
    assert call(box, "set_volume", {"percent": 140}) == {"error": "invalid arguments: argument percent: 140 is more than the maximum 100"}
    assert call(box, "set_volume", {"percent": 40}) == {"error": "ALSA device 'Master': cannot open mixer control 'Master'"}


def _parse_iso(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text).timestamp()


def sink_volume(pulse: PulseEnv) -> int:
    """The ``spk`` sink's volume in percent, as PulseAudio itself reports it."""
    found = re.search(r"/\s*(\d+)%", pulse.pactl("get-sink-volume", "spk"))
    assert found is not None
    return int(found.group(1))


def test_set_volume_through_the_daemon_on_a_real_mixer(pulse_env: PulseEnv) -> None:
    """The daemon's tool host: ``Master`` on the ``pmixer`` control device is the ``spk``
    sink's volume, as PulseAudio reports it."""
    config = parse_config({"tools": [{"name": "set_volume"}], "gpio": {"enabled": False, "mixer_device": "pmixer"}})
    daemon = Daemon(config, ApiKey(KEY, "test"))
    try:
        assert call(daemon.toolbox, "set_volume", {"percent": 37}) == {"volume_percent": 37}
        assert sink_volume(pulse_env) == 37
        daemon.levels.close()
    finally:
        pulse_env.pactl("set-sink-volume", "spk", "100%")  # as the other tests expect it


# --- mute and volume persist without GPIO -------------------------------------------------------


def persisted_config(url: str, state: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        **demo_config(url),
        "gpio": {"enabled": False, "state_dir": str(state), "mixer_device": "pmixer"},
        "tools": [{"name": "mute"}, {"name": "set_volume"}],
        **extra,
    }
    return parse_config(data)




def test_the_mute_tool_survives_a_restart_without_gpio(
    alsa_env: AlsaEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[gpio] disabled: the model mutes the device (a scripted function call), the daemon
    stops, and the next daemon comes up muted, never ready, before anyone says a word."""
    alsa_env.write_mic(np.zeros(16000 * 30, np.int16))  # a quiet room
    state = tmp_path / "state"
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    script = SimScript(tool_calls=(ToolCall("mute", '{"muted": true}'),))

    async def main() -> tuple[list[State], list[State], Daemon]:
        async with RealtimeSimulator(api_key=DEMO_KEY, script=script, profile="fast") as sim:
            cfg = persisted_config(sim.url, state, session_policy={"greeting": "Hello"})
            first = StateLog()
            daemon = Daemon(cfg, ApiKey(DEMO_KEY, "test"), observers=[first])
            async with running(daemon):
                await until(lambda: daemon.session.state is State.MUTED, 20)
        async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
            second = StateLog()
            daemon = Daemon(persisted_config(sim.url, state), ApiKey(DEMO_KEY, "test"), observers=[second])
            async with running(daemon):
                await until(lambda: daemon.session.state is State.MUTED, 20)
                assert daemon.controls.muted  # the front end was told: nothing captured goes up
        return first.states, second.states, daemon

    try:
        first, second, daemon = asyncio.run(main())
        told = statuses(sock)
    finally:
        sock.close()
    assert State.THINKING in first and first[-1] is State.MUTED  # the greeting's reply muted it
    assert json.loads((state / "controls.json").read_text()) == {"muted": True, "volume": None}
    assert second == [State.CONNECTING, State.MUTED]  # muted from the start, never ready
    assert daemon.session.muted
    assert told[-1] == "Muted" and told.count("Muted") == 2


def test_the_volume_tool_survives_a_restart_without_gpio(
    pulse_env: PulseEnv, tmp_path: Path
) -> None:
    """The volume set by voice is set again at the next start, whatever the mixer says then."""
    pulse_env.alsa.write_mic(np.zeros(16000 * 30, np.int16))
    state = tmp_path / "state"

    async def main() -> None:
        async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
            daemon = Daemon(persisted_config(sim.url, state), ApiKey(DEMO_KEY, "test"))
            answer = await daemon.toolbox.call("set_volume", '{"percent": 37}')
            assert json.loads(answer) == {"volume_percent": 37}
            assert sink_volume(pulse_env) == 37
            daemon.levels.close()
            pulse_env.pactl("set-sink-volume", "spk", "80%")  # someone else moved it
            log = StateLog()
            daemon = Daemon(persisted_config(sim.url, state), ApiKey(DEMO_KEY, "test"), observers=[log])
            async with running(daemon):
                await asyncio.wait_for(log.ready.wait(), 20)
                assert sink_volume(pulse_env) == 37

    try:
        asyncio.run(main())
    finally:
        pulse_env.pactl("set-sink-volume", "spk", "100%")  # as the other tests expect it
    assert json.loads((state / "controls.json").read_text()) == {"muted": False, "volume": 37}
