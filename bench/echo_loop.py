"""Echo-safe barge-in through real echo loops: the daemon's whole audio path hearing itself.

``.venv/bin/python -m bench.echo_loop`` (``--quick`` for three cases). A private PulseAudio
(``tests/alsa_env.py``) gives clocked ALSA devices; a ``module-loopback`` plays everything
the speaker sink ``spk`` renders into the microphone's sink ``micfeed`` after 10-150 ms, at
unity gain, with its rate adaptation on (a sound server adapting its rate between two
devices: the rate wanders) or off (one sound card); or ``tests/clock_relay.py`` does, at a
steady ratio tens of ppm off (two sound cards, each on its own crystal). The real
``Daemon`` (default configuration, ``vad`` mode, the ``aec`` extra) runs in this process
against the loopback simulator, capturing ``pmic`` and playing to ``pspk``.

Per case, the "user" (espeak-ng sentences fed into ``micfeed``) asks ``--replies`` questions;
the simulator answers each with what it heard, so each reply is several seconds of speech
whose echo reaches the microphone through the loop. The last ``--barges`` replies of each
case (default 2) are interrupted by the user's "stop" (``appliance/data/speech.wav``, at
-22 dBFS), fed ``BARGE_AT_S`` into the reply. The replies' level sets the echo relative to the user's
voice (-10 to +6 dB); a room-noise floor (pink noise at -64 dBFS) is fed or not (digital
silence, as a sound server's idle source gives).

Prints, per case and in total:

- self-interruptions: reply cuts (``StopPlayback``) with no user speech being fed (target 0);
- barge-ins caught: the user's "stop" cut the reply within 1.5 s of its onset (target all),
  and the latency from its onset (feed start + its leading silence) to the cut (p50 / p95;
  target p95 <= 300 ms); pacat's 20 ms of buffering is included; and the same over the
  stops said while the appliance had voice barge-in on (on a drifting path it turns it
  off, and says so: the notes show its log line);
- the canceller's CPU (its ``process`` calls, thread time) per audio second while replies
  play, and the echo coupling the canceller reported.

Run: ``.venv/bin/python -m bench.echo_loop`` (about 11 minutes; ``--quick``: about 3;
``--case N`` for one case; ``--barge-at S`` for a "stop" S seconds into the reply;
``--trace DIR`` saves every canceller frame of each case, the levels and the raw microphone
and reference, for diagnosis).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from alsa_env import PulseEnv, make_alsa_env, pulse_audio_config, pulse_running

RATE = 16000
USER_DBFS = -22.0  # the user's "stop", as in issue 23's rig
NOISE_DBFS = -64.0
BARGE_AT_S = 2.5  # the "stop" starts this far into a reply (see --barges)
CAUGHT_S = 1.5


@dataclass(frozen=True)
class Case:
    latency_ms: int
    echo_db: float  # the echo at the microphone relative to the user's voice
    noise: bool
    adjust: bool
    ppm: float = 0.0  # not 0: two sound cards this far apart (tests/clock_relay.py), no loopback
    replies: int = 3
    barges: int = 2  # the last this many replies are interrupted by the user's "stop"

    def __str__(self) -> str:
        return (
            f"loop {self.latency_ms:3d} ms, echo {self.echo_db:+.0f} dB, "
            f"{'noise' if self.noise else 'silent'} floor, "
            + (f"two clocks {self.ppm:+.0f} ppm" if self.ppm
               else f"rate {'adapting' if self.adjust else 'fixed'}")
        )


CASES = (
    Case(30, -5.0, False, True),  # issue 23's rig: digital silence, adapting loop
    Case(10, -10.0, False, True),
    Case(30, 0.0, True, True),
    Case(60, 6.0, True, False),
    Case(100, 0.0, False, False),
    Case(150, 6.0, False, True),
    Case(150, -10.0, True, False),
    Case(80, 3.0, True, True),
    Case(60, 0.0, True, False, ppm=60.0),
    Case(30, -5.0, False, False, ppm=-40.0),
    Case(100, 3.0, False, False, ppm=100.0),
)
QUICK = (CASES[0], CASES[3], CASES[9])


@dataclass
class Outcome:
    case: Case
    replies: int = 0
    self_cuts: list[float] = field(default_factory=list)  # seconds into the reply
    barge_ins: list[float] = field(default_factory=list)  # latency, s (inf: missed)
    # ...whether the appliance had voice barge-in on for each (off: it said why, and the
    # talk button and the wake word still interrupt)
    voice_on: list[bool] = field(default_factory=list)
    canceller_cpu_s: float = 0.0
    speaking_s: float = 0.0
    notes: list[str] = field(default_factory=list)


TRACE: Path | None = None  # --trace DIR: every canceller frame of each case, for diagnosis
_frames: list[tuple[float, ...]] = []
_raw: list[np.ndarray] = []
_raw_far: list[np.ndarray] = []


def trace(canceller: Any) -> None:
    """Wrap the canceller's per-frame step (a diagnostic, not the product): per 10 ms frame,
    when it was captured, the microphone's, the reference's and the output's level, whether
    the raw microphone was trusted, and the residual / double-talk counters."""
    inner = canceller._run_frame
    near, far = canceller._near_view, canceller._far_view

    def db(x: np.ndarray) -> float:
        f = x.astype(np.float64)
        return float(10 * np.log10(np.mean(f * f) / 32768**2 + 1e-12))

    def run_frame(at: float) -> None:
        mic = db(near)
        _raw.append(near.copy())
        inner(at)
        _raw_far.append(far.copy())
        _frames.append((at, time.monotonic(), mic, db(far), db(near), float(canceller.trusted),
                        float(canceller.residual_frames), float(canceller.double_talk.frames),
                        float(canceller._track or 0), float(canceller.resyncs),
                        float(canceller.double_talk.converged), float(canceller.double_talk.proved), canceller.double_talk._proved, canceller.double_talk._typical, canceller._floor,
                        db(canceller._mdf.out) if canceller._mdf is not None else 0.0,
                        canceller._drift.phase, canceller._drift.rate, float(canceller.placements)))

    canceller._run_frame = run_frame


def pink_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    x *= 10 ** (dbfs / 20) / np.sqrt(np.mean(x**2))
    return np.asarray(np.clip(x * 32768, -32768, 32767).astype(np.int16))


def pcm(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16))


class Recorder:
    """A daemon observer: when each state, playback and stop happened."""

    def __init__(self) -> None:
        from appliance.core.session import StateChanged, StopPlayback

        self._state_type = StateChanged
        self._stop_type = StopPlayback
        self.states: list[tuple[float, Any]] = []
        self.stops: list[float] = []
        self.ready = asyncio.Event()

    def __call__(self, action: Any) -> None:
        now = time.monotonic()
        if isinstance(action, self._state_type):
            self.states.append((now, action.state))
            if action.state.name == "READY":
                self.ready.set()
        elif isinstance(action, self._stop_type):
            self.stops.append(now)

    def state(self) -> Any:
        return self.states[-1][1] if self.states else None


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


async def until(ok: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def into_reply(rec: Recorder, seconds: float, timeout: float) -> bool:
    """Wait until a reply has played ``seconds`` (a question the detector cut in two gets
    two replies: the first may end sooner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rec.states and rec.states[-1][1].name == "SPEAKING":
            n = len(rec.states)
            await asyncio.sleep(max(0.0, rec.states[-1][0] + seconds - time.monotonic()))
            if len(rec.states) == n:
                return True
        else:
            await asyncio.sleep(0.02)
    return False


async def run_case(pulse: PulseEnv, case: Case, seed: int) -> Outcome:
    import appliance.app.audio as daemon_module  # where the daemon's audio path loads the canceller
    from appliance.audio.aec import EchoCanceller
    from appliance.config import parse_config
    from appliance.credentials import ApiKey
    from appliance.daemon import Daemon
    from appliance.demo import DEMO_KEY, demo_config
    from realtime_sim.room import agent_speech, set_level, user_speech
    from realtime_sim.server import RealtimeSimulator

    out = Outcome(case)
    reply_dbfs = USER_DBFS + case.echo_db
    stop = pcm(set_level(user_speech(), USER_DBFS))
    stop = np.concatenate([np.zeros(RATE // 5, np.int16), stop, np.zeros(RATE // 5, np.int16)])
    stop_onset = 0.2  # user_speech() is trimmed to its first frame within 40 dB of the loudest
    cpu = [0.0]
    made: list[EchoCanceller] = []
    real_load = daemon_module.load_canceller

    def timed_load(*args: Any, **kw: Any) -> Any:
        canceller = real_load(*args, **kw)
        if canceller is not None:
            made.append(canceller)
            inner = canceller.process

            def process(mono: np.ndarray, now: float | None = None) -> np.ndarray:
                t0 = time.thread_time()
                r = inner(mono, now)
                cpu[0] += time.thread_time() - t0
                return r

            canceller.process = process  # type: ignore[method-assign]
            if TRACE is not None:
                trace(canceller)
        return canceller

    daemon_module.load_canceller = timed_load
    lines = Lines()
    logging.getLogger("appliance").addHandler(lines)
    logging.getLogger("appliance").setLevel(logging.INFO)
    if case.ppm:
        relay, module = pulse.add_two_clocks(case.latency_ms, case.ppm), None
    else:
        relay, module = None, pulse.add_loopback(case.latency_ms, adjust=case.adjust)
    noise = pulse.feed(pink_noise(240, NOISE_DBFS, seed), latency_ms=250) if case.noise else None
    rec = Recorder()
    feeds: list[tuple[float, float]] = []  # (start, end) of user speech being fed
    try:
        # The service's timing (first audio 300 ms after the response), its audio sent 4x
        # faster than it plays: at 1x (the profile's own pace) the player's 60 ms prefill lets
        # this rig's PulseAudio sink run dry, about 10 ms of gaps a second, which moves the
        # echo path under the canceller every second or so (docs/performance.md).
        async with RealtimeSimulator(api_key=DEMO_KEY, reply_pace=4.0) as sim:
            data = demo_config(sim.url)
            data["audio"] = pulse_audio_config()
            daemon = Daemon(parse_config(data), ApiKey(DEMO_KEY, "bench"), observers=[rec])
            stopper = asyncio.Event()
            runner = asyncio.create_task(daemon.run(stopper))
            try:
                await asyncio.wait_for(rec.ready.wait(), 20)
                await asyncio.sleep(1.0)
                for i in range(case.replies):
                    ask = pcm(agent_speech(5.0, pause_s=0.15, seed=seed * 10 + i))
                    ask = pcm(set_level(ask.astype(np.float64) / 32768, reply_dbfs))
                    t0 = time.monotonic()
                    feeds.append((t0, t0 + len(ask) / RATE + 1.0))
                    feeder = pulse.feed(ask)
                    n_states = len(rec.states)
                    if not await until(
                        lambda n=n_states: any(s.name == "SPEAKING" for _, s in rec.states[n:]),
                        len(ask) / RATE + 15,
                    ):
                        out.notes.append(f"reply {i + 1}: never played")
                        feeder.kill()
                        continue
                    await asyncio.to_thread(feeder.wait, len(ask) / RATE + 10)
                    spoke = next(t for t, s in rec.states[n_states:] if s.name == "SPEAKING")
                    out.replies += 1
                    barge = i >= case.replies - case.barges
                    if barge and not await into_reply(rec, BARGE_AT_S, 20.0):
                        out.notes.append(f"reply {i + 1}: none lasted {BARGE_AT_S} s: no barge-in")
                        barge = False
                    if barge:
                        out.voice_on.append(all(c.voice_barge_in for c in made))
                        t1 = time.monotonic()
                        onset = t1 + stop_onset
                        # A cut before the "stop" can reach the microphone is the reply's own.
                        feeds.append((onset, t1 + len(stop) / RATE + 1.0))
                        f2 = pulse.feed(stop)
                        cut = await until(lambda t1=t1: any(t >= t1 for t in rec.stops), CAUGHT_S + 1)
                        cuts = [t for t in rec.stops if t >= onset - 0.05]
                        cut = cut and bool(cuts)
                        latency = cuts[0] - onset if cut else float("inf")
                        out.barge_ins.append(latency if latency <= CAUGHT_S else float("inf"))
                        await asyncio.to_thread(f2.wait, 5)
                    # The reply (or the stop's own reply) plays out.
                    await until(lambda: rec.state() is not None and rec.state().name == "READY"
                                and time.monotonic() - rec.states[-1][0] > 1.5, 40)
                    ended = rec.states[-1][0]
                    out.speaking_s += ended - spoke
                # Cuts with no user speech being fed are the appliance interrupting itself.
                for t in rec.stops:
                    if not any(a - 0.05 <= t <= b for a, b in feeds):
                        speaking = [s for s, st in rec.states if st.name == "SPEAKING" and s <= t]
                        out.self_cuts.append(t - speaking[-1] if speaking else float("nan"))
            finally:
                stopper.set()
                await asyncio.wait_for(runner, 15)
    finally:
        daemon_module.load_canceller = real_load
        logging.getLogger("appliance").removeHandler(lines)
        if module is not None:
            pulse.remove_module(module)
        if relay is not None:
            relay.terminate()
            relay.wait()
        if noise is not None:
            noise.kill()
            noise.wait()
    out.canceller_cpu_s = cpu[0]
    if TRACE is not None:
        TRACE.mkdir(parents=True, exist_ok=True)
        np.savez(TRACE / f"case{seed - 1}.npz", frames=np.array(_frames), stops=np.array(rec.stops),
                 feeds=np.array(feeds), states=np.array([(t, s.name) for t, s in rec.states]),
                 mic=np.concatenate(_raw), far=np.concatenate(_raw_far))
        _frames.clear()
        _raw.clear()
        _raw_far.clear()
    # Why a "stop" is missed: the double-talk rule needs the linear canceller converged
    # (a median of 15 dB off the echo); on a rate-adapting loop the echo path drifts by
    # about a sample a second under it and it may never get there.
    out.notes += [
        f"linear canceller: median {c.double_talk._typical:.0f} dB off the echo in the last reply,"
        f" {'converged' if c.double_talk.converged else 'not converged'}"
        for c in made
        if c.double_talk.frames or c.double_talk._typical
    ]
    out.notes += [
        line for line in lines.lines
        if "echo cancellation" in line or "underrun" in line or "barge-in" in line
    ]
    return out


def _p95_ms(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    value = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return f"{value * 1000:.0f} ms" if math.isfinite(value) else "inf"


def report(outcomes: list[Outcome]) -> None:
    lat: list[float] = []
    on: list[bool] = []
    cuts = replies = 0
    cpu = speaking = 0.0
    for o in outcomes:
        lat += o.barge_ins
        on += o.voice_on
        cuts += len(o.self_cuts)
        replies += o.replies
        cpu += o.canceller_cpu_s
        speaking += o.speaking_s
        caught = [x for x in o.barge_ins if np.isfinite(x)]
        off = o.voice_on.count(False)
        print(
            f"{o.case}: {o.replies} replies, {len(o.self_cuts)} self-interruptions"
            + (f" (at {', '.join(f'{c:.2f}' for c in o.self_cuts)} s)" if o.self_cuts else "")
            + f"; barge-ins {len(caught)}/{len(o.barge_ins)}"
            + (f" ({', '.join(f'{x * 1000:.0f}' for x in caught)} ms)" if caught else "")
            + (f"; voice barge-in off for {off}" if off else "")
        )
        for note in o.notes:
            print(f"    {note}")
    print(
        f"total: {replies} replies, {cuts} self-interruptions (target 0); barge-ins caught"
        f" {_caught(lat, 'all')}"
    )
    voiced = [x for x, v in zip(lat, on, strict=True) if v]
    if len(voiced) < len(lat):
        print(
            f"  where the appliance kept voice barge-in on: {_caught(voiced)}; it was off,"
            f" and said so, for {len(lat) - len(voiced)} (each case's notes say why)"
        )
    if speaking:
        print(
            f"canceller CPU: {cpu / speaking * 1000:.1f} ms per second of reply"
            f" ({cpu / speaking * 100:.2f} % of one core, thread time of its process calls)"
        )


def _caught(latencies: list[float], target: str = "") -> str:
    found = np.array([x for x in latencies if np.isfinite(x)])
    target = f" (target {target})" if target else ""
    if not len(found):
        return f"0/{len(latencies)}{target}"
    return (
        f"{len(found)}/{len(latencies)}{target}, latency p50 {np.median(found) * 1000:.0f} ms,"
        f" p95 {_p95_ms(latencies)} (target <= 300 ms; a missed barge-in counts as infinite)"
    )


def main() -> None:
    global TRACE, BARGE_AT_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three cases")
    parser.add_argument("--replies", type=int, default=3, help="replies per case")
    parser.add_argument("--barges", type=int, default=2,
                        help="the last N replies of each case are interrupted")
    parser.add_argument("--case", type=int, action="append", help="only case N (0-based)")
    parser.add_argument("--barge-at", type=float, default=BARGE_AT_S,
                        help=f"seconds into a reply the user says stop (default {BARGE_AT_S})")
    parser.add_argument("--trace", type=Path, help="save each case's canceller frames here")
    args = parser.parse_args()
    TRACE, BARGE_AT_S = args.trace, args.barge_at
    cases = [CASES[i] for i in args.case] if args.case else list(QUICK if args.quick else CASES)
    cases = [replace(c, replies=args.replies, barges=args.barges) for c in cases]
    with tempfile.TemporaryDirectory(prefix="echo-loop-") as tmp:
        alsa = make_alsa_env(Path(tmp))
        os.environ.update(alsa.env())  # alsa-lib reads its configuration at the first open
        with pulse_running(alsa) as pulse:
            outcomes = []
            for k, case in enumerate(cases):
                t0 = time.monotonic()
                outcomes.append(asyncio.run(run_case(pulse, case, seed=k + 1)))
                print(f"[{case}: {time.monotonic() - t0:.0f} s]", file=sys.stderr)
    report(outcomes)


if __name__ == "__main__":
    main()
