"""CPU per audio second of the capture front end (resample, energy check, webrtcvad, listener).

Feeds a 16 kHz microphone signal on one thread, and reports thread CPU time per second of
audio for: a quiet room (nothing sent), a noisy room at about -45 dBFS, and continuous speech
(streaming). Each is fed two ways: in 10 ms periods, one call each, and paced as the capture
thread paces it (as many frames per call as ``FrontEnd.wants`` asks for: blocks while
listening, chunks while streaming). Each figure is the best of ``--repeat`` runs (the machine
is shared; the least disturbed run is the closest to the code's own cost). Speech is fed
once per ``--chunk-ms`` (upstream chunk lengths: 40 as where the server listens, 100 as the
gated modes' default; ``[audio] chunk_ms``).
Run: ``.venv/bin/python -m bench.frontend_cpu [--seconds 60] [--repeat 3] [--chunk-ms 40,100]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from appliance.audio.frontend import FrontEnd, GateOutput
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings, listen_settings
from appliance.demo import speech_recording


def run_once(pcm: np.ndarray, rate: int, paced: bool, chunk_ms: int) -> tuple[float, int, int, int]:
    """(CPU seconds, calls, VAD calls, chunks sent)."""
    out: list[GateOutput] = []
    fe = FrontEnd(
        device_rate=rate,
        settings=listen_settings(GateSettings()),
        chunk_ms=chunk_ms,
        vad=WebRtcVad(2, 30),
        emit=out.append,
    )
    step = rate // 100
    calls = 0
    pos = 0
    t0 = time.thread_time()
    while pos + step <= len(pcm):
        n = max(fe.wants(), step) if paced else step
        fe.process(pcm[pos : pos + n])
        pos += n
        calls += 1
    cpu = time.thread_time() - t0
    return cpu, calls, fe.vad_calls, sum(1 for o in out if type(o).__name__ == "AudioChunk")


def measure(pcm: np.ndarray, rate: int, label: str, repeat: int, chunk_ms: int = 40) -> None:
    audio_s = len(pcm) / rate
    for paced in (False, True):
        runs = [run_once(pcm, rate, paced, chunk_ms) for _ in range(repeat)]
        cpu, calls, vad_calls, chunks = min(runs)
        how = "paced by wants" if paced else "10 ms periods"
        print(
            f"{label:<36} {how:<15} {cpu / audio_s * 100:6.3f} % of one core"
            f"  ({calls / audio_s:5.1f} calls/s, {vad_calls} VAD calls, {chunks} chunks)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-ms", default="40,100", help="upstream chunk lengths to stream speech with")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 16000 * args.seconds
    quiet = (rng.standard_normal(n) * 20).astype(np.int16)
    noisy = (rng.standard_normal(n) * 180).astype(np.int16)
    speech, rate = speech_recording()
    talk = np.tile(np.frombuffer(speech, dtype=np.int16), max(1, args.seconds // 4))
    print(f"capture front end, 16 kHz mono mic, {args.seconds} s of audio each, best of {args.repeat}:")
    measure(quiet, 16000, "quiet room (-64 dBFS), nothing sent", args.repeat)
    measure(noisy, 16000, "noisy room (-45 dBFS), nothing sent", args.repeat)
    for chunk_ms in (int(c) for c in args.chunk_ms.split(",")):
        measure(talk, rate, f"speech (streaming, {chunk_ms} ms chunks)", args.repeat, chunk_ms)


if __name__ == "__main__":
    main()
