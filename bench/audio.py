"""The audio engine through the real daemon and simulator, on clocked devices.

``.venv/bin/python -m bench.audio [--quick]``. Needs the PulseAudio test packages (``make
bench`` installs them). A private PulseAudio (``tests/alsa_env.py``) gives real-time ALSA
devices: the daemon captures ``pmic`` (what this process plays into the ``micfeed`` sink:
room noise at -40 dBFS all the time, the shipped speech recording over it at 20 dB SNR) and
plays to ``spktap`` (48 kHz stereo). The loopback simulator runs in this process and echoes
each turn back as the reply. The daemon runs in a child process; both stamp events with
CLOCK_MONOTONIC, which processes on one machine share.

Figures:

- capture-to-wire: for every sample sent live (not pre-roll, which is old by design), from
  its capture (the read of its capture period, less its age in that period) to its append
  frame arriving at the simulator's socket;
- end of turn: for each committed turn, from the capture of its last live sample to the
  commit arriving at the simulator (the flush at the turn's end, whatever the chunk length);
- delta-to-device: the first audio delta of each reply, from the daemon receiving it to the
  first ``write()`` to the playback PCM returning;
- barge-in, local VAD: the start of the capture period holding the onset (the first period
  5 dB over the room noise) to ``drop()`` on the playback PCM; server: ``speech_started``
  received to ``drop()`` (``[gate] mode = "always"``, the simulator's server VAD);
- CPU per audio second of the plain ``appliance run`` process, idle in the room noise
  (nothing sent) and streaming (continuous speech, chunks going out: ``vad`` mode, so 100 ms
  with ``chunk_ms = "auto"``; the report gives their measured length), in % of one
  core, with a per-thread breakdown (CPU from /proc/PID/task/*/schedstat, wake-ups =
  context switches from status). Twice: with no PulseAudio in the process (ALSA's ``file``
  plugin, unclocked, so the capture thread paces its reads to real time, sleeping on a
  timer between blocks as on a ``hw:`` device: the daemon's own work, the figure for the
  targets), and on the PulseAudio rig, leaving out libpulse's "threaded-ml" client thread
  (a Pi on ``hw:`` devices has none) and, with ``perf``, the pulse plugin's code in the
  daemon's threads;
- this machine's floors: bare read loops on the PulseAudio PCM, a bare wake-up, and the
  streaming path's least work per chunk in a thread that wakes per chunk (on this VM a
  wake-up leaves the caches cold: the same work costs several times what it does back to
  back);
- peak RSS (VmHWM) of the daemon processes.

The latency runs use ``bench.audio_child`` (the same daemon, timed at its edges); CPU and
memory are measured on ``appliance run`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.audio.frontend import LISTEN_BATCH_MS
from appliance.core.endpoint import EndpointSettings
from appliance.demo import DEMO_KEY, speech_recording
from realtime_sim.server import RealtimeSimulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from alsa_env import AlsaEnv, PulseEnv, make_alsa_env, pulse_running

RATE = 16000
NOISE_DB = -40.0  # room noise; the recording's speech is at about -20 dBFS: 20 dB SNR
ONSET_OVER_NOISE_DB = 5.0


def speech() -> np.ndarray:
    pcm, rate = speech_recording()
    assert rate == RATE
    return np.frombuffer(pcm, dtype=np.int16)


def speech_span() -> tuple[int, int]:
    """Sample range of the recording's speech (10 ms blocks above -40 dBFS)."""
    x = speech().astype(np.float64)
    block = RATE // 100
    rms = np.sqrt(np.mean(x[: len(x) // block * block].reshape(-1, block) ** 2, axis=1))
    loud = np.flatnonzero(rms > 32768 * 10 ** (-40 / 20))
    return int(loud[0]) * block, int(loud[-1] + 1) * block


def room_noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = 32768 * 10 ** (NOISE_DB / 20)
    return (rng.standard_normal(int(RATE * seconds)) * level).astype(np.int16)


class TimedList(list[dict[str, Any]]):
    """``RealtimeSimulator.received`` that also notes when each event arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def extend(self, events: Any) -> None:
        events = list(events)
        self.times.extend([time.monotonic()] * len(events))
        super().extend(events)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


AUDIO_EXTRA = ""  # --audio 'key = value' lines for trying other [audio] settings
GATE_EXTRA = ""  # --gate lines, the same for [gate]
ECHO_CANCELLATION = "false"  # --aec: with the echo canceller on (no echo in this rig)


def config_text(url: str, gate: str, session: str = "") -> str:
    return f"""
[realtime]
url = "{url}"
{session}
[audio]
{AUDIO_EXTRA}
capture_device = "pmic"
capture_rate = 16000
playback_device = "spktap"
playback_rate = 48000
playback_channels = 2
[audio.processing]
echo_cancellation = {ECHO_CANCELLATION}
[gate]
{gate}
{GATE_EXTRA}
[gpio]
enabled = false
[earcons]
enabled = false
[logging]
level = "warning"
"""


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    out: Path | None

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)
        if self.out is None:
            return {}
        return dict(json.loads(self.out.read_text()))


def start_daemon(alsa: AlsaEnv, config: Path, log: Path, timed: Path | None) -> Child:
    env = alsa.env()
    env.update(INWORLD_API_KEY=DEMO_KEY, PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_"))]:
        del env[k]
    cmd = (
        [sys.executable, "-m", "bench.audio_child", str(config), str(timed)]
        if timed is not None
        else [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)]
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=Path(__file__).parents[1])
    return Child(proc, timed)


async def until(what: str, ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: no {what} within {timeout} s")
        await asyncio.sleep(0.01)


def types(received: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("type")) for e in received]


# --- latency -----------------------------------------------------------------------------------


async def latency_vad(alsa: AlsaEnv, pulse: PulseEnv, work: Path, turns: int) -> dict[str, Any]:
    """Turns in vad mode, each new utterance barging in on the previous reply."""
    sim = RealtimeSimulator(api_key=DEMO_KEY, profile="fast")
    received = TimedList()
    sim.received = received
    async with sim:
        cfg = work / "vad.toml"
        cfg.write_text(config_text(sim.url, 'mode = "vad"'))
        noise = pulse.feed(room_noise(15 + turns * 6), latency_ms=250)
        child = start_daemon(alsa, cfg, work / "vad.log", work / "vad.json")
        feeds: list[float] = []
        try:
            await until("session.update", lambda: "session.update" in types(received), 20)
            await asyncio.sleep(1.5)
            for _ in range(turns):
                created = types(received).count("response.create")
                feeds.append(time.monotonic())
                pulse.feed(speech())
                await until("turn", lambda c=created: types(received).count("response.create") > c, 15)
                await asyncio.sleep(1.2)  # the reply is playing when the next utterance starts
            await asyncio.sleep(3.0)
        finally:
            timed = child.stop()
            noise.kill()
            noise.wait()
    return {"timed": timed, "received": list(received), "arrivals": received.times, "feeds": feeds}


async def latency_server(alsa: AlsaEnv, pulse: PulseEnv, work: Path, turns: int) -> dict[str, Any]:
    """Always mode: the simulator's server VAD opens and ends turns; each utterance talks
    over the previous reply, so the server's speech_started must stop the speaker."""
    sim = RealtimeSimulator(api_key=DEMO_KEY, profile="fast")
    async with sim:
        cfg = work / "server.toml"
        session = (
            "[session.audio.input.turn_detection]\n"
            'type = "server_vad"\nthreshold = 0.75\nsilence_duration_ms = 500\n'
        )
        cfg.write_text(config_text(sim.url, 'mode = "always"\nbarge_in = "server"', session))
        noise = pulse.feed(room_noise(15 + turns * 5), latency_ms=250)
        child = start_daemon(alsa, cfg, work / "server.log", work / "server.json")
        try:
            await until("session.update", lambda: "session.update" in types(sim.received), 20)
            await asyncio.sleep(1.5)
            for _ in range(turns):
                pulse.feed(speech())
                await asyncio.sleep(4.5)  # the reply starts ~3.4 s in and lasts ~3 s
            await asyncio.sleep(3.0)
        finally:
            timed = child.stop()
            noise.kill()
            noise.wait()
    return {"timed": timed}


def capture_to_wire(run: dict[str, Any]) -> list[float]:
    """Per live sample, ms from its period's read to its append's arrival."""
    chunks = run["timed"]["chunks"]
    appends = [t for e, t in zip(run["received"], run["arrivals"], strict=True)
               if e.get("type") == "input_audio_buffer.append"]
    if len(appends) != len(chunks):
        raise RuntimeError(f"bench: {len(chunks)} chunks made but {len(appends)} appends arrived")
    lat: list[np.ndarray] = []
    for arrived, live in zip(appends, chunks, strict=True):
        for read_at, length, first, end in live:
            captured = read_at - (length - np.arange(first, end)) / 24000
            lat.append((arrived - captured) * 1000)
    return np.concatenate(lat).tolist() if lat else []


def end_to_commit(run: dict[str, Any]) -> list[float]:
    """Per committed turn, ms from the capture of its last live sample to its commit's arrival
    (what the user waits for before the reply can start: the turn's last, partial chunk and
    the commit must leave when the turn ends, whatever the chunk length)."""
    chunks = iter(run["timed"]["chunks"])
    last = None
    out = []
    for e, arrived in zip(run["received"], run["arrivals"], strict=True):
        if e.get("type") == "input_audio_buffer.append":
            for read_at, length, _, end in next(chunks, []):
                last = read_at - (length - end + 1) / 24000
        elif e.get("type") == "input_audio_buffer.commit" and last is not None:
            out.append((arrived - last) * 1000)
            last = None
    return out


def delta_to_device(timed: dict[str, Any]) -> list[float]:
    """First delta of each reply to the first write() after it."""
    writes = [t for t, _ in timed["writes"]]
    firsts: dict[str, float] = {}
    for t, item in timed["deltas"]:
        firsts.setdefault(item, t)
    out = []
    for t in firsts.values():
        after = [w for w in writes if w >= t]
        if after:
            out.append((after[0] - t) * 1000)
    return out


def local_barge_in(run: dict[str, Any]) -> list[float]:
    """Onset period read to drop(), for each utterance that stopped a reply."""
    timed = run["timed"]
    periods = timed["periods"]
    drops = timed["drops"]
    out = []
    lead_s = speech_span()[0] / RATE
    for fed in run["feeds"]:
        # The onset is somewhere in the first loud period: count from that period's start.
        onset = next(
            (
                t - n / RATE
                for t, n, db in periods
                if t > fed + lead_s * 0.5 and db > NOISE_DB + ONSET_OVER_NOISE_DB
            ),
            None,
        )
        if onset is None:
            continue
        after = [d for d in drops if onset <= d < onset + 2.0]
        if after:
            out.append((after[0] - onset) * 1000)
    return out


def server_barge_in(timed: dict[str, Any]) -> list[float]:
    """``speech_started`` to the next drop(), for each one that came while a reply played
    (a write() in the 100 ms before it): one in silence has nothing to stop."""
    out = []
    writes = [t for t, _ in timed["writes"]]
    for started in timed["speech_started"]:
        if not any(started - 0.1 <= w <= started for w in writes):
            continue
        after = [d for d in timed["drops"] if started <= d < started + 1.0]
        if after:
            out.append((after[0] - started) * 1000)
    return out


# --- CPU and memory ------------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread (by "tid comm"), from /proc/PID/task/*/schedstat (ns; the
    tick-based utime + stime in stat count in 10 ms steps, too coarse for 0.1 %)."""
    return {key: cpu for key, (cpu, _) in thread_stats(pid).items()}


def thread_stats(pid: int) -> dict[str, tuple[float, int]]:
    """Per thread (by "tid comm"): CPU seconds and context switches (its wake-ups)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            cpu_ns = int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
        name = "event loop" if task.name == str(pid) else comm
        out[f"{task.name} {name}"] = (cpu_ns / 1e9, switches)
    return out


PULSE_DSOS = ("libpulse", "pcm_pulse", "libpulsecommon")


async def pulse_shares(pid: int, seconds: float, work: Path) -> dict[str, float] | None:
    """Per thread name, the share of its CPU spent in PulseAudio's client code (the ALSA
    pulse plugin and libpulse, which a Pi on ``hw:`` devices does not run): CPU samples
    (``perf record`` with DWARF call graphs) with a PulseAudio library anywhere in their
    stack, over all of the thread's samples. None when perf is not installed (Debian:
    ``linux-perf``)."""
    if shutil.which("perf") is None:
        return None
    data = work / "perf.data"
    rec = await asyncio.create_subprocess_exec(
        "perf", "record", "-q", "-F", "4000", "--call-graph", "dwarf,16384", "-p", str(pid),
        "-o", str(data), "--", "sleep", str(seconds),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await rec.wait()
    script = await asyncio.create_subprocess_exec(
        "perf", "script", "-i", str(data), "-F", "comm,tid,ip,dso",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    out, _ = await script.communicate()
    total: dict[str, int] = {}
    pulse: dict[str, int] = {}
    name, hit = "", False
    for line in out.decode(errors="replace").splitlines() + [""]:
        if line[:1].strip():  # a sample's header, "comm tid"; its stack follows, indented
            comm, tid = line.rsplit(None, 1)
            name, hit = ("event loop" if tid == str(pid) else comm.strip()), False
        elif line.strip():
            hit = hit or any(d in line for d in PULSE_DSOS)
        elif name:
            total[name] = total.get(name, 0) + 1
            pulse[name] = pulse.get(name, 0) + hit
            name = ""
    return {k: pulse[k] / n for k, n in total.items() if n}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


BARE_READER = """
import select, sys, time, alsaaudio
pcm = alsaaudio.PCM(type=alsaaudio.PCM_CAPTURE, mode=alsaaudio.PCM_NONBLOCK, device="pmic",
                    rate=16000, channels=1, format=alsaaudio.PCM_FORMAT_S16_LE,
                    periodsize=160, periods=4)
poller = select.poll()
for fd, ev in pcm.polldescriptors():
    poller.register(fd, ev)
end = time.monotonic() + float(sys.argv[1])
timer_ms = int(sys.argv[2])
while time.monotonic() < end:
    if timer_ms:
        while pcm.read()[0] > 0:
            pass
        time.sleep(timer_ms / 1000)
    else:
        n, _ = pcm.read()
        poller.poll(500)
"""


async def bare_reader_cpu(alsa: AlsaEnv, seconds: float, timer_ms: int = 0) -> float:
    """% of one core for a bare read loop on the same PCM, nothing done with the audio:
    poll + read per 10 ms period (``timer_ms`` 0), or every ``timer_ms`` read all periods
    that are ready (the daemon's pattern while listening): what reading through the
    PulseAudio plugin costs by itself."""
    env = alsa.env()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_READER, str(seconds + 2), str(timer_ms)], env=env
    )
    try:
        await asyncio.sleep(1.0)
        before, t0 = thread_cpu(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        after, t1 = thread_cpu(proc.pid), time.monotonic()
    finally:
        proc.wait(10)
    own = sum(v - before.get(k, 0.0) for k, v in after.items() if not k.endswith(" threaded-ml"))
    return own / (t1 - t0) * 100


def bare_wakeup_us(period_ms: int, seconds: float = 8.0) -> float:
    """CPU per wake-up of a Python thread that does nothing but sleep in ``poll()`` for
    ``period_ms`` at a time: this machine's floor for any wake-up of Python code (timer,
    context switch, the interpreter picking up again)."""
    out: list[tuple[float, int]] = []

    def run() -> None:
        poller = select.poll()  # nothing registered: each call sleeps its whole timeout
        t0, n, end = time.thread_time(), 0, time.monotonic() + seconds
        while time.monotonic() < end:
            poller.poll(period_ms)
            n += 1
        out.append((time.thread_time() - t0, n))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    cpu, n = out[0]
    return cpu / n * 1e6


@dataclass
class CpuFigure:
    own_s: float
    pulse_client_s: float
    audio_s: float
    sent_ms: float
    chunks: int
    # Per thread name: (CPU seconds, context switches) in the window.
    threads: dict[str, tuple[float, int]]
    # Per thread name: the share of its CPU in PulseAudio's client code (None: no perf).
    pulse_share: dict[str, float] | None = None

    @property
    def percent(self) -> float:
        return self.own_s / self.audio_s * 100

    @property
    def without_pulse(self) -> float | None:
        """% of one core, the daemon's threads less their time in PulseAudio's code."""
        if self.pulse_share is None:
            return None
        own = sum(
            cpu * (1 - self.pulse_share.get(name, 0.0))
            for name, (cpu, _) in self.threads.items()
            if name != "threaded-ml"
        )
        return own / self.audio_s * 100


async def cpu_window(
    pid: int, sim: RealtimeSimulator, seconds: float, work: Path, perf: bool
) -> CpuFigure:
    """CPU of the daemon ``pid`` over the next ``seconds``, per thread; with ``perf``, then
    (in a window of its own: perf's sampling costs the threads a little) the share of each
    thread's CPU that is PulseAudio's client code."""
    before, n0, t0 = thread_stats(pid), len(sim.received), time.monotonic()
    await asyncio.sleep(seconds)
    after, t1 = thread_stats(pid), time.monotonic()
    own = pulse_client = 0.0
    threads: dict[str, tuple[float, int]] = {}
    for key, (cpu, switches) in after.items():
        cpu0, switches0 = before.get(key, (0.0, 0))
        delta = cpu - cpu0
        name = key.split(" ", 1)[1]
        had = threads.get(name, (0.0, 0))
        threads[name] = (had[0] + delta, had[1] + switches - switches0)
        if key.endswith(" threaded-ml"):
            pulse_client += delta
        else:
            own += delta
    appends = [e for e in sim.received[n0:] if e.get("type") == "input_audio_buffer.append"]
    sent = sum(len(base64.b64decode(e["audio"])) / 48 for e in appends)
    fig = CpuFigure(own, pulse_client, t1 - t0, sent, len(appends), threads)
    if perf:
        fig.pulse_share = await pulse_shares(pid, min(seconds, 20.0), work)
    return fig


def continuous_speech(seconds: float) -> np.ndarray:
    """The recording's speech span over and over, so the gate stays open and chunks
    stream the whole time."""
    start, end = speech_span()
    return np.tile(speech()[start:end], int(seconds * RATE / (end - start)) + 2)


async def cpu_and_memory(
    alsa: AlsaEnv, pulse: PulseEnv, work: Path, seconds: float
) -> tuple[CpuFigure, CpuFigure, float]:
    """On the PulseAudio rig: idle in room noise, then streaming continuous speech."""
    async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
        cfg = work / "cpu.toml"
        cfg.write_text(config_text(sim.url, 'mode = "vad"'))
        noise = pulse.feed(room_noise(4 * seconds + 30), latency_ms=250)
        child = start_daemon(alsa, cfg, work / "cpu.log", None)
        pid = child.proc.pid
        try:
            await until("session.update", lambda: "session.update" in types(sim.received), 20)
            await asyncio.sleep(3.0)  # start-up, imports and the first connection are done
            idle = await cpu_window(pid, sim, seconds, work, perf=True)
            feeder = pulse.feed(continuous_speech(2 * seconds + 10))
            await asyncio.sleep(1.0)
            talk_s = streaming_s(seconds, 1 if shutil.which("perf") is None else 2)
            streaming = await cpu_window(pid, sim, talk_s, work, perf=True)
            feeder.kill()
            feeder.wait()
            rss = peak_rss_mb(pid)
        finally:
            child.stop()
            noise.kill()
            noise.wait()
    return idle, streaming, rss


FILE_LEAD_S = 12.0  # room noise alone before the window, for start-up and connection
# The micro detector stops a turn after max_turn_ms whatever the audio; the reply that follows
# then plays and the echo guard takes over. A streaming window (and the profile or perf window
# after it) must end before that, 1 s after the turn began, with a second to spare.
TURN_S = EndpointSettings().max_turn_ms / 1000 - 2.0


def streaming_s(seconds: float, windows: int) -> float:
    """The streaming window: ``seconds``, or less so ``windows`` of it fit in one turn."""
    return min(seconds, TURN_S / windows)


PY_SPY: Path | None = None  # --py-spy DIR: a py-spy profile of each file-device window there


async def profiled_window(
    pid: int, sim: RealtimeSimulator, seconds: float, work: Path, name: str
) -> CpuFigure:
    """``cpu_window``; with ``--py-spy``, py-spy samples the daemon in a window of its own
    after it (its sampling costs the daemon CPU): where the daemon's CPU goes, by function
    (``--format raw``: collapsed stacks, one line per stack with its sample count)."""
    fig = await cpu_window(pid, sim, seconds, work, perf=False)
    if PY_SPY is not None:
        rec = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", "1000", "--threads", "--native", "--format", "raw",
            "--output", str(PY_SPY / f"{name}.txt"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await rec.wait()
    return fig


async def cpu_on_file_device(
    alsa: AlsaEnv, work: Path, seconds: float
) -> tuple[CpuFigure, CpuFigure, float]:
    """The same two windows with no PulseAudio in the process: the daemon captures ALSA's
    ``file`` plugin (room noise, then continuous speech over it at 20 dB SNR), which has no
    clock, so the capture thread paces its reads to real time, sleeping on a timer between
    blocks as it does on a ``hw:`` device; it plays to the ``file`` plugin too. What is
    left is the daemon's own work: Python, numpy, webrtcvad, soxr, websockets and alsa-lib."""
    windows = 1 if PY_SPY is None else 2  # py-spy samples a window of its own after each
    quiet = room_noise(FILE_LEAD_S + seconds * windows)
    talk = continuous_speech(seconds * windows + 15)
    talk = np.clip(talk.astype(np.int32) + room_noise(len(talk) / RATE, seed=1), -32768, 32767)
    alsa.write_mic(np.concatenate([quiet, talk.astype(np.int16)]))
    async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
        cfg = work / "cpu_file.toml"
        text = config_text(sim.url, 'mode = "vad"')
        cfg.write_text(text.replace('"pmic"', '"mic"').replace('"spktap"', '"spk"'))
        child = start_daemon(alsa, cfg, work / "cpu_file.log", None)
        pid = child.proc.pid
        try:
            await until("session.update", lambda: "session.update" in types(sim.received), 20)
            await asyncio.sleep(3.0)
            idle = await profiled_window(pid, sim, seconds, work, "idle")
            await until(
                "speech", lambda: "input_audio_buffer.append" in types(sim.received), FILE_LEAD_S
            )
            await asyncio.sleep(1.0)
            talk_s = streaming_s(seconds, windows)
            streaming = await profiled_window(pid, sim, talk_s, work, "streaming")
            rss = peak_rss_mb(pid)
        finally:
            child.stop()
    return idle, streaming, rss


async def chunk_floor(
    notify: bool, period_ms: int = 40, seconds: float = 8.0
) -> tuple[float, float]:
    """This machine's floor for the streaming path: the least work per upstream chunk
    (soxr 16 -> 24 kHz of 40 ms, one webrtcvad frame, base64 and JSON of the append) in a
    thread that sleeps in ``poll()`` between chunks, as the capture thread does; with
    ``notify``, each chunk is also handed to an asyncio loop (``call_soon_threadsafe``,
    nothing done there), as the daemon does. Returns (% of one core, both threads; % for
    the same work back to back, hot): a wake-up leaves the caches cold on this VM."""
    import soxr
    import webrtcvad

    x = room_noise(period_ms / 1000 * 200, seed=2) * 10  # speech-loud, within int16
    block = len(x) // 200
    vad = webrtcvad.Vad(2)
    stream = soxr.ResampleStream(RATE, 24000, 1, dtype="int16", quality="QQ")
    count = [0]

    def chunk() -> str:
        pcm = x[(count[0] % 200) * block : (count[0] % 200 + 1) * block]
        count[0] += 1
        vad.is_speech(pcm[: RATE * 30 // 1000].tobytes(), RATE)
        audio = base64.b64encode(stream.resample_chunk(pcm).tobytes()).decode()
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

    loop = asyncio.get_running_loop()
    cpu: list[float] = []

    def thread() -> None:
        poller = select.poll()  # nothing registered: each call sleeps its whole timeout
        t0, end = time.thread_time(), time.monotonic() + seconds
        while time.monotonic() < end:
            poller.poll(period_ms)
            text = chunk()
            if notify:
                loop.call_soon_threadsafe(len, text)
        cpu.append(time.thread_time() - t0)

    t0 = time.thread_time()  # this thread runs the loop: its CPU is the loop's
    await asyncio.to_thread(thread)
    cold = (time.thread_time() - t0 + cpu[0]) / seconds * 100
    t0, n = time.thread_time(), 2000
    for _ in range(n):
        chunk()
    hot = (time.thread_time() - t0) / n / (period_ms / 1000) * 100
    return cold, hot


# --- report ---------------------------------------------------------------------------------------

# Assumed, not measured on a Pi (there is none here): per core, a Pi 4 (Cortex-A72, 1.5 GHz)
# runs pure Python 4-6x slower than this VM (n-body: 2.6-2.8 s for 500k steps here, a
# published Pi 4 run 158 s for 5M), a Pi Zero 2 W (A53, 1 GHz, in order) 2.5-3x slower again.
PI_FACTORS = {"Pi 4 (A72)": (4.0, 6.0), "Pi Zero 2 W (A53)": (10.0, 18.0)}
TARGETS = {"idle": 0.2, "streaming": 0.5, "rss": 50.0}


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def print_cpu(idle: CpuFigure, streaming: CpuFigure, rss: float) -> None:
    """The daemon's own CPU (file device: no PulseAudio in it) and peak RSS beside the
    targets, per thread, per chunk, and the Pi estimate."""
    print(f"{'whole daemon, file device (no PulseAudio)':<46} {'measured':>10}  target")
    for label, fig, target in (
        ("CPU idle listening (room noise, nothing sent)", idle, TARGETS["idle"]),
        ("CPU streaming (continuous speech)", streaming, TARGETS["streaming"]),
    ):
        print(
            f"{label:<46} {fig.percent:8.3f} %  <= {target} % of one core:"
            f" {verdict(fig.percent, target)}"
        )
    print(f"{'peak RSS (VmHWM)':<46} {rss:7.1f} MB  <= {TARGETS['rss']:.0f} MB: {verdict(rss, TARGETS['rss'])}")
    print_threads(idle, streaming)
    if streaming.chunks:
        per_chunk = streaming.own_s / streaming.chunks * 1000
        print(
            f"  streaming: {streaming.chunks} chunks of {streaming.sent_ms / streaming.chunks:.0f} ms"
            f" on average, {per_chunk:.2f} ms of CPU per chunk (whole process)"
        )
    print(
        "  Pi estimate (this VM's figure x an assumed per-core factor for pure Python, from"
        " n-body: here 2.6-2.8 s / 500k steps, a published Pi 4 run 158 s / 5M; A53 2.5-3x the A72):"
    )
    for name, (lo, hi) in PI_FACTORS.items():
        chunk = ""
        if streaming.chunks:
            ms = streaming.own_s / streaming.chunks * 1000
            chunk = f", {ms * lo:.1f}-{ms * hi:.1f} ms per chunk"
        print(
            f"    {name}, x{lo:g}-{hi:g}: idle {idle.percent * lo:.1f}-{idle.percent * hi:.1f} %,"
            f" streaming {streaming.percent * lo:.1f}-{streaming.percent * hi:.1f} % of a core{chunk}"
        )



def print_threads(idle: CpuFigure, streaming: CpuFigure) -> None:
    """Per thread: CPU and wake-ups (context switches) a second, idle and streaming."""
    for label, fig in (("idle", idle), ("streaming", streaming)):
        parts = ", ".join(
            f"{name} {cpu / fig.audio_s * 100:.3f} % {switches / fig.audio_s:.0f}/s"
            for name, (cpu, switches) in sorted(fig.threads.items(), key=lambda kv: -kv[1][0])
            if cpu > 0 or switches > 0
        )
        print(f"  per thread, {label}: {parts}")


async def run_all(alsa: AlsaEnv, pulse: PulseEnv, work: Path, quick: bool) -> None:
    turns = 5 if quick else 12
    seconds = 15.0 if quick else 40.0
    vad = await latency_vad(alsa, pulse, work, turns)
    server = await latency_server(alsa, pulse, work, turns)
    idle, streaming, rss = await cpu_and_memory(alsa, pulse, work, seconds)
    own_idle, own_streaming, own_rss = await cpu_on_file_device(alsa, work, seconds)
    floor = await bare_reader_cpu(alsa, seconds)
    floor_timed = await bare_reader_cpu(alsa, seconds, timer_ms=LISTEN_BATCH_MS)
    wakeup = bare_wakeup_us(40)
    chunk_alone, chunk_hot = await chunk_floor(notify=False)
    chunk_handed, _ = await chunk_floor(notify=True)

    wire = capture_to_wire(vad)
    commit = end_to_commit(vad)
    device = delta_to_device(vad["timed"])
    local = local_barge_in(vad)
    remote = server_barge_in(server["timed"])
    print(f"audio engine through the daemon, clocked PulseAudio devices, {turns} turns per run")
    print(
        "(default config: 10 ms periods, chunk_ms auto, vad 2, 30 ms frames, echo guard 3 / 120 ms;"
        f" echo cancellation {'on' if ECHO_CANCELLATION == 'true' else 'off'}{'; ' + AUDIO_EXTRA.replace(chr(10), ', ') if AUDIO_EXTRA else ''}{'; ' + GATE_EXTRA.replace(chr(10), ', ') if GATE_EXTRA else ''})"
    )
    print(f"{'what':<46} {'p50':>8} {'p95':>8} {'n':>7}  target")
    rows = [
        ("capture-to-wire (live samples)", wire, "p95 <= 50 ms"),
        ("a turn's last sample -> its commit arrived", commit, "no more than capture-to-wire"),
        ("delta-to-device (first delta of a reply)", device, "p95 <= 5 ms"),
        ("barge-in, local VAD: onset -> drop()", local, "p95 <= 150 ms"),
        ("barge-in, server speech_started -> drop()", remote, "p95 <= 10 ms"),
    ]
    for label, values, target in rows:
        print(f"{label:<46} {pct(values, 50):6.1f}ms {pct(values, 95):6.1f}ms {len(values):7d}  {target}")
    print(
        f"CPU per audio second, % of one core {'idle':>37} {'streaming':>10}  (idle: room noise,"
        " nothing sent; streaming: continuous speech)"
    )
    mean = [f.sent_ms / f.chunks if f.chunks else 0.0 for f in (own_streaming, streaming)]
    print(f"  streaming sent chunks of {mean[0]:.0f} ms (file device) / {mean[1]:.0f} ms (PulseAudio rig) on average")
    print(
        f"{'the daemon, no PulseAudio in it (ALSA file plugin)':<72} {own_idle.percent:6.3f} %"
        f" {own_streaming.percent:8.3f} %  (the figures for the targets: below)"
    )
    print(
        f"{'the daemon on the PulseAudio rig, less libpulse client thread':<72} {idle.percent:6.3f} %"
        f" {streaming.percent:8.3f} %  (that thread: {idle.pulse_client_s / idle.audio_s * 100:.3f}"
        f" / {streaming.pulse_client_s / streaming.audio_s * 100:.3f} %)"
    )
    print_threads(idle, streaming)
    if idle.without_pulse is None or streaming.without_pulse is None:
        print("  (perf is not installed: PulseAudio's code in the daemon's threads not separated)")
    else:
        shares = ", ".join(
            f"{name} {(idle.pulse_share or {}).get(name, 0) * 100:.0f} / {share * 100:.0f} %"
            for name, share in sorted((streaming.pulse_share or {}).items())
            if name != "threaded-ml" and streaming.threads.get(name, (0.0, 0))[0] > 0
        )
        print(
            f"{'  ... and less PulseAudio code in its threads (perf)':<72}"
            f" {idle.without_pulse:6.3f} % {streaming.without_pulse:8.3f} %  ({shares})"
        )
    print("floors on this machine:")
    print(
        f"  a bare poll + read loop on the PulseAudio PCM, per period         {floor:6.3f} %"
        "  (the pulse plugin's cost in the reading thread; hw: devices do not have it)"
    )
    print(
        f"  the same, reading what is ready every {LISTEN_BATCH_MS} ms                  "
        f" {floor_timed:6.3f} %  (the daemon's listening pattern)"
    )
    print(
        f"  a Python thread that only sleeps in poll(), per 40 ms wake-up:    {wakeup:.0f} us"
        f"  ({wakeup * 25 / 1e4:.3f} % at 25 a second)"
    )
    print(
        f"  the streaming path's least work per 40 ms chunk (soxr, a VAD frame, base64 + JSON)"
        f" in a thread waking per chunk: {chunk_alone:.3f} % (back to back, hot: {chunk_hot:.3f} %);"
        f" each chunk also handed to an asyncio loop: {chunk_handed:.3f} %"
    )
    print(f"peak RSS of the daemon on the PulseAudio rig (libpulse in it): {rss:6.1f} MB")
    print_cpu(own_idle, own_streaming, own_rss)


async def cpu_only(alsa: AlsaEnv, work: Path, seconds: float) -> None:
    """``--cpu-only``: the file-device windows and peak RSS, beside their targets."""
    idle, streaming, rss = await cpu_on_file_device(alsa, work, seconds)
    extra = "; ".join(line for line in (AUDIO_EXTRA + "\n" + GATE_EXTRA).splitlines() if line)
    print(
        f"echo cancellation {'on' if ECHO_CANCELLATION == 'true' else 'off'}, {seconds:.0f} s windows"
        f" (streaming {streaming.audio_s:.0f} s: within one turn)"
        + (f"; {extra}" if extra else "")
    )
    print_cpu(idle, streaming, rss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.audio", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns, 15 s CPU windows")
    parser.add_argument(
        "--audio", action="append", default=[], help="an [audio] line to try, e.g. 'period_ms = 20'"
    )
    parser.add_argument(
        "--gate", action="append", default=[], help="a [gate] line to try, e.g. 'detector = \"webrtc\"'"
    )
    parser.add_argument(
        "--aec", action="store_true", help="(the default) [audio.processing] echo_cancellation = true"
    )
    parser.add_argument(
        "--no-aec", action="store_true", help="[audio.processing] echo_cancellation = false"
    )
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the CPU and peak RSS of the daemon on the file device (no PulseAudio)",
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR",
        help="with py-spy installed: profile each file-device window into DIR (collapsed stacks)",
    )
    args = parser.parse_args(argv)
    global AUDIO_EXTRA, GATE_EXTRA, ECHO_CANCELLATION, PY_SPY
    AUDIO_EXTRA = "\n".join(args.audio)
    GATE_EXTRA = "\n".join(args.gate)
    ECHO_CANCELLATION = "false" if args.no_aec else "true"
    PY_SPY = args.py_spy
    if PY_SPY is not None:
        PY_SPY.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        root = Path(tmp)
        alsa = make_alsa_env(root)
        if args.cpu_only:
            asyncio.run(cpu_only(alsa, root, 15.0 if args.quick else 40.0))
            return
        os.environ["PULSE_SERVER"] = alsa.pulse_server  # for this process's pacat feeders
        with pulse_running(alsa) as pulse:
            asyncio.run(run_all(alsa, pulse, root, args.quick))


if __name__ == "__main__":
    main()
