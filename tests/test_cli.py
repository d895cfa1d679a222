"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

APPLIANCE = [sys.executable, "-m", "appliance"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("INWORLD_API_KEY", "CREDENTIALS_DIRECTORY")}
    return subprocess.run([*APPLIANCE, *args], capture_output=True, text=True, check=False, env=base | (env or {}), timeout=timeout)


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[session.audio.output]\nspeed = "fast"\n')
    for command in ("run", "check"):
        result = run(command, "--config", str(cfg), env={"INWORLD_API_KEY": "k"})
        assert result.returncode == 78
        assert result.stderr.strip() == 'appliance: session.audio.output.speed: expected a number, got "fast"'
        assert "Traceback" not in result.stderr


def test_missing_api_key_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text("")
    result = run("run", "--config", str(cfg))
    assert result.returncode == 78
    assert "INWORLD_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    result = run("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_demo_runs_one_turn_and_saves_the_reply(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "state: Speaking" in result.stdout
    assert "first reply audio" in result.stdout
    with wave.open(str(tmp_path / "reply.wav")) as wav:
        assert wav.getframerate() == 24000
        assert wav.getnframes() > 24000  # more than a second of reply


def test_devices_lists_pcms_with_rates(tmp_path: Path) -> None:
    from appliance.demo import alsa_config_path, write_file_devices

    mic = tmp_path / "mic.raw"
    mic.write_bytes(b"\x00\x00" * 1600)
    asoundrc = write_file_devices(tmp_path, mic, tmp_path / "spk.raw")
    result = run("devices", env={"ALSA_CONFIG_PATH": alsa_config_path(asoundrc)})
    assert result.returncode == 0, result.stderr
    assert "mic (capture)" in result.stdout and "spk (playback)" in result.stdout
    assert "rates:" in result.stdout and "16000" in result.stdout


def test_simulate_serves_the_realtime_protocol_on_loopback() -> None:
    import asyncio
    import json
    import socket

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"} | {"INWORLD_API_KEY": "c2ltOmtleQ=="}
    proc = subprocess.Popen([*APPLIANCE, "simulate", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True)

    async def talk() -> str:
        url = f"ws://127.0.0.1:{port}/api/v1/realtime/session?key=t&protocol=realtime"
        for _ in range(100):
            try:
                async with connect(url, additional_headers={"Authorization": "Basic c2ltOmtleQ=="}, compression=None) as ws:
                    created = json.loads(await ws.recv())
                    break
            except OSError:
                await asyncio.sleep(0.1)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"Authorization": "Basic wrong"}, compression=None):
                pass
        assert refused.value.response.status_code == 401
        return str(created["type"])

    try:
        assert asyncio.run(talk()) == "session.created"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        proc.stdout.close()
