"""Echo-safe barge-in: self-interruptions, barge-in latency, ERLE and CPU of the canceller.

Agent speech (espeak-ng, ``SECONDS`` of it) goes through the simulated room of
``realtime_sim.room`` (delay, attenuation, reverberant impulse response, loudspeaker
clipping, microphone noise) into the real capture front end (webrtcvad, the gate with its
echo guard on, as while the speaker plays, and once off) with and without the WebRTC echo canceller, fed
through the real ``ReferenceTap`` on a simulated clock. The echo at the microphone is 6 dB
above the user utterances (``appliance/data/speech.wav``, every 8 s in the second run).

Prints, per configuration: turn starts (barge-ins) over the agent alone; user utterances
detected over the echo and the latency from speech onset to the turn start (p50 / p95 /
max); ERLE in dB (echo power over what remains of it, 0.5 s windows, median from 10 s on)
and the convergence time (first moment after which the 2 s running median ERLE stays at or
above 25 dB); CPU per audio second of the canceller and of the rest of the front end (thread
time on this machine). Then ERLE and convergence for room delays of 20, 80 and 150 ms.

``--compare`` evaluates the alternatives on a shorter signal through the same path (the
same tap, clock, coupling rule and front end): pywebrtc-audio's AEC3 (the one the product
uses) against speexdsp's MDF canceller alone (Debian's libspeexdsp1, the product's
double-talk detector, ``appliance.audio.nearend``) and, if it is installed, livekit's AudioProcessingModule (the same
AEC3, another binding).

``--onsets`` shows, for the barge-ins slower than 250 ms, how loud AEC3's own output (before
the residual rule) is over the first 300 ms of the user's voice.

Run: ``.venv/bin/python -m bench.aec`` (``--seconds 120`` for a quick look;
``--compare`` for the evaluation; ``--delay-ms 150 --seed 11`` for another room).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.audio.aec import FRAME, EchoCanceller, PyWebrtcApm, ReferenceTap, load_canceller
from appliance.audio.nearend import load_mdf
from appliance.config import GateSettings, ProcessingSettings
from realtime_sim.room import (
    RATE,
    Room,
    Signal,
    agent_speech,
    barge_in_latencies,
    erle,
    false_starts,
    run_front_end,
    scene,
    user_speech,
)

ECHO_DBFS = -20.0
USER_DBFS = ECHO_DBFS - 6.0
TARGET_ERLE_DB = 25.0


def convergence_s(curve: Signal, target: float = TARGET_ERLE_DB, window: int = 4) -> float:
    """Seconds until the running median of ``window`` half-second ERLE values stays at or
    above ``target`` from then on (inf if it never does)."""
    n = len(curve)
    ok = np.zeros(n, dtype=bool)
    for i in range(n):
        vals = curve[max(0, i - window + 1) : i + 1]
        vals = vals[~np.isnan(vals)]
        ok[i] = len(vals) > 0 and float(np.median(vals)) >= target
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return 0.0
    if bad[-1] == n - 1:
        return math.inf
    return float(bad[-1] + 1) * 0.5


def one(
    label: str,
    agent: Signal,
    room: Room,
    processing: ProcessingSettings | None,
    guard: bool = True,
) -> None:
    gate = GateSettings()
    alone = scene(agent, room)
    solo = run_front_end(alone, gate, processing, playing=guard)
    with_user = scene(agent, room, user_dbfs=USER_DBFS)
    duet = run_front_end(with_user, gate, processing, playing=guard)
    seconds = len(agent) / RATE
    lat = np.array(barge_in_latencies(with_user.onsets, duet.starts))
    found = lat[np.isfinite(lat)]
    wrong = false_starts(with_user.onsets, duet.starts, len(user_speech()))
    print(f"{label}")
    print(
        f"  agent alone {seconds / 60:.1f} min: {len(solo.starts)} barge-ins"
        + (
            f" (at {', '.join(f'{s / RATE:.1f}' for s in solo.starts[:8])} s)"
            if solo.starts
            else ""
        )
    )
    if len(found):
        print(
            f"  user over echo: {len(found)}/{len(lat)} detected, latency p50"
            f" {np.median(found) * 1000:.0f} ms, p95 {np.percentile(lat, 95) * 1000:.0f} ms,"
            f" max {lat.max() * 1000:.0f} ms; {len(wrong)} starts without user speech"
        )
    else:
        print(f"  user over echo: 0/{len(lat)} detected")
    if processing is not None:
        curve, _ = erle(alone.echo, solo.heard)
        print(
            f"  ERLE median {np.nanmedian(curve[20:]):.1f} dB after 10 s"
            f" (p10 {np.nanpercentile(curve[20:], 10):.1f} dB), converged (>= {TARGET_ERLE_DB:.0f} dB)"
            f" after {convergence_s(curve):.1f} s"
        )
    rest = solo.cpu_s - solo.canceller_cpu_s
    print(
        f"  CPU per audio second: canceller {solo.canceller_cpu_s / seconds * 1000:.2f} ms"
        f" ({solo.canceller_cpu_s / seconds * 100:.2f} % of one core), rest of the front end"
        f" {rest / seconds * 1000:.2f} ms ({rest / seconds * 100:.2f} %)"
    )


class _Speex:
    """speexdsp's echo canceller alone (MDF, the product's double-talk detector, with
    ``nearend.FILTER_S`` of filter) in the shape of ``aec.Apm``."""

    def __init__(self) -> None:
        self._mdf = load_mdf(FRAME, RATE)
        self._near = np.zeros(FRAME, dtype=np.int16)
        self._far = np.zeros(FRAME, dtype=np.int16)

    def process_reverse_stream(self, frame: bytearray) -> None:
        self._far[:] = np.frombuffer(frame, dtype=np.int16)

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        pass

    def process_stream(self, frame: bytearray) -> None:
        near = np.frombuffer(frame, dtype=np.int16)
        self._near[:] = near
        near[:] = self._mdf.process(self._near, self._far)


def _maker(apm: Callable[[], Any]) -> Callable[[ReferenceTap, Callable[[], float]], EchoCanceller]:
    def make(tap: ReferenceTap, clock: Callable[[], float]) -> EchoCanceller:
        return EchoCanceller(apm(), lambda buf: buf, tap, always=False, clock=clock)

    return make


def _rss_mb() -> float:
    """Resident memory now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def compare(seconds: float) -> None:
    makers: list[tuple[str, Callable[[ReferenceTap, Callable[[], float]], EchoCanceller]]] = []
    rss = _rss_mb()
    t0 = time.perf_counter()
    load_canceller(ProcessingSettings(), ReferenceTap(RATE))
    print(
        f"pywebrtc-audio: loading the module took {time.perf_counter() - t0:.2f} s,"
        f" resident memory +{_rss_mb() - rss:.0f} MB, threads {threading.active_count()}"
        f" Python / {len(os.listdir('/proc/self/task'))} in all"
    )

    def product(tap: ReferenceTap, clock: Callable[[], float]) -> EchoCanceller:
        made = load_canceller(ProcessingSettings(), tap, clock)
        assert made is not None
        return made

    makers.append(("pywebrtc-audio (WebRTC AEC3 and the double-talk rule: the product)", product))
    try:
        _Speex()
        makers.append(("speexdsp (MDF, ctypes)", _maker(_Speex)))
    except OSError as exc:
        print(f"speexdsp: not available ({exc})")
    try:
        rtc: Any = importlib.import_module("livekit.rtc")
        rss = _rss_mb()
        rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        print(
            f"livekit: resident memory +{_rss_mb() - rss:.0f} MB,"
            f" {len(os.listdir('/proc/self/task'))} threads in all"
        )

        def livekit(tap: ReferenceTap, clock: Callable[[], float]) -> EchoCanceller:
            apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
            return EchoCanceller(
                apm, lambda buf: rtc.AudioFrame(buf, RATE, 1, FRAME), tap, always=False, clock=clock
            )

        makers.append(("livekit (WebRTC AEC3)", livekit))
    except ImportError:
        print("livekit: not installed (pip install livekit to include it)")
    agent = agent_speech(seconds)
    room = Room(delay_ms=80.0, echo_dbfs=ECHO_DBFS)
    user_len = len(user_speech())
    for label, make in makers:
        alone = scene(agent, room)
        solo = run_front_end(alone, GateSettings(), None, make_canceller=make)
        duet_scene = scene(agent, room, user_dbfs=USER_DBFS)
        duet = run_front_end(duet_scene, GateSettings(), None, make_canceller=make)
        lat = np.array(barge_in_latencies(duet_scene.onsets, duet.starts))
        curve, _ = erle(alone.echo, solo.heard)
        wrong = false_starts(duet_scene.onsets, duet.starts, user_len)
        print(
            f"{label}: ERLE median {np.nanmedian(curve[20:]):.1f} dB;"
            f" {len(solo.starts)} barge-ins over {seconds:.0f} s of agent alone;"
            f" user {np.isfinite(lat).sum()}/{len(lat)} detected"
            f" (p50 {np.median(lat) * 1000:.0f} ms), {len(wrong)} starts without user speech;"
            f" CPU {solo.canceller_cpu_s / seconds * 1000:.2f} ms per audio second"
        )


def onsets(seconds: float) -> None:
    """What AEC3 itself (before the residual rule) leaves of the user's voice in the slow
    barge-ins: its output level over the first 300 ms after each onset that took longer
    than 250 ms to barge in, against the user's and the echo's level at the microphone."""
    import pywebrtc_audio

    out = np.zeros(int(seconds * RATE) + 30 * RATE, dtype=np.int16)
    owner: list[EchoCanceller] = []

    class Kept(PyWebrtcApm):
        def process_stream(self, frame: Any) -> None:
            super().process_stream(frame)
            k = owner[0].frames - 1
            out[k * FRAME : (k + 1) * FRAME] = np.frombuffer(frame, dtype=np.int16)

    def make(tap: ReferenceTap, clock: Callable[[], float]) -> EchoCanceller:
        ap = pywebrtc_audio.AudioProcessor(RATE, 1, echo_cancellation=True, high_pass_filter=True)
        owner.append(EchoCanceller(Kept(ap), lambda buf: buf, tap, always=False, clock=clock))
        return owner[0]

    sc = scene(agent_speech(seconds), Room(delay_ms=80.0, echo_dbfs=ECHO_DBFS), user_dbfs=USER_DBFS)
    run = run_front_end(sc, GateSettings(), None, make_canceller=make)
    aec = out.astype(np.float64) / 32768

    def dbfs(x: Signal) -> float:
        return 10 * math.log10(float(np.mean(x**2)) + 1e-12)

    rows = []
    for onset, lat in zip(sc.onsets, barge_in_latencies(sc.onsets, run.starts), strict=True):
        if lat > 0.25:
            w = slice(onset, onset + int(0.3 * RATE))
            frames = aec[w].reshape(-1, FRAME)
            typical = float(np.median([dbfs(f) for f in frames]))
            rows.append((dbfs(sc.user[w]), dbfs(sc.echo[w]), dbfs(aec[w]), typical))
            print(
                f"  onset {onset / RATE:6.1f} s, barge-in after {lat * 1000:4.0f} ms: first 300 ms"
                f" user {rows[-1][0]:.1f}, echo {rows[-1][1]:.1f}, AEC3 output {rows[-1][2]:.1f}"
                f" dBFS (median 10 ms frame {typical:.1f})"
            )
    if rows:
        med = np.median(np.array(rows), axis=0)
        print(
            f"{len(rows)} of {len(sc.onsets)} onsets slower than 250 ms; median over them: user"
            f" {med[0]:.1f}, echo {med[1]:.1f}, AEC3 output {med[2]:.1f} dBFS, its median 10 ms"
            f" frame {med[3]:.1f} dBFS (noise {Room().noise_dbfs:.0f} dBFS)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--compare", action="store_true", help="evaluate the alternatives")
    parser.add_argument(
        "--onsets", action="store_true", help="what AEC3 leaves of the slow barge-ins' voice"
    )
    parser.add_argument("--delay-ms", type=float, default=80.0, help="the room's echo delay")
    parser.add_argument("--seed", type=int, default=7, help="the room's impulse response and noise")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # NaN medians of faint windows
    if args.compare:
        compare(min(args.seconds, 120.0))
        return
    if args.onsets:
        onsets(args.seconds)
        return
    agent = agent_speech(args.seconds)
    room = Room(delay_ms=args.delay_ms, echo_dbfs=ECHO_DBFS, seed=args.seed)
    print(
        f"room: delay {room.delay_ms:.0f} ms (seed {room.seed}), RT60 {room.rt60_ms:.0f} ms, drive {room.drive},"
        f" echo {ECHO_DBFS:.0f} dBFS, user {USER_DBFS:.0f} dBFS, noise {room.noise_dbfs:.0f} dBFS"
    )
    one("echo guard only (no canceller)", agent, room, None)
    one("echo cancellation + echo guard", agent, room, ProcessingSettings())
    one(
        "echo cancellation without the double-talk rule + echo guard",
        agent,
        room,
        ProcessingSettings(double_talk=False),
    )
    one("echo cancellation, echo guard off", agent, room, ProcessingSettings(), guard=False)
    one(
        "echo cancellation + noise suppression + echo guard",
        agent,
        room,
        ProcessingSettings(noise_suppression=True),
    )
    short = agent[: 60 * RATE]
    for delay in (20.0, 80.0, 150.0):
        alone = scene(short, Room(delay_ms=delay, echo_dbfs=ECHO_DBFS))
        run = run_front_end(alone, GateSettings(), ProcessingSettings())
        curve, _ = erle(alone.echo, run.heard)
        print(
            f"room delay {delay:.0f} ms: ERLE median {np.nanmedian(curve[20:]):.1f} dB,"
            f" converged after {convergence_s(curve):.1f} s"
        )


if __name__ == "__main__":
    main()
