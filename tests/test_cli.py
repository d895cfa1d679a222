"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from waiting import accepts, until

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


def file_devices(tmp_path: Path, mic_pcm: bytes) -> dict[str, str]:
    from appliance.demo import alsa_config_path, write_file_devices

    mic = tmp_path / "mic.raw"
    mic.write_bytes(mic_pcm)
    asoundrc = write_file_devices(tmp_path, mic, tmp_path / "spk.raw")
    return {"ALSA_CONFIG_PATH": alsa_config_path(asoundrc)}


def test_devices_lists_pcms_with_rates_and_no_library_noise(tmp_path: Path) -> None:
    env = file_devices(tmp_path, b"\x00\x00" * 1600)
    result = run("devices", env=env)
    assert result.returncode == 0, result.stderr
    assert "mic (capture)" in result.stdout and "spk (playback)" in result.stdout
    assert "rates:" in result.stdout and "16000" in result.stdout
    assert "No sound cards found" in result.stdout  # this machine has none
    assert "appliance devices --test-speaker" in result.stdout
    # Probing every PCM (jack, pulse, oss...) printed pages of alsa-lib and JACK errors.
    assert result.stderr == ""


def test_devices_tests_a_speaker_and_a_microphone_and_writes_them(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(2 * rate) / rate
    tone = (3277 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)  # -20 dBFS peak, -23 rms
    env = file_devices(tmp_path, tone.tobytes())
    config = tmp_path / "appliance.toml"
    config.write_text('# mine\n[audio]\ncapture_device = "default"  # was\nchunk_ms = 40\n[gate]\nmode = "vad"\n')
    result = run(
        "devices", "--test-speaker", "spk", "--test-mic", "mic", "--seconds", "1",
        "--write", "--config", str(config), env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    played = np.frombuffer((tmp_path / "spk.raw").read_bytes(), dtype=np.int16).reshape(-1, 2)
    assert len(played) == 48000  # the 1 s tone, 48 kHz stereo
    peak = np.abs(played).max() / 32768
    assert 0.2 < peak < 0.3  # -12 dBFS
    levels = [line for line in result.stdout.splitlines() if line.strip().endswith("#") or "dBFS  " in line]
    assert len(levels) == 4  # one per quarter second
    assert all("-23." in line for line in levels), levels
    assert "this microphone works" in result.stdout
    text = config.read_text()
    assert text.startswith("# mine\n[audio]\n")
    assert 'capture_device = "mic"' in text and 'playback_device = "spk"' in text
    assert "default" not in text and "chunk_ms = 40" in text and 'mode = "vad"' in text


def test_devices_names_a_device_that_does_not_open(tmp_path: Path) -> None:
    env = file_devices(tmp_path, b"")
    config = tmp_path / "appliance.toml"
    config.write_text("")
    result = run("devices", "--test-speaker", "nosuchpcm", "--write", "--config", str(config), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("appliance: ALSA device 'nosuchpcm': cannot open")
    assert len(result.stderr.strip().splitlines()) == 1  # no alsa-lib line, no traceback
    assert config.read_text() == ""
    usage = run("devices", "--write", env=env)
    assert usage.returncode == 2 and "--test-speaker" in usage.stderr


def test_an_empty_systemd_credential_is_no_api_key(tmp_path: Path) -> None:
    """The unit's SetCredential= fallback when the key file is missing: exit 78 with one
    line saying what to do, which Restart= does not repeat (RestartPreventExitStatus=78)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "inworld-api-key").write_text("\n")
    cfg = tmp_path / "ok.toml"
    cfg.write_text("")
    result = run("run", "--config", str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: no API key:"), result.stderr
    assert "sudo make key" in lines[0]


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
        await until(lambda: accepts(port), 10, "the simulator's port")
        async with connect(url, additional_headers={"Authorization": "Basic c2ltOmtleQ=="}, compression=None) as ws:
            created = json.loads(await ws.recv())
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
