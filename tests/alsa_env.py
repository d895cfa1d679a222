"""Real ALSA devices for tests on a machine without a sound card.

Two session-scoped pytest fixtures. Load this module as a plugin, in conftest.py or in each
test module that needs it: ``pytest_plugins = ["alsa_env"]``; import the classes for
annotations only (``if TYPE_CHECKING: from alsa_env import AlsaEnv, PulseEnv``), since a
plain import before pytest registers the plugin defeats its assertion rewriting.

``alsa_env`` -> ``AlsaEnv``
    One asoundrc for the whole test process, loaded through ``ALSA_CONFIG_PATH``. alsa-lib
    reads that variable once per process, at first use, so every PCM any test needs is in
    this one file, and per-test data goes through fixed file paths that tests rewrite
    before they open the PCM. Unclocked PCMs (the ``file`` plugin over ``null``: every read
    and write completes at once) for exact end-to-end correctness:

    ``mic``     capture; reads raw S16_LE from ``AlsaEnv.mic_file`` (write it first, in the
                rate and channel count the PCM will be opened with; past its end the plugin
                returns stale buffer contents, not silence, so read no more than you wrote)
    ``spk``     playback; writes raw S16_LE to ``AlsaEnv.spk_file`` (truncated at each open)
    ``absent``  capture like ``mic`` from ``AlsaEnv.absent_file``: opening fails while that
                file does not exist, which makes a device that comes and goes
    ``brokenspk`` playback like ``spk`` into ``AlsaEnv.broken_spk_file``, whose directory
                does not exist: it opens, then writes fail with EIO (a device dying mid-stream)

    Clocked PCMs through the private PulseAudio of ``pulse_env`` (they fail to open unless
    that fixture is active):

    ``pmic``      capture from the ``micfeed`` null sink's monitor (``PulseEnv.feed``)
    ``pspk``      playback to the ``spk`` null sink (48 kHz stereo)
    ``spktap``    ``pspk`` with the ``file`` plugin stacked on it: real-time clock, and every
                  sample written lands in ``AlsaEnv.tap_file``. The plugin holds back the
                  last device-buffer's worth until drop/drain/close, so while a stream runs
                  the file shows what has left the ALSA buffer for PulseAudio
    ``flakymic``  capture from the ``flaky`` sink's monitor, and ``flakyspk`` playback to it:
                  ``PulseEnv.suspend("flaky")`` makes both stall like a failing device
    ``latespk``   playback to a sink ``late`` that does not exist (opening fails) until a
                  test adds it with ``PulseEnv.add_sink("late")``, like a speaker plugged in
    ``echomic``   capture from the ``spk`` sink's monitor: a microphone that hears exactly
                  what ``pspk``/``spktap`` play (an acoustic loop with no room)

    and one control device: ``pmixer``, the ``spk`` sink's volume as the simple mixer
    control ``Master`` (``alsaaudio.Mixer("Master", device="pmixer")``).

``pulse_env`` -> ``PulseEnv``
    A private PulseAudio (own runtime dir, null sinks, low-latency keeper streams so the
    sinks run in real time from the first test), started once and stopped by PID at the
    end; costs ~2.5 s once per session. Fails, never skips, when PulseAudio is not
    installed. Helpers: ``feed`` (play samples into the mic), ``record`` (what a sink
    rendered, from its monitor), ``suspend``, ``add_sink``/``remove_module``,
    ``add_loopback`` (an echo path from the speaker into the microphone; ``add_two_clocks``
    for one through two sound cards on their own clocks), ``pactl``,
    ``env()`` for subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

_DIR_MARK = "APPLIANCE_TEST_ALSA_DIR"  # set once per process: alsa-lib reads its config once
_SYSTEM_CONF = "/usr/share/alsa/alsa.conf"
_KEEPER_SETTLE_S = 2.2  # an idle null sink renders ~2 s ahead until a keeper has run that long
_PULSE_PLUGIN_GLOB = "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"
_INSTALL_HINT = (
    "apt-get install --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins"
)


def _asoundrc(root: Path) -> str:
    server = f"unix:{root / 'pulse' / 'native'}"

    def file_pcm(name: str, slave: str, out: Path | str, infile: Path | None = None) -> str:
        inline = f'\n    infile "{infile}"' if infile else ""
        return (
            f'pcm.{name} {{\n    type file\n    slave.pcm "{slave}"\n'
            f'    file "{out}"{inline}\n    format "raw"\n}}\n'
        )

    def pulse_pcm(name: str, device: str) -> str:
        return f'pcm.{name} {{ type pulse; server "{server}"; device "{device}" }}\n'

    return "".join(
        [
            "# Written by tests/alsa_env.py for one test session.\n",
            file_pcm("mic", "null", "/dev/null", root / "mic.raw"),
            file_pcm("absent", "null", "/dev/null", root / "absent.raw"),
            file_pcm("spk", "null", root / "spk.raw"),
            file_pcm("brokenspk", "null", root / "broken" / "spk.raw"),
            pulse_pcm("pmic", "micfeed.monitor"),
            pulse_pcm("pspk", "spk"),
            pulse_pcm("flakymic", "flaky.monitor"),
            pulse_pcm("flakyspk", "flaky"),
            pulse_pcm("latespk", "late"),
            pulse_pcm("echomic", "spk.monitor"),
            f'ctl.pmixer {{ type pulse; server "{server}"; device "spk" }}\n',
            file_pcm("spktap", "pspk", root / "tap.raw"),
        ]
    )


@dataclass(frozen=True)
class AlsaEnv:
    """The session's ALSA configuration and the files behind its PCMs."""

    root: Path
    """The session directory holding the asoundrc and the PCMs' files."""

    @property
    def asoundrc(self) -> Path:
        return self.root / "asoundrc"

    @property
    def config_path(self) -> str:
        """The value of ``ALSA_CONFIG_PATH`` for this session."""
        return f"{_SYSTEM_CONF}:{self.asoundrc}"

    @property
    def mic_file(self) -> Path:
        return self.root / "mic.raw"

    @property
    def spk_file(self) -> Path:
        return self.root / "spk.raw"

    @property
    def absent_file(self) -> Path:
        return self.root / "absent.raw"

    @property
    def broken_spk_file(self) -> Path:
        return self.root / "broken" / "spk.raw"

    @property
    def tap_file(self) -> Path:
        return self.root / "tap.raw"

    @property
    def pulse_dir(self) -> Path:
        return self.root / "pulse"

    @property
    def pulse_server(self) -> str:
        return f"unix:{self.pulse_dir / 'native'}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that should see these PCMs."""
        env = dict(os.environ if base is None else base)
        env["ALSA_CONFIG_PATH"] = self.config_path
        env["PULSE_SERVER"] = self.pulse_server
        return env

    def write_mic(self, samples: npt.NDArray[np.int16], path: Path | None = None) -> None:
        """Make ``samples`` (1-D mono, or frames x channels) what ``mic`` will capture."""
        np.ascontiguousarray(samples, dtype="<i2").tofile(path or self.mic_file)

    def read_spk(self, channels: int = 1, path: Path | None = None) -> npt.NDArray[np.int16]:
        """What ``spk`` (or ``path``) received: 1-D for mono, frames x channels otherwise."""
        path = path or self.spk_file
        data = np.fromfile(path, dtype="<i2") if path.exists() else np.zeros(0, np.int16)
        data = data.astype(np.int16)
        return data if channels == 1 else data.reshape(-1, channels)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def make_alsa_env(root: Path) -> AlsaEnv:
    """Write the asoundrc and the PCMs' files under ``root`` (the caller points
    ``ALSA_CONFIG_PATH`` at ``AlsaEnv.config_path``, or passes ``AlsaEnv.env()`` on)."""
    env = AlsaEnv(root)
    env.pulse_dir.mkdir(exist_ok=True)
    env.asoundrc.write_text(_asoundrc(root))
    env.mic_file.write_bytes(b"")  # so that ``mic`` opens before a test writes its input
    return env


@pytest.fixture(scope="session")
def alsa_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlsaEnv]:
    """The process's ALSA configuration; see the module docstring for the PCMs."""
    existing = os.environ.get(_DIR_MARK)
    if existing:
        # alsa-lib already read this process's config; a second one would be ignored.
        yield AlsaEnv(Path(existing))
        return
    env = make_alsa_env(tmp_path_factory.mktemp("alsa"))
    saved = {k: os.environ.get(k) for k in ("ALSA_CONFIG_PATH", "PULSE_SERVER", _DIR_MARK)}
    os.environ["ALSA_CONFIG_PATH"] = env.config_path
    # An explicit server keeps libpulse (ALSA's pulse hook) from autospawning a daemon.
    os.environ["PULSE_SERVER"] = env.pulse_server
    os.environ[_DIR_MARK] = str(env.root)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pulse_audio_config() -> dict[str, object]:
    """The daemon's ``[audio]`` section for this rig: captures ``pmic`` at 16 kHz, plays to
    ``pspk`` at 48 kHz stereo (what ``module-loopback`` echo rigs hear)."""
    return {
        "capture_device": "pmic",
        "capture_rate": 16000,
        "playback_device": "pspk",
        "playback_rate": 48000,
        "playback_channels": 2,
    }


@dataclass
class PulseEnv:
    """A running private PulseAudio with null sinks ``spk`` (48 kHz stereo), ``micfeed``
    (16 kHz mono) and ``flaky`` (16 kHz mono)."""

    alsa: AlsaEnv
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> str:
        return self.alsa.pulse_server

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        return self.alsa.env(base)

    def pactl(self, *args: str) -> str:
        done = subprocess.run(
            ["pactl", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def add_sink(self, name: str, rate: int = 48000, channels: int = 2) -> str:
        """Load a null sink; returns the module id for ``remove_module``."""
        args = [f"sink_name={name}", f"rate={rate}", f"channels={channels}"]
        return self.pactl("load-module", "module-null-sink", *args).strip()

    def remove_module(self, module_id: str) -> None:
        self.pactl("unload-module", module_id)

    def add_loopback(
        self,
        latency_ms: int,
        *,
        adjust: bool = True,
        source: str = "spk.monitor",
        sink: str = "micfeed",
    ) -> str:
        """An echo path: everything ``source`` delivers (by default what the speaker
        ``spk`` plays) is played into ``sink`` (the microphone ``pmic`` hears) after
        ``latency_ms``, at unity gain. ``adjust``: the loopback adapts its rate to hold that
        latency, as between two devices with their own clocks (PulseAudio's default);
        without it the rate stays fixed. Returns the module id for ``remove_module``."""
        args = [f"source={source}", f"sink={sink}", f"latency_msec={latency_ms}"]
        args += ["source_dont_move=true", "sink_dont_move=true"]
        if not adjust:
            args.append("adjust_time=0")
        return self.pactl("load-module", "module-loopback", *args).strip()

    def add_two_clocks(self, latency_ms: int, ppm: float) -> subprocess.Popen[bytes]:
        """An echo path like ``add_loopback``'s but through two sound cards on their own
        clocks, ``ppm`` millionths apart (``clock_relay.py``). Returns the relay's process:
        ``terminate()`` and ``wait()`` it."""
        relay = Path(__file__).with_name("clock_relay.py")
        cmd = [sys.executable, str(relay), str(ppm), str(max(10, latency_ms - 10))]
        return subprocess.Popen(cmd, env=self.env())

    def suspend(self, sink: str, suspended: bool) -> None:
        """Suspend a sink (its streams and its monitor's stall) or resume it."""
        self.pactl("suspend-sink", sink, "1" if suspended else "0")

    def feed(
        self,
        samples: npt.NDArray[np.int16],
        rate: int = 16000,
        sink: str = "micfeed",
        latency_ms: int = 20,
    ) -> subprocess.Popen[bytes]:
        """Play mono ``samples`` into ``sink`` in real time; ``pmic`` captures them.
        Returns at once with the pacat process (wait() for it to finish, or kill() it): a
        thread writes the samples, so a long feed never blocks the caller's event loop.
        A background stream (room noise) wants a larger ``latency_ms``: pacat then never
        underruns on a busy machine, and a gap of digital silence would sound like an event."""
        proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                "--raw",
                f"--device={sink}",
                f"--rate={rate}",
                "--channels=1",
                "--format=s16le",
                f"--latency-msec={latency_ms}",
            ],
            stdin=subprocess.PIPE,
            env=self.env(),
        )
        stdin = proc.stdin
        assert stdin is not None
        data = np.ascontiguousarray(samples, dtype="<i2").tobytes()

        def write() -> None:
            try:
                stdin.write(data)
            except BrokenPipeError:
                pass  # killed before the end
            finally:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()

        threading.Thread(target=write, name=f"feed:{sink}", daemon=True).start()
        return proc

    @contextlib.contextmanager
    def record(
        self, source: str = "spk.monitor", rate: int = 48000, channels: int = 2
    ) -> Iterator[Path]:
        """Record what a source (by default: what the ``spk`` sink rendered) delivers, while
        the block runs, into a raw file whose path is yielded (complete after the block)."""
        out = self.alsa.root / f"record-{time.monotonic_ns()}.raw"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    "parec",
                    "--raw",
                    f"--device={source}",
                    f"--rate={rate}",
                    f"--channels={channels}",
                    "--format=s16le",
                    "--latency-msec=10",
                ],
                stdout=sink,
                env=self.env(),
            )
            try:
                time.sleep(0.3)  # the recording stream's own start-up
                yield out
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _start(cmd: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=dict(env), stdout=out, stderr=out)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def pulse_running(alsa: AlsaEnv) -> Iterator[PulseEnv]:
    """Start the private PulseAudio and its keepers for ``alsa``'s PCMs, settled; stop them
    by PID after the block. ``RuntimeError`` (with the install hint) when it cannot start.
    The ``pulse_env`` fixture and the benchmarks (``bench.audio``) share it."""
    missing = [tool for tool in ("pulseaudio", "pactl", "pacat", "parec") if not shutil.which(tool)]
    if missing or not list(Path("/").glob(_PULSE_PLUGIN_GLOB.lstrip("/"))):
        raise RuntimeError(
            f"PulseAudio test devices need {', '.join(missing) or 'the ALSA pulse plugin'}: "
            f"{_INSTALL_HINT}"
        )
    rundir = alsa.pulse_dir
    rundir.mkdir(exist_ok=True)
    socket = rundir / "native"
    (rundir / "default.pa").write_text(
        f"""\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=spk rate=48000 channels=2
load-module module-null-sink sink_name=micfeed rate=16000 channels=1
load-module module-null-sink sink_name=flaky rate=16000 channels=1
set-default-sink spk
set-default-source micfeed.monitor
"""
    )
    env = dict(os.environ)
    env.update(HOME=str(rundir), XDG_RUNTIME_DIR=str(rundir), PULSE_SERVER=f"unix:{socket}")
    log = rundir / "pulse.log"
    pulse = PulseEnv(alsa)
    pulse.procs.append(
        _start(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(rundir / "default.pa"),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
            ],
            env,
            log,
        )
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if pulse.procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pulseaudio did not start: {log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.02)
        for sink in ("spk", "micfeed", "flaky"):
            # Keepers: a low-latency stream on each sink for the whole session, so that it
            # renders in real time instead of ~2 s ahead when a test stream starts.
            pulse.procs.append(
                _start(
                    [
                        "pacat",
                        "--playback",
                        "--raw",
                        f"--device={sink}",
                        "--rate=16000",
                        "--channels=1",
                        "--latency-msec=40",
                        "/dev/zero",
                    ],
                    env,
                    log,
                )
            )
        time.sleep(_KEEPER_SETTLE_S)
        yield pulse
    finally:
        _stop(pulse.procs)


@pytest.fixture(scope="session")
def pulse_env(alsa_env: AlsaEnv) -> Iterator[PulseEnv]:
    """A private PulseAudio behind the clocked PCMs, settled and ready for timing tests."""
    try:
        running = pulse_running(alsa_env)
        pulse = running.__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield pulse
    finally:
        running.__exit__(None, None, None)
