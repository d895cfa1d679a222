"""Soak: an hour (by default) of simulated conversation through the real daemon, compressed.

The daemon runs in-process with everything real but the clock of the audio: its session,
websockets client, tool runner, watchdog, and capture and playback threads on the ALSA
``null`` PCM (unclocked: the capture thread paces it to real time, the speaker takes audio
as fast as it comes). The gate is in push-to-talk mode with the button never pressed, so
what the ``null`` capture returns (stale bytes, not silence) never opens it. The loopback simulator answers each turn with an
echo of the user's audio, paced at ``--pace`` times real time, and opens every session with
a scripted ``get_time`` tool call.

The bench plays the part of the microphone's front end: it posts the same gate outputs the
capture thread posts (``SpeechStarted``, 40 ms ``AudioChunk`` s of a real recording,
``SpeechStopped``) on the loop, as fast as the daemon takes them instead of in real time.
That is the time compression; nothing in the daemon knows about it. Every
``--barge-in-every``-th turn the user talks over the reply; every ``--reconnect-every``
simulated minutes the connection goes, alternately by a reconnect request and by the
simulator cutting the TCP connection in the middle of a reply.

Simulated time counts the user's speech sent plus the reply audio received. After a
warm-up it samples RSS, open file descriptors, threads and asyncio tasks (after a GC, with
the daemon at rest in READY) and prints them with the xruns, underruns and error counts.

Run: ``.venv/bin/python -m bench.soak`` (``--minutes 60``; ``--minutes 5`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import multiprocessing
import os
import resource
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import soxr

from appliance import daemon as daemon_module
from appliance.audio.frontend import AudioChunk, SpeechStarted, SpeechStopped
from appliance.config import parse_config
from appliance.core.session import Action, Play, StateChanged, StopPlayback
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import speech_recording
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import PATH, RealtimeSimulator

KEY = "c29hazpzb2FrLWtleQ=="
CHUNK = 960  # 40 ms at 24 kHz
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def simulator_process(port: int, pace: float) -> None:
    """The simulator, in its own process so that its memory (it keeps every event it
    received) is not counted as the daemon's. SIGUSR1 cuts every open connection."""
    logging.disable(logging.CRITICAL)

    async def main() -> None:
        script = SimScript(tool_calls=(ToolCall("get_time"),))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with RealtimeSimulator(api_key=KEY, profile="fast", port=port, script=script,
                                     reply_pace=pace) as sim:
            loop.add_signal_handler(signal.SIGUSR1, sim.drop_connections)
            await stop.wait()

    asyncio.run(main())


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Sample:
    minute: float
    rss_kib: int
    fds: int
    threads: int
    tasks: int


@dataclass
class Counts(logging.Handler):
    """Counts the daemon's log records by level, and warnings/errors by message template."""

    by_level: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: collections.Counter[str] = field(default_factory=collections.Counter)
    tracebacks: int = 0

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.INFO)

    def __hash__(self) -> int:
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("realtime_sim", "websockets")):
            return
        self.by_level[record.levelname] += 1
        self.tracebacks += record.exc_info is not None
        if record.levelno >= logging.WARNING:
            self.problems[f"{record.levelname} {record.msg}"] += 1


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pcm, rate = speech_recording()
        speech = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000)
        speech = speech.astype(np.int16)
        # Utterances of 1.2 to 4.8 s cut from the recording, in turn.
        self.utterances = [speech[: int(24000 * s)] for s in (1.2, 2.4, 4.8, 3.0, 1.8)]
        self.actions: collections.Counter[str] = collections.Counter()
        self.reply_ms = 0.0
        self.user_ms = 0.0
        self.samples: list[Sample] = []
        self.turns = self.barge_ins = self.reconnects = self.cuts = 0
        self.stops = 0
        self.connections = 0
        self.waited: collections.Counter[str] = collections.Counter()
        self.waiting_from = ""
        self.state_event = asyncio.Event()

    def observe(self, action: Action) -> None:
        self.actions[type(action).__name__] += 1
        if isinstance(action, Play):
            self.reply_ms += len(action.pcm) / 48
        elif isinstance(action, StopPlayback):
            self.stops += 1
        elif isinstance(action, StateChanged):
            self.state_event.set()

    @property
    def simulated_min(self) -> float:
        return (self.user_ms + self.reply_ms) / 60000

    async def wait_state(self, daemon: Daemon, states: tuple[State, ...], timeout: float) -> None:
        t0 = time.monotonic()
        try:
            await self._wait_state(daemon, states, timeout)
        finally:
            self.waited[f"{states[0].value} from {self.waiting_from}"] += time.monotonic() - t0

    async def _wait_state(self, daemon: Daemon, states: tuple[State, ...], timeout: float) -> None:
        self.waiting_from = daemon.session.state.value
        deadline = time.monotonic() + timeout
        while daemon.session.state not in states:
            self.state_event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"still {daemon.session.state.value}, waiting for {states}")
            try:
                await asyncio.wait_for(self.state_event.wait(), left)
            except TimeoutError:
                pass

    async def speak(self, daemon: Daemon, utterance: np.ndarray) -> None:
        """One utterance through the gate outputs, as the capture thread would post them."""
        daemon._on_gate(SpeechStarted(0))
        for i in range(0, len(utterance), CHUNK):
            daemon._on_gate(AudioChunk(utterance[i : i + CHUNK].tobytes()))
            await asyncio.sleep(0)  # let the writer and reader run, as between real chunks
        sent_ms = len(utterance) * 1000 // 24000
        daemon._on_gate(SpeechStopped(sent_ms))
        self.user_ms += sent_ms

    def sample(self) -> Sample:
        gc.collect()
        s = Sample(
            minute=self.simulated_min,
            rss_kib=rss_kib(),
            fds=open_fds(),
            threads=threading.active_count(),
            tasks=len(asyncio.all_tasks()),
        )
        self.samples.append(s)
        return s

    async def run(self) -> None:
        args = self.args
        port = free_port()
        sim = multiprocessing.get_context("spawn").Process(
            target=simulator_process, args=(port, args.pace), name="simulator"
        )
        sim.start()
        try:
            await self.wait_listening(port)
            config = parse_config(
                {
                    "realtime": {"url": f"ws://127.0.0.1:{port}{PATH}"},
                    "tools": [{"name": "get_time"}],
                    "audio": {
                        "capture_device": "null",
                        "capture_rate": 16000,
                        "playback_device": "null",
                        "playback_rate": 24000,
                    },
                    "gate": {"mode": "push_to_talk", "barge_in": "local"},
                    "gpio": {"enabled": False},
                },
                "<soak>",
            )
            # A session counts as healthy (the backoff resets) after HEALTHY_AFTER_S of wall
            # time; compressed, a few simulated minutes last a few seconds, so the threshold
            # is compressed too, or every cut would look like a flapping connection.
            daemon_module.HEALTHY_AFTER_S = 1.0
            daemon = Daemon(config, ApiKey(KEY, "soak"), observers=[self.observe])
            stop = asyncio.Event()
            runner = asyncio.create_task(daemon.run(stop), name="daemon")
            started = time.monotonic()
            cpu0 = time.process_time()
            try:
                await self.drive(daemon, sim)
            finally:
                stop.set()
                await asyncio.wait_for(runner, 15)
            self.wall_s = time.monotonic() - started
            self.cpu_s = time.process_time() - cpu0
            assert daemon.capture is not None and daemon.player is not None
            self.xruns = daemon.capture.xruns
            self.underruns = daemon.player.underruns
        finally:
            if sim.pid is not None:
                os.kill(sim.pid, signal.SIGTERM)
            sim.join(10)

    async def wait_listening(self, port: int) -> None:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError("the simulator did not start")

    async def drive(self, daemon: Daemon, sim: multiprocessing.process.BaseProcess) -> None:
        args = self.args
        next_cut = args.reconnect_every
        next_report = args.warmup
        cut_by_server = False
        session_id = ""
        while self.simulated_min < args.minutes:
            await self.wait_state(daemon, (State.READY,), 30)
            if daemon.session.session_id != session_id:
                session_id = daemon.session.session_id
                self.connections += 1
            if self.simulated_min >= next_report:
                s = self.sample()
                print(
                    f"  {s.minute:6.1f} min  rss {s.rss_kib / 1024:7.2f} MiB  fds {s.fds:3d}  "
                    f"threads {s.threads:2d}  tasks {s.tasks:2d}  turns {self.turns:4d}  "
                    f"connections {self.connections:3d}",
                    flush=True,
                )
                next_report += args.report_every
            utterance = self.utterances[self.turns % len(self.utterances)]
            self.turns += 1
            cut_now = self.simulated_min >= next_cut
            if cut_now:
                next_cut += args.reconnect_every
                cut_by_server = not cut_by_server
                if not cut_by_server:
                    daemon.reconnect()  # the user's long press: a planned reconnect
                    self.reconnects += 1
                    await self.wait_state(daemon, (State.CONNECTING, State.OFFLINE), 30)
                    await self.wait_state(daemon, (State.READY,), 30)
            await self.speak(daemon, utterance)
            barge = self.turns % args.barge_in_every == 0
            if barge or (cut_now and cut_by_server):
                await self.wait_state(daemon, (State.SPEAKING, State.READY), 15)
                if daemon.session.state is not State.SPEAKING:
                    continue  # a reply without audio (a tool call's turn): nothing to cut
                if cut_now and cut_by_server:
                    assert sim.pid is not None
                    os.kill(sim.pid, signal.SIGUSR1)  # cut mid-reply, like a Wi-Fi drop
                    self.cuts += 1
                    continue
                await asyncio.sleep(0.02)
                self.barge_ins += 1
                self.turns += 1
                await self.speak(daemon, self.utterances[0])
        await self.wait_state(daemon, (State.READY,), 30)
        self.sample()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated conversation")
    parser.add_argument("--warmup", type=float, default=5.0, help="simulated minutes")
    parser.add_argument("--report-every", type=float, default=5.0, help="simulated minutes")
    parser.add_argument("--reconnect-every", type=float, default=3.0, help="simulated minutes")
    parser.add_argument("--barge-in-every", type=int, default=5, help="turns")
    parser.add_argument("--pace", type=float, default=50.0, help="reply audio x real time")
    args = parser.parse_args(argv)
    counts = Counts()
    root = logging.getLogger("appliance")
    root.addHandler(counts)
    root.setLevel(logging.INFO)
    logging.getLogger().addHandler(logging.NullHandler())
    soak = Soak(args)
    print(f"soak: {args.minutes:.0f} simulated minutes, reconnect every {args.reconnect_every:g}, "
          f"barge-in every {args.barge_in_every} turns, replies at {args.pace:g}x")
    asyncio.run(soak.run())
    base, end = soak.samples[0], soak.samples[-1]
    peak = max(s.rss_kib for s in soak.samples)
    print(f"simulated conversation : {soak.simulated_min:.1f} min "
          f"(user speech {soak.user_ms / 60000:.1f} min, replies {soak.reply_ms / 60000:.1f} min)")
    print(f"wall time / CPU        : {soak.wall_s:.0f} s / {soak.cpu_s:.0f} s "
          f"({soak.simulated_min * 60 / soak.wall_s:.0f}x real time)")
    print(f"turns                  : {soak.turns} ({soak.barge_ins} barge-ins, "
          f"{soak.actions['CallTool']} tool calls, {soak.stops} playback stops)")
    print(f"connections            : {soak.connections} ({soak.reconnects} reconnect requests, "
          f"{soak.cuts} cut mid-reply by the server)")
    print(f"RSS after warm-up / end: {base.rss_kib / 1024:.2f} / {end.rss_kib / 1024:.2f} MiB "
          f"(growth {(end.rss_kib - base.rss_kib) / 1024:+.2f} MiB, peak {peak / 1024:.2f}; "
          f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB)")
    print(f"fds / threads / tasks  : {base.fds}/{base.threads}/{base.tasks} after warm-up, "
          f"{end.fds}/{end.threads}/{end.tasks} at the end")
    print(f"capture xruns          : {soak.xruns}; playback underruns {soak.underruns} "
          "(replies arrive in bursts at the pace; the null speaker has no clock)")
    print(f"log records            : {dict(soak_counts(counts))}; tracebacks {counts.tracebacks}")
    waits = ", ".join(f"{k} {v:.1f} s" for k, v in soak.waited.most_common(4))
    print(f"wall time waiting for  : {waits}")
    for what, n in counts.problems.most_common(8):
        print(f"    {n:5d} x {what}")


def soak_counts(counts: Counts) -> list[tuple[str, int]]:
    return sorted(counts.by_level.items())


if __name__ == "__main__":
    main()
