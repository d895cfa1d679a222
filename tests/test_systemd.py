"""The daemon as a systemd service: the unit, sd_notify, the watchdog, reload and install.

The unit is checked with the real ``systemd-analyze``; notifications are read from an
AF_UNIX datagram socket of the test's own (``NOTIFY_SOCKET``), with the real daemon process
running against the loopback simulator and ALSA's ``file`` plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_env import APPLIANCE, KEY, daemon_env, write_config
from waiting import until

from appliance.config import parse_config
from appliance.notify import Notifier, watchdog_interval
from appliance.reload import plan_reload, session_api
from appliance.watchdog import CAPTURE_STALL_S, audio_problem, run_watchdog

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "appliance.service"
INSTALLED_EXEC = "/opt/appliance/venv/bin/appliance"
MAX_EXPOSURE = 1.5


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: install the 'systemd' package (scripts/setup.sh test)")
    return path


def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    here = Path(sys.executable).with_name("appliance")
    assert here.exists(), f"{here} is missing: pip install -e . first"
    unit = tmp_path / "appliance.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_EXEC, str(here)))
    return unit


# --- the unit file -------------------------------------------------------------------------------


def test_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    unit = checkable_unit(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_reports_a_typo_on_stderr(tmp_path: Path) -> None:
    """The check above would catch mistakes: verify exits 0 on a typo but says so on stderr."""
    unit = checkable_unit(tmp_path)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "notfy" in result.stderr


def test_unit_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    unit = checkable_unit(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=15", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_runs_the_daemon_the_way_the_brief_says() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        f"ExecStart={INSTALLED_EXEC} run --config /etc/appliance/appliance.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "LoadCredential=inworld-api-key:/etc/appliance/credentials/inworld-api-key",
        # Its fallback: a missing key file is the daemon's "no API key" (78), not 243.
        "SetCredential=inworld-api-key:\\n",
        "StartLimitIntervalSec=60",
        "StartLimitBurst=10",
        "BindPaths=-/dev/snd -/dev/gpiochip0 -/dev/gpiochip4",
        "DeviceAllow=char-gpiochip rw",
        "SupplementaryGroups=audio gpio",
        "StateDirectory=appliance",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "DeviceAllow=char-alsa rw",
    ):
        assert line in text.splitlines(), line


MDWE_PROBE = """
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    raise SystemExit(f"no-mdwe {ctypes.get_errno()}")
import numpy as np, soxr, webrtcvad, alsaaudio, ssl, websockets, gpiozero
from systemd import daemon, journal
x = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
assert len(soxr.resample(x, 48000, 24000)) == 24000
stream = soxr.ResampleStream(16000, 24000, 1, dtype="int16")
stream.resample_chunk(np.zeros(1600, np.int16))
webrtcvad.Vad(2).is_speech(b"\\0" * 320, 16000)
np.fft.rfft(x); float(x @ x)
ssl.create_default_context()
# The optional audio processing (AEC3) and the wake-word runtime (TFLite) at work.
import pywebrtc_audio
ap = pywebrtc_audio.AudioProcessor(16000, 1, echo_cancellation=True, noise_suppression=True)
ap.process(np.zeros(160, np.int16), np.zeros(160, np.int16))
from appliance.audio.wake import WakeWordDetector
detector = WakeWordDetector("okay_nabu")
detector(np.random.default_rng(1).integers(-3000, 3000, 16000).astype(np.int16))
assert detector.model_steps > 0
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    print("ok")
else:
    print("W+X mapping was allowed: the probe does not work")
"""


def test_libraries_work_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is the kernel's MDWE rule (prctl PR_SET_MDWE, Linux 6.3+)."""
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, check=False
    )
    if result.stdout.startswith("no-mdwe") or "no-mdwe" in result.stderr:
        pytest.skip(f"kernel {os.uname().release} has no PR_SET_MDWE")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


WEBRTC_DROPIN = ROOT / "systemd" / "appliance-webrtc.conf"

OPENSSL_CALLBACK_PROBE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(65, 1, 0, 0, 0) == 0
from OpenSSL import SSL  # aiortc's DTLS
ctx = SSL.Context(SSL.DTLS_METHOD)
try:
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
except MemoryError:
    print("needs W+X")
else:
    print("ok")
"""


def test_webrtc_needs_its_drop_in_and_the_drop_in_verifies(tmp_path: Path) -> None:
    """transport = "webrtc" cannot run under the unit's MemoryDenyWriteExecute=yes: aiortc's
    DTLS (pyOpenSSL) makes a cffi callback, which needs writable+executable memory. The
    shipped drop-in lifts exactly that (and lets ICE list the interfaces over netlink);
    the unit with it still verifies cleanly and stays at most 2.0 exposed."""
    probe = subprocess.run(
        [sys.executable, "-c", OPENSSL_CALLBACK_PROBE], capture_output=True, text=True, check=False
    )
    assert probe.stdout.strip() == "needs W+X", probe.stdout + probe.stderr
    dropin = WEBRTC_DROPIN.read_text()
    assert "MemoryDenyWriteExecute=no" in dropin and "AF_NETLINK" in dropin
    unit = checkable_unit(tmp_path)
    unit.write_text(unit.read_text() + "\n" + dropin)
    verify = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security.stdout)
    assert found and float(found.group(1)) <= 2.0, security.stdout


# --- install / uninstall -------------------------------------------------------------------------


def run_install(
    destdir: Path, action: str, *, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``make <action> DESTDIR=...``; ``input`` is its standard input (the key, as in
    ``sudo make key < keyfile``), else nothing (as in CI)."""
    base = {k: v for k, v in os.environ.items() if k != "INWORLD_API_KEY"}
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), action, f"DESTDIR={destdir}"],
        env={**base, "APPLIANCE_INSTALL_SKIP_VENV": "1", **env},
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        check=False,
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_install_into_destdir_places_files_with_modes_and_keeps_the_config(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "root"
    conf = dest / "etc/appliance/appliance.toml"
    cred = dest / "etc/appliance/credentials/inworld-api-key"
    unit = dest / "etc/systemd/system/appliance.service"

    first = run_install(dest, "install", input=KEY + "\n")
    assert first.returncode == 0, first.stdout + first.stderr
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    assert conf.read_text() == (ROOT / "config/appliance.toml").read_text()
    assert mode(conf) == 0o644
    assert cred.read_text() == KEY + "\n"
    assert mode(cred) == 0o600 and mode(cred.parent) == 0o700
    assert KEY not in first.stdout + first.stderr
    tmpfiles = dest / "etc/tmpfiles.d/appliance.conf"
    assert "d /dev/snd 0755 root root -" in tmpfiles.read_text().splitlines()
    command = dest / "usr/local/bin/appliance"
    assert os.readlink(command) == "/opt/appliance/venv/bin/appliance"

    conf.write_text("# edited by the owner\n")
    again = run_install(dest, "install", input="another-key\n")  # a stored key stays
    assert again.returncode == 0, again.stdout + again.stderr
    assert "keeping the existing API key" in again.stdout and "sudo make key" in again.stdout
    assert conf.read_text() == "# edited by the owner\n"
    assert cred.read_text() == KEY + "\n"

    (dest / "opt/appliance/venv/bin").mkdir(parents=True)
    (dest / "var/lib/private/appliance").mkdir(parents=True)
    gone = run_install(dest, "uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not unit.exists() and not tmpfiles.exists() and not command.is_symlink()
    assert not (dest / "opt/appliance").exists()
    assert not (dest / "var/lib/private/appliance").exists()
    assert conf.exists() and cred.exists()


def test_the_key_never_comes_from_the_environment_and_make_key_replaces_it(
    tmp_path: Path,
) -> None:
    """`sudo --preserve-env=INWORLD_API_KEY` made sudo log the key to the journal: the
    install no longer reads that variable. The key comes on standard input (or at a
    prompt that does not echo, on a terminal); `make key` replaces a stored one."""
    dest = tmp_path / "root"
    cred = dest / "etc/appliance/credentials/inworld-api-key"
    plain = run_install(dest, "install", INWORLD_API_KEY=KEY)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert not cred.exists()
    assert "no API key given" in plain.stdout and "sudo make key" in plain.stdout

    empty = run_install(dest, "key")
    assert empty.returncode != 0 and not cred.exists()
    stored = run_install(dest, "key", input=f"  {KEY}\r\n")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert cred.read_text() == KEY + "\n" and mode(cred) == 0o600
    replaced = run_install(dest, "key", input="bmV3OmtleQ==\n")
    assert replaced.returncode == 0 and cred.read_text() == "bmV3OmtleQ==\n"
    assert KEY not in stored.stdout + stored.stderr + replaced.stdout + replaced.stderr
    script = (ROOT / "scripts/install.sh").read_text()
    assert "INWORLD_API_KEY" not in script


def test_install_honours_prefix_and_sysconfdir(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = run_install(dest, "install", PREFIX="/usr/local/appliance", SYSCONFDIR="/etc/voice")
    # PREFIX/SYSCONFDIR given in the environment reach the script through make's ?=.
    assert result.returncode == 0, result.stdout + result.stderr
    unit = (dest / "etc/systemd/system/appliance.service").read_text()
    assert "ExecStart=/usr/local/appliance/venv/bin/appliance run --config /etc/voice/appliance.toml" in unit
    assert "LoadCredential=inworld-api-key:/etc/voice/credentials/inworld-api-key" in unit
    assert (dest / "etc/voice/appliance.toml").exists()


# --- sd_notify and the watchdog, in process ------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """An AF_UNIX datagram socket standing in for systemd's, named by NOTIFY_SOCKET."""
    directory = tempfile.mkdtemp(prefix="ntf", dir="/tmp")  # sun_path is short
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory)


def test_notifier_sends_each_message_and_skips_repeated_status(notify_socket: socket.socket) -> None:
    n = Notifier()
    n.ready()
    n.status("Ready")
    n.status("Ready")
    n.status("Reconnecting in 4 s: connection refused")
    n.reloading()
    n.watchdog()
    n.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(6)]
    assert got[:3] == ["READY=1", "STATUS=Ready", "STATUS=Reconnecting in 4 s: connection refused"]
    reloading, usec = got[3].split("\n")
    assert reloading == "RELOADING=1"
    sent_at = int(usec.removeprefix("MONOTONIC_USEC="))
    assert 0 <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - sent_at < 5_000_000
    assert got[4:] == ["WATCHDOG=1", "STOPPING=1"]


def test_notifier_without_socket_or_with_a_vanished_one_is_quiet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    Notifier().ready()  # no socket: nothing to do
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    n = Notifier()
    n.ready()
    n.status("Ready")  # warned once, never raised


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None


@dataclass
class Beating:
    """An audio thread as the watchdog sees it: ``alive`` and ``heartbeat``."""

    heartbeat: float
    alive: bool = True


@dataclass
class Bare:
    """A thread object without the health properties (tolerated)."""

    calls: list[str] = field(default_factory=list)


def test_audio_health_rules() -> None:
    now = 1000.0
    fresh, idle = Beating(now - 0.1), Beating(now - 600)
    assert audio_problem(fresh, idle, now=now, playing=False) is None  # idle playback is fine
    assert audio_problem(fresh, fresh, now=now, playing=True) is None
    hung = Beating(now - CAPTURE_STALL_S - 1)
    assert audio_problem(hung, idle, now=now, playing=False) == (
        "capture thread made no progress for 3.0 s"
    )
    assert audio_problem(hung, idle, now=now, playing=False, device_outage=True) is None
    assert audio_problem(fresh, idle, now=now, playing=True) == (
        "playback thread made no progress for 600.0 s"
    )
    assert audio_problem(Beating(now, alive=False), idle, now=now, playing=False) == (
        "capture thread has stopped"
    )
    assert audio_problem(None, idle, now=now, playing=False) == "capture thread is not running"
    assert audio_problem(Bare(), Bare(), now=now, playing=True) is None


def test_watchdog_pings_only_while_healthy(notify_socket: socket.socket) -> None:
    verdicts = iter([None, None, "capture thread has stopped", "capture thread has stopped", None])
    asked = 0

    def problem() -> str | None:
        nonlocal asked
        asked += 1
        return next(verdicts, "done")

    async def main() -> None:
        task = asyncio.create_task(run_watchdog(Notifier(), problem, 0.01))
        await until(lambda: asked > 6, 5, "every verdict and two unhealthy ones after them")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    notify_socket.settimeout(0.2)
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(notify_socket.recv(64).decode())
    assert got == ["WATCHDOG=1"] * 3  # two healthy, two not, one healthy, then never


def test_no_watchdog_task_without_watchdog_usec() -> None:
    asyncio.run(run_watchdog(Notifier(), lambda: None, None))  # returns at once


# --- reload rules (pure) -------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "session": {
        "instructions": "Be brief.",
        "temperature": 0.8,
        "audio": {"output": {"voice": "Clive", "speed": 1.0}},
    },
    "gpio": {"enabled": False},
}


def changed(**tables: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in BASE.items()}
    out.update(tables)
    return out


def test_reload_sends_only_what_changed_in_session() -> None:
    old = parse_config(BASE)
    new_session = dict(BASE["session"], audio={"output": {"voice": "Dennis", "speed": 1.0}})
    new = parse_config(changed(session=new_session))
    plan = plan_reload(old, new)
    assert plan.session_update == {
        "type": "realtime",
        "audio": {"output": session_api(new)["audio"]["output"]},
    }
    assert plan.session_update["audio"]["output"]["voice"] == "Dennis"
    assert plan.changed_fields == ("audio.output.voice",)
    assert not (plan.reconnect or plan.restart_audio or plan.gpio_changed or plan.log_level)


def test_reload_of_an_identical_file_changes_nothing() -> None:
    plan = plan_reload(parse_config(BASE), parse_config(BASE))
    assert plan.empty and plan.session_update is None


def test_a_removed_session_field_needs_a_new_session() -> None:
    session = {k: v for k, v in BASE["session"].items() if k != "instructions"}
    plan = plan_reload(parse_config(BASE), parse_config(changed(session=session)))
    assert plan.reconnect and plan.changed_fields == ("instructions",)


def test_audio_gate_realtime_logging_and_gpio_changes_are_planned() -> None:
    plan = plan_reload(
        parse_config(BASE),
        parse_config(
            changed(
                audio={"capture_rate": 48000},
                realtime={"url": "ws://127.0.0.1:1/api/v1/realtime/session"},
                logging={"level": "debug"},
                gpio={"enabled": True},
            )
        ),
    )
    assert plan.restart_audio and plan.reconnect and plan.gpio_changed
    assert plan.log_level == "debug" and plan.session_update is None
    # gate mode "always" hands turn detection to the server: the session changes too.
    plan = plan_reload(parse_config(BASE), parse_config(changed(gate={"mode": "always"})))
    assert plan.rebuild_frontend and not (plan.restart_capture or plan.restart_playback)
    assert plan.session_update is not None and "input" in plan.session_update["audio"]


@pytest.mark.parametrize(
    ("tables", "capture", "playback", "frontend"),
    [
        ({"audio": {"capture_device": "hw:1"}}, True, False, True),
        ({"audio": {"capture_rate": 48000}}, True, False, True),
        ({"audio": {"capture_channels": 2, "channel": 1}}, True, False, True),
        ({"audio": {"playback_device": "hw:2"}}, False, True, False),
        ({"audio": {"playback_rate": 48000, "prefill_ms": 120}}, False, True, False),
        ({"audio": {"period_ms": 20}}, True, True, True),  # both devices use it
        ({"audio": {"chunk_ms": 60}}, False, False, True),
        ({"gate": {"vad_aggressiveness": 3, "hangover_ms": 500}}, False, False, True),
        ({"gate": {"preroll_ms": 200}}, False, False, True),
        ({"gate": {"barge_in": "off"}}, False, False, False),  # the session's alone
        # A key the plan does not know re-opens everything: slower, never wrong.
        ({"audio": {"processing": {"noise_suppression": True}}}, True, True, True),
    ],
)
def test_reload_reopens_only_what_changed(
    tables: dict[str, Any], capture: bool, playback: bool, frontend: bool
) -> None:
    plan = plan_reload(parse_config(BASE), parse_config(changed(**tables)))
    assert (plan.restart_capture, plan.restart_playback, plan.rebuild_frontend) == (
        capture,
        playback,
        frontend,
    )
    assert not plan.empty and not plan.reconnect and plan.session_update is None
    section = next(iter(tables))
    assert set(plan.audio_keys) == {f"{section}.{k}" for k in tables[section]}


def test_reload_of_earcons_is_planned() -> None:
    plan = plan_reload(parse_config(BASE), parse_config(changed(earcons={"mute": ""})))
    assert plan.earcons_changed and not plan.restart_audio and not plan.empty


# --- the daemon process under a notify socket of our own -----------------------------------------


class NotifyReader:
    """Reads sd_notify datagrams for an asyncio test; keeps every message."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="ntf", dir="/tmp")
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self._seen = 0

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory)

    def drain(self) -> list[str]:
        """Every message: those already read and those waiting in the socket."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    async def expect(self, match: Callable[[str], bool], timeout: float, what: str) -> str:
        """The next message (after those already matched) for which ``match`` is true."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._seen < len(self.messages):
                msg = self.messages[self._seen]
                self._seen += 1
                if match(msg):
                    return msg
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.messages}")
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), remaining)
                self.messages.append(data.decode())


@dataclass
class DaemonRun:
    proc: asyncio.subprocess.Process
    notify: NotifyReader
    log: Path
    config: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def run_daemon(
    tmp_path: Path, url: str, *, mic_pcm: bytes | None = None, fifo_mic: bool = False, **env: str
) -> Any:
    """The daemon with its own notify socket. The microphone reads ``mic_pcm`` (16 kHz; by
    default 30 s of silence), or with ``fifo_mic`` a named pipe at ``tmp_path / "mic.raw"``
    that the test feeds: the ``file`` plugin reads it with blocking ``read()``s, so a pipe
    left empty hangs the capture thread inside alsa-lib, as a wedged driver would."""
    from appliance.demo import write_file_devices

    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    if fifo_mic:
        os.mkfifo(mic)
    else:
        mic.write_bytes(bytes(16000 * 2 * 30) if mic_pcm is None else mic_pcm)
    asoundrc = write_file_devices(tmp_path, mic, spk)
    config = tmp_path / "appliance.toml"
    write_config(config, url)
    notify = NotifyReader()
    full_env = daemon_env(asoundrc, NOTIFY_SOCKET=notify.path, **env)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *APPLIANCE, "run", "--config", str(config), env=full_env, stdout=out, stderr=out
        )
    run = DaemonRun(proc, notify, log, config)
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()


async def wait_for_log(d: DaemonRun, text: str, timeout: float = 5.0) -> None:
    await until(lambda: text in d.log_text(), timeout, f"{text!r} in the log")


def test_lifecycle_ready_status_reload_stop(tmp_path: Path) -> None:
    from realtime_sim.server import RealtimeSimulator

    async def main() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim, run_daemon(tmp_path, sim.url) as d:
            n = d.notify
            try:
                await n.expect(lambda m: m == "READY=1", 20, "READY=1")
                await n.expect(lambda m: m == "STATUS=Ready", 20, "STATUS=Ready")
                assert "STATUS=Connecting" in n.messages
                updates = [e for e in sim.received if e["type"] == "session.update"]
                assert updates[0]["session"]["audio"]["output"]["voice"] == "Clive"

                # systemctl reload: a changed voice reaches the live session as a partial update.
                write_config(d.config, sim.url, voice="Dennis")
                d.proc.send_signal(signal.SIGHUP)
                reloading = await n.expect(lambda m: m.startswith("RELOADING=1"), 10, "RELOADING")
                assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading)
                await n.expect(lambda m: m == "READY=1", 10, "READY=1 after the reload")
                def updates_() -> list[dict[str, Any]]:
                    return [e for e in sim.received if e["type"] == "session.update"]

                await until(lambda: len(updates_()) > 1, 5, "the partial session.update")
                updates = updates_()
                assert len(updates) == 2, sim.received
                partial = updates[1]["session"]
                assert partial["audio"]["output"]["voice"] == "Dennis"
                assert "instructions" not in partial and "temperature" not in partial
                assert "input" not in partial["audio"]

                # Only what changed is re-opened: [audio] playback keys re-open the speaker...
                def opened(device: str) -> int:
                    return int(d.log_text().count(f"{device} open:"))

                async def reload_with(old: str, new: str, done: str) -> None:
                    d.config.write_text(d.config.read_text().replace(old, new))
                    d.proc.send_signal(signal.SIGHUP)
                    await n.expect(lambda m: m.startswith("RELOADING=1"), 10, "RELOADING")
                    await n.expect(lambda m: m == "READY=1", 10, "READY=1 after the reload")
                    await wait_for_log(d, done)

                write_config(d.config, sim.url, voice="Dennis")
                await reload_with("playback_rate = 24000", "playback_rate = 48000", "re-opened playback")
                await wait_for_log(d, "playback 'spk' open: 48000 Hz")  # opened by its thread
                assert (opened("capture 'mic'"), opened("playback 'spk'")) == (1, 2)
                # ...gate keys rebuild the front end on the running capture thread...
                await reload_with("mode = \"vad\"", "mode = \"vad\"\nhangover_ms = 500", "re-opened front end")
                assert "gate.hangover_ms changed" in d.log_text()
                # ...and capture keys re-open the microphone alone.
                await reload_with("capture_rate = 16000", "capture_rate = 48000", "re-opened capture")
                await wait_for_log(d, "capture 'mic' open: 48000 Hz")
                assert (opened("capture 'mic'"), opened("playback 'spk'")) == (2, 2)
                assert len([e for e in sim.received if e["type"] == "session.update"]) == 2

                # An invalid file changes nothing: logged with its key, the daemon keeps going.
                write_config(d.config, sim.url, extra="[logging]\nlevel = 'loud'\n")
                d.proc.send_signal(signal.SIGHUP)
                await wait_for_log(d, "keeping the running config")
                assert "logging.level" in d.log_text()
                assert d.proc.returncode is None
                assert not any(m.startswith("RELOADING") for m in n.messages[n._seen :])

                d.proc.send_signal(signal.SIGTERM)
                await n.expect(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
                code = await asyncio.wait_for(d.proc.wait(), 10)
                assert code == 0, d.log_text()
            except BaseException:
                print(d.log_text())
                raise
            assert KEY not in d.log_text()

    asyncio.run(main())


def test_watchdog_pings_while_the_daemon_runs(tmp_path: Path) -> None:
    from realtime_sim.server import RealtimeSimulator

    async def main() -> None:
        async with (
            RealtimeSimulator(api_key=KEY, profile="fast") as sim,
            run_daemon(tmp_path, sim.url, WATCHDOG_USEC="1000000") as d,
        ):
            try:
                await d.notify.expect(lambda m: m == "READY=1", 20, "READY=1")
                start = time.monotonic()
                for _ in range(3):
                    await d.notify.expect(lambda m: m == "WATCHDOG=1", 3, "WATCHDOG=1")
                assert time.monotonic() - start < 3.0
                d.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(d.proc.wait(), 10) == 0
            except BaseException:
                print(d.log_text())
                raise

    asyncio.run(main())


def test_invalid_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[gate]\nmode = "sometimes"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    result = subprocess.run(
        [*APPLIANCE, "run", "--config", str(config)],
        env={**env, "INWORLD_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    assert "gate.mode" in result.stderr and "Traceback" not in result.stderr


def test_status_says_when_it_reconnects(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        url = f"ws://127.0.0.1:{port}/api/v1/realtime/session"
        async with run_daemon(tmp_path, url) as d:
            try:
                await d.notify.expect(lambda m: m == "READY=1", 20, "READY=1")
                status = await d.notify.expect(
                    lambda m: m.startswith("STATUS=Reconnecting in"), 20, "STATUS=Reconnecting"
                )
                assert re.fullmatch(r"STATUS=Reconnecting in \d+ s: .+", status), status
                d.proc.send_signal(signal.SIGTERM)
                await d.notify.expect(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
                assert await asyncio.wait_for(d.proc.wait(), 10) == 0
            except BaseException:
                print(d.log_text())
                raise

    asyncio.run(main())


def test_status_follows_a_voice_turn(tmp_path: Path) -> None:
    """STATUS= says each state of a real turn, in order, as systemctl status would show it."""
    from appliance.demo import speech_recording
    from realtime_sim.server import RealtimeSimulator

    pcm, rate = speech_recording()
    assert rate == 16000
    # Two seconds of silence first, so the turn starts after the session is ready.
    mic = bytes(2 * rate * 2) + pcm + bytes(3 * rate * 2)

    async def main() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim, run_daemon(tmp_path, sim.url, mic_pcm=mic) as d:
            n = d.notify
            try:
                await n.expect(lambda m: m == "READY=1", 20, "READY=1")
                await n.expect(lambda m: m == "STATUS=Ready", 20, "STATUS=Ready")
                for words in ("Listening", "Thinking", "Speaking", "Ready"):
                    await n.expect(lambda m, w=words: m == f"STATUS={w}", 20, f"STATUS={words}")
                statuses = [m for m in n.messages if m.startswith("STATUS=")]
                turn = statuses[statuses.index("STATUS=Listening") :]
                assert turn == [f"STATUS={w}" for w in ("Listening", "Thinking", "Speaking", "Ready")]
                d.proc.send_signal(signal.SIGTERM)
                await n.expect(lambda m: m == "STOPPING=1", 10, "STOPPING=1")
                assert await asyncio.wait_for(d.proc.wait(), 10) == 0
            except BaseException:
                print(d.log_text())
                raise

    asyncio.run(main())


class PipeFeeder:
    """Feeds a named pipe 10 ms of 16 kHz silence every 10 ms while ``feeding`` is set.

    The pipe is opened read-write here, so neither end blocks in ``open()``.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.feeding = threading.Event()
        self.feeding.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = bytes(320)
        due = time.monotonic()
        while not self._stop.is_set():
            if self.feeding.is_set():
                with contextlib.suppress(BlockingIOError):  # the pipe is full: the reader lags
                    os.write(self.fd, period)
            due += 0.01
            time.sleep(max(0.0, due - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)


def test_a_hung_capture_thread_stops_the_watchdog_pings(tmp_path: Path) -> None:
    """The capture thread blocks for real inside alsa-lib's read() of an empty pipe: the
    event loop still turns, yet no WATCHDOG=1 goes out (systemd would restart the service)
    until the thread reads again."""
    from realtime_sim.server import RealtimeSimulator

    async def main() -> None:
        async with (
            RealtimeSimulator(api_key=KEY, profile="fast") as sim,
            run_daemon(tmp_path, sim.url, fifo_mic=True, WATCHDOG_USEC="1000000") as d,
        ):
            feeder = PipeFeeder(tmp_path / "mic.raw")
            n = d.notify
            try:
                await n.expect(lambda m: m == "READY=1", 20, "READY=1")
                for _ in range(2):
                    await n.expect(lambda m: m == "WATCHDOG=1", 3, "WATCHDOG=1")
                feeder.feeding.clear()  # the next read() blocks
                hung_at = time.monotonic()
                await wait_for_log(d, "not pinging systemd: capture thread made no progress", 10)
                pings = n.drain().count("WATCHDOG=1")
                silent_from = time.monotonic()
                await asyncio.sleep(2.5)  # five ping intervals
                assert n.drain().count("WATCHDOG=1") == pings
                assert silent_from - hung_at < CAPTURE_STALL_S + 3.0  # slack for a loaded machine
                assert d.proc.returncode is None
                assert "device stalled" not in d.log_text()  # hung, not a reported outage
                feeder.feeding.set()  # the read() returns: progress, pings again
                await n.expect(lambda m: m == "WATCHDOG=1", 5, "WATCHDOG=1 after the hang")
                await wait_for_log(d, "watchdog: healthy again")
                d.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(d.proc.wait(), 10) == 0
            except BaseException:
                print(d.log_text())
                raise
            finally:
                feeder.close()

    asyncio.run(main())


def test_a_stop_right_after_ready_is_never_lost(tmp_path: Path) -> None:
    """SIGTERM a few ms after READY=1 lands while the session is being set up. Python
    3.11's asyncio.wait_for swallows a cancel that arrives as its awaitable completes (here:
    session.created), so the reader task ran on and systemd had to SIGKILL the service
    (1 stop in 60). Every stop must end the process promptly."""
    from realtime_sim.server import RealtimeSimulator

    rng = random.Random(11)

    async def main() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            for cycle in range(8):
                run_dir = tmp_path / str(cycle)
                run_dir.mkdir()
                async with run_daemon(run_dir, sim.url) as d:
                    try:
                        await d.notify.expect(lambda m: m == "READY=1", 20, "READY=1")
                        await asyncio.sleep(rng.uniform(0.0, 0.05))
                        d.proc.send_signal(signal.SIGTERM)
                        assert await asyncio.wait_for(d.proc.wait(), 10) == 0
                    except BaseException:
                        print(f"cycle {cycle}:\n{d.log_text()}")
                        raise

    asyncio.run(main())


def test_a_realtime_reload_while_offline_reconnects_at_once(tmp_path: Path) -> None:
    """Offline, the daemon waits out a backoff delay (up to 30 s) between attempts; a
    reload that changes [realtime] (the URL fixed) connects now, not after that wait."""
    from realtime_sim.server import RealtimeSimulator

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        dead = f"ws://127.0.0.1:{port}/api/v1/realtime/session"
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim, run_daemon(tmp_path, dead) as d:
            n = d.notify
            try:
                await n.expect(lambda m: m == "READY=1", 20, "READY=1")
                waiting = 0
                while waiting < 4:  # full jitter: a delay of 4 s or more comes within a few
                    status = await n.expect(
                        lambda m: m.startswith("STATUS=Reconnecting in"), 60, "STATUS=Reconnecting"
                    )
                    found = re.match(r"STATUS=Reconnecting in (\d+) s", status)
                    assert found, status
                    waiting = int(found.group(1))
                write_config(d.config, sim.url)
                asked = time.monotonic()
                d.proc.send_signal(signal.SIGHUP)
                await n.expect(lambda m: m == "STATUS=Ready", 10, "STATUS=Ready")
                assert time.monotonic() - asked < waiting - 1.0
                d.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(d.proc.wait(), 10) == 0
            except BaseException:
                print(d.log_text())
                raise

    asyncio.run(main())


def test_the_unit_does_not_wait_for_network_online() -> None:
    """network-online.target holds a Pi's boot up to a minute with the Wi-Fi down; the
    daemon connects (and reconnects) by itself, so it starts without waiting."""
    lines = UNIT.read_text().splitlines()
    assert not any(line.startswith(("Wants=", "After=", "Requires=")) and "network-online" in line for line in lines)
