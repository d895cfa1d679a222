"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

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
