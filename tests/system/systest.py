#!/usr/bin/env python3
"""The install and the service under a real systemd: ``make system-test`` (as root).

Boots a Debian bookworm root (tests/system/build_root.sh, cached outside the repo) with
systemd as PID 1 in systemd-nspawn, on an overlay so the cached root stays clean. Inside,
a normal user "pi" owns a copy of this checkout and installs it the way the README says
(``sudo make install``, the key given on standard input as ``sudo make key < keyfile``
would). Then, against the loopback simulator (``appliance simulate``, the container shares
the host's network) and ALSA ``file`` devices defined in /etc/asound.conf:

- ``appliance devices`` works for pi from the PATH, with nothing on stderr;
- the installed venv imports gpiozero's lgpio pin factory and lgpio itself (x86 has no
  Pi header: opening a pin is not checked), and the checkout is still all pi's;
- no key: the start fails with exit status 78, one "no API key" line, no restart;
- ``sudo make key``: the service starts, READY, a whole voice turn (Listening ... Speaking,
  ready), the reply written by the speaker, journal fields STATE= and TURN_ID=, no raw
  "ALSA lib" lines in the journal;
- a sound device node made after the start is visible inside the service's /dev/snd;
- reload: a PCM added to /etc/asound.conf after the start is opened;
- ten restarts in a row all succeed (the start limit allows an owner trying things);
- many quick start/stop cycles, SIGTERM at random times up to 300 ms after READY: every
  stop within 5 s (none lost, none killed);
- re-install restarts the running service (a new main PID), the key kept;
- uninstall removes the unit.

Prints each check and the total time; exits 1 at the first failure, with the journal.
Stdlib only: it runs with the host's python3, before any venv exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("APPLIANCE_SYSTEST_WORK", "/var/tmp/appliance-systest"))
KEY = "c3lzdGVzdDpzeXN0ZXN0LWtleQ=="  # base64 "systest:systest-key": simulator and service
CYCLES = int(os.environ.get("APPLIANCE_SYSTEST_CYCLES", "40"))
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


class Failed(Exception):
    pass


def check(ok: bool, what: str, detail: str = "") -> None:
    if not ok:
        raise Failed(f"{what}\n{detail}".rstrip())
    say(f"ok: {what}")


def sh(*cmd: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )


class Container:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = (WORK / "nspawn.log").open("wb")
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn", "-q", "-b", "--register=no", "--keep-unit",
                "--capability=all", "--system-call-filter=bpf", "-D", str(root),
            ],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        self.pid = self._init_pid()

    def _init_pid(self) -> int:
        """The container's systemd: a descendant of systemd-nspawn named systemd."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            todo = [str(self.proc.pid)]
            while todo:
                pid = todo.pop()
                with contextlib.suppress(OSError):
                    if pid != str(self.proc.pid) and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
                    todo += Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if self.proc.poll() is not None:
                raise Failed(f"systemd-nspawn exited {self.proc.returncode}")
            time.sleep(0.1)
        raise Failed("no systemd in the container after 30 s")

    def run(self, cmd: str, *, user: str = "root", input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        prefix = ["nsenter", "-t", str(self.pid), "-a", "--"]
        if user != "root":
            prefix += ["runuser", "-u", user, "--"]
        return sh(*prefix, "bash", "-c", cmd, input=input, timeout=timeout)

    def ok(self, cmd: str, **kw: object) -> str:
        result = self.run(cmd, **kw)  # type: ignore[arg-type]
        if result.returncode != 0:
            raise Failed(f"{cmd!r} exited {result.returncode}\n{result.stdout}{result.stderr}")
        return result.stdout

    def popen(self, cmd: str, user: str, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        return subprocess.Popen(
            ["nsenter", "-t", str(self.pid), "-a", "--", "runuser", "-u", user, "--", "bash", "-c", cmd],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def show(self, *props: str) -> dict[str, str]:
        out = self.ok("systemctl show appliance " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, since_cursor: str = "") -> list[dict[str, str]]:
        after = f"--after-cursor='{since_cursor}'" if since_cursor else ""
        out = self.ok(f"journalctl -u appliance -o json --no-pager {after}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def cursor(self) -> str:
        out = self.ok("journalctl -u appliance -n 1 -o json --no-pager")
        lines = out.strip().splitlines()
        return json.loads(lines[-1])["__CURSOR"] if lines else ""

    def stop(self) -> None:
        self.run("systemctl poweroff", timeout=20)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def messages(entries: list[dict[str, str]]) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in entries]


def wait_for(what: str, test: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():  # type: ignore[operator]
            say(f"ok: {what}")
            return
        time.sleep(0.2)
    raise Failed(f"not within {timeout:g} s: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_config(port: int, spk: str = "spk") -> str:
    return f"""
[realtime]
url = "ws://127.0.0.1:{port}/api/v1/realtime/session"
[session]
instructions = "Be brief."
[session.audio.input.transcription]
model = "assemblyai/u3-rt-pro"
[audio]
capture_device = "mic"
capture_rate = 16000
playback_device = "{spk}"
playback_rate = 24000
[gate]
mode = "vad"
[gpio]
enabled = false
"""


def asound_conf(extra: bool = False) -> str:
    text = (
        'pcm.mic { type file; slave.pcm "null"; file "/dev/null"; '
        'infile "/var/lib/systest/mic.raw"; format "raw" }\n'
        'pcm.spk { type file; slave.pcm "null"; file "/tmp/spk.raw"; format "raw" }\n'
    )
    if extra:
        text += 'pcm.spk2 { type file; slave.pcm "null"; file "/tmp/spk2.raw"; format "raw" }\n'
    return text


def mic_recording() -> bytes:
    import wave

    with wave.open(str(REPO / "appliance" / "data" / "speech.wav"), "rb") as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        speech = wav.readframes(wav.getnframes())
    second = bytes(2 * 16000)
    return second * 2 + speech + second * 3 + bytes(2 * 16000 * 600)  # then 10 min of quiet


def prepare() -> Path:
    built = sh(str(REPO / "tests/system/build_root.sh"), timeout=1800)
    if built.returncode != 0:
        raise Failed(f"build_root.sh failed\n{built.stderr}")
    base = Path(built.stdout.strip().splitlines()[-1])
    say(f"root {base}")
    for stale in base.parent.iterdir():  # roots for older package lists, about 1 GB each
        if stale != base and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    if WORK.exists():
        sh("umount", str(WORK / "merged"))
        shutil.rmtree(WORK)
    for d in ("upper", "work", "merged"):
        (WORK / d).mkdir(parents=True)
    merged = WORK / "merged"
    mounted = sh(
        "mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir={base},upperdir={WORK / 'upper'},workdir={WORK / 'work'}", str(merged),
    )
    if mounted.returncode != 0:
        raise Failed(f"overlay mount failed: {mounted.stderr}")
    # The checkout, owned by pi as a clone would be (uid/gid from the root's passwd).
    passwd = (merged / "etc/passwd").read_text().splitlines()
    pw = next(line.split(":") for line in passwd if line.startswith("pi:"))
    uid, gid = int(pw[2]), int(pw[3])
    checkout = merged / "home/pi/appliance"
    tar = subprocess.Popen(
        ["tar", "-C", str(REPO), "--exclude=./.venv", "--exclude=./.git", "--exclude=./out",
         "--exclude=*.egg-info", "--exclude=./build", "--exclude=__pycache__",
         "--exclude=.mypy_cache", "--exclude=.ruff_cache", "--exclude=.pytest_cache",
         "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    checkout.mkdir()
    subprocess.run(["tar", "-C", str(checkout), "-xf", "-"], stdin=tar.stdout, check=True)
    tar.wait()
    sh("chown", "-R", f"{uid}:{gid}", str(checkout))
    (merged / "etc/asound.conf").write_text(asound_conf())
    (merged / "var/lib/systest").mkdir(parents=True)
    (merged / "var/lib/systest/mic.raw").write_bytes(mic_recording())
    os.chmod(merged / "var/lib/systest/mic.raw", 0o644)
    return merged


def private_tmp_size(box: Container, name: str) -> int:
    """Size of a file in the service's PrivateTmp= (under the container's own /tmp, a
    tmpfs of systemd-nspawn's, so read from inside); -1 when there is none."""
    out = box.run(f"stat -c %s /tmp/systemd-private-*-appliance.service-*/tmp/{name}").stdout
    return int(out.split()[0]) if out.strip() else -1


def main() -> int:
    if os.geteuid() != 0:
        print("system-test: run as root (it boots a container)", file=sys.stderr)
        return 2
    root = prepare()
    say("booting the container")
    box = Container(root)
    sim: subprocess.Popen[bytes] | None = None
    try:
        # Until systemd answers as the container's manager: found by its name, it may not
        # have marked the system booted yet (/run/systemd/system), which reads "offline".
        for _ in range(100):
            booted = box.run("systemctl is-system-running --wait", timeout=120)
            if booted.stdout.strip() not in ("", "offline"):
                break
            time.sleep(0.2)
        state = booted.stdout.strip()
        check(state in ("running", "degraded"), f"systemd booted ({state})", booted.stderr)

        # --- install with no key (stdin is empty, as in CI) --------------------------------
        install = box.run("cd ~/appliance && sudo make install </dev/null", user="pi", timeout=900)
        check(install.returncode == 0, "sudo make install as pi", install.stdout + install.stderr)
        check("no API key given" in install.stdout, "install says the key is missing", install.stdout)
        not_pis = box.ok("find /home/pi/appliance ! -user pi | head -5")
        check(not_pis == "", "the checkout is still all pi's", not_pis)
        made = box.run("cd ~/appliance && make -n clean >/dev/null && ls -d build *.egg-info 2>&1", user="pi")
        check("No such file" in made.stdout, "no build/ or egg-info left in the checkout", made.stdout)
        gpio = box.run(
            "/opt/appliance/venv/bin/python -c 'import lgpio, gpiozero; "
            "from gpiozero.pins.lgpio import LGPIOFactory; print(lgpio.__name__, LGPIOFactory.__name__)'"
        )
        check(gpio.stdout.strip() == "lgpio LGPIOFactory", "the venv imports lgpio and gpiozero's LGPIOFactory", gpio.stdout + gpio.stderr)

        listed = box.run("appliance devices", user="pi")
        check(
            listed.returncode == 0 and "mic (capture)" in listed.stdout and listed.stderr == "",
            "'appliance devices' on pi's PATH lists the PCMs, nothing on stderr",
            listed.stdout + listed.stderr,
        )

        port = free_port()
        conf = root / "etc/appliance/appliance.toml"
        conf.write_text(service_config(port))
        sim = box.popen(
            f"INWORLD_API_KEY={KEY} exec /opt/appliance/venv/bin/appliance simulate --port {port}",
            "pi", WORK / "simulator.log",
        )

        # --- a missing key: exit 78, one line, no restart loop ---------------------------------
        started = box.run("systemctl start appliance")
        check(started.returncode != 0, "without a key the start fails")
        time.sleep(7)  # longer than RestartSec=5s
        props = box.show("ExecMainStatus", "NRestarts", "ActiveState", "Result")
        check(props["ExecMainStatus"] == "78" and props["NRestarts"] == "0", f"exit 78 and no restart ({props})")
        lines = [m for m in messages(box.journal()) if "no API key" in m]
        check(len(lines) == 1 and "sudo make key" in lines[0], "one line says 'no API key'", "\n".join(lines))

        # --- the key on standard input (`sudo make key < keyfile`) -----------------------------
        cursor = box.cursor()
        keyed = box.run("cd ~/appliance && sudo make key", user="pi", input=KEY + "\n", timeout=120)
        check(keyed.returncode == 0 and KEY not in keyed.stdout + keyed.stderr, "sudo make key < keyfile", keyed.stdout + keyed.stderr)
        wait_for("active", lambda: box.show("ActiveState")["ActiveState"] == "active", 60)

        def turn_done() -> bool:
            states = [str(e["STATE"]) for e in box.journal(cursor) if e.get("STATE")]
            return states[-4:] == ["listening", "thinking", "speaking", "ready"]

        wait_for("a whole voice turn (journal STATE=listening, thinking, speaking, ready)", turn_done, 60)
        entries = box.journal(cursor)
        check(any(e.get("TURN_ID") for e in entries), "journal entries carry TURN_ID=")
        played = private_tmp_size(box, "spk.raw")
        check(played > 24000 * 2, f"the reply reached the speaker ({played / 48000:.1f} s)")
        text = "\n".join(messages(box.journal()))
        check("ALSA lib" not in text and KEY not in text, "no raw alsa-lib lines and no key in the journal")

        # --- a sound card plugged in after the start --------------------------------------------
        main_pid = box.show("MainPID")["MainPID"]
        box.ok("mknod -m 0660 /dev/snd/controlC7 c 116 7 && chgrp audio /dev/snd/controlC7")
        seen = box.run(f"nsenter -t {main_pid} -m ls /dev/snd")
        check("controlC7" in seen.stdout, "a device node made after the start is in the service's /dev/snd", seen.stdout + seen.stderr)
        box.ok("rm -f /dev/snd/controlC7")

        # --- reload: a PCM added to /etc/asound.conf since the start ---------------------------
        cursor = box.cursor()
        (root / "etc/asound.conf").write_text(asound_conf(extra=True))
        conf.write_text(service_config(port, spk="spk2"))
        box.ok("systemctl reload appliance")
        wait_for("reload opened the new PCM spk2", lambda: any("'spk2' open" in m for m in messages(box.journal(cursor))), 30)
        check(not any("Unknown PCM" in m for m in messages(box.journal(cursor))), "no 'Unknown PCM' after the reload")

        # --- restarts in a row -----------------------------------------------------------------
        box.ok("systemctl reset-failed appliance")
        for i in range(10):
            r = box.run("systemctl restart appliance", timeout=90)
            if r.returncode != 0:
                raise Failed(f"restart {i + 1} of 10 failed: {r.stderr}")
        check(box.show("ActiveState")["ActiveState"] == "active", "ten restarts in a row")

        # --- quick start/stop cycles: no stop lost ---------------------------------------------
        box.ok("systemctl stop appliance")
        slow: list[str] = []
        rng = random.Random(7)
        t_cycles = time.monotonic()
        for i in range(CYCLES):
            box.ok("systemctl reset-failed appliance; systemctl start appliance", timeout=90)
            time.sleep(rng.uniform(0.0, 0.3))
            t = time.monotonic()
            box.ok("systemctl stop appliance", timeout=90)
            took = time.monotonic() - t
            result = box.show("Result")["Result"]
            if took > 5 or result != "success":
                slow.append(f"cycle {i + 1}: stop took {took:.1f} s, result {result}")
        killed = [m for m in messages(box.journal()) if "SIGKILL" in m or "timed out" in m]
        check(not slow and not killed, f"{CYCLES} start/stop cycles, every stop within 5 s ({time.monotonic() - t_cycles:.0f} s)", "\n".join(slow + killed))

        # --- upgrade: a re-install restarts the running service --------------------------------
        box.ok("systemctl start appliance")
        before = box.show("MainPID")["MainPID"]
        again = box.run("cd ~/appliance && sudo make install </dev/null", user="pi", timeout=900)
        check(again.returncode == 0 and "keeping the existing API key" in again.stdout, "re-install keeps the key", again.stdout + again.stderr)
        after = box.show("MainPID", "ActiveState")
        check(after["ActiveState"] == "active" and after["MainPID"] != before, "re-install restarted the service")
        not_pis = box.ok("find /home/pi/appliance ! -user pi | head -5")
        check(not_pis == "", "the checkout is still all pi's after the re-install", not_pis)

        gone = box.run("cd ~/appliance && sudo make uninstall", user="pi", timeout=120)
        check(gone.returncode == 0 and not (root / "etc/systemd/system/appliance.service").exists(), "uninstall removes the unit", gone.stdout + gone.stderr)
    except Failed as exc:
        print(f"system-test FAILED: {exc}", file=sys.stderr)
        print(box.run("journalctl -u appliance --no-pager -n 80").stdout, file=sys.stderr)
        return 1
    finally:
        if sim is not None:
            os.killpg(sim.pid, signal.SIGTERM)
            sim.wait(10)
        box.stop()
        sh("umount", str(root))
    say(f"system-test passed in {time.monotonic() - T0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
