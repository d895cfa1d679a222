"""CPU per audio second of the capture front end (resample, speech detector, listener).

Feeds a 16 kHz microphone signal on one thread, and reports thread CPU time per second of
audio, for each ``[gate] detector`` (``webrtc``: energy pre-check + webrtcvad; ``micro``: the
level stage that wakes pymicro-vad), in: a quiet room (nothing sent), room noises at -45 dBFS
(white, pink, brown, a fan, a mixture; nothing sent), and continuous speech (streaming). The
front end is paced as the capture thread paces it (as many frames per call as
``FrontEnd.wants`` asks for: blocks while listening, chunks while streaming); ``--periods``
also feeds 10 ms periods, one call each. Each figure is the best of ``--repeat`` runs (the
machine is shared; the least disturbed run is the closest to the code's own cost).
Speech is streamed once per ``--chunk-ms`` (40: where the server listens; 100: the gated
modes' "auto").
Run: ``.venv/bin/python -m bench.frontend_cpu [--seconds 60] [--repeat 3] [--periods] [--chunk-ms 40,100]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStarted
from appliance.audio.micro_vad import SpeechStage
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings, listen_settings
from appliance.demo import speech_recording
from bench.turn_corpus import noise


def run_once(
    pcm: np.ndarray, rate: int, paced: bool, detector: str, chunk_ms: int = 40
) -> tuple[float, int, int, int, int, int]:
    """(CPU seconds, calls, detector calls, chunks sent, turns opened, frames pymicro-vad
    ran on: the staged detector's level stage and coasting spare the rest)."""
    out: list[GateOutput] = []
    gate = GateSettings(detector=detector)
    settings = listen_settings(gate)
    stage = SpeechStage(speech_threshold=settings.endpoint.speech_threshold)
    fe = FrontEnd(
        device_rate=rate,
        settings=settings,
        chunk_ms=chunk_ms,
        vad=WebRtcVad(2, 30) if detector == "webrtc" else None,
        emit=out.append,
        speech=stage if detector == "micro" else None,
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
    chunks = sum(isinstance(o, AudioChunk) for o in out)
    turns = sum(isinstance(o, SpeechStarted) for o in out)
    return cpu, calls, fe.vad_calls, chunks, turns, stage.model_frames


def measure(
    pcm: np.ndarray, rate: int, label: str, repeat: int, periods: bool, *, chunk_ms: int = 40
) -> None:
    audio_s = len(pcm) / rate
    for detector in ("webrtc", "micro"):
        for paced in (True, False) if periods else (True,):
            runs = [run_once(pcm, rate, paced, detector, chunk_ms) for _ in range(repeat)]
            cpu, calls, vad_calls, chunks, turns, model = min(runs)
            how = "paced" if paced else "10 ms periods"
            print(
                f"{label:<30} {detector:<6} {how:<13} {cpu / audio_s * 100:6.3f} % of one core"
                f"  ({calls / audio_s:5.1f} calls/s, {vad_calls / audio_s:5.1f} detector frames/s,"
                f" {model / audio_s:5.1f} model frames/s, {turns} turns, {chunks} chunks)"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--periods", action="store_true", help="also feed 10 ms periods")
    ap.add_argument("--chunk-ms", default="40,100", help="chunk lengths to stream speech with")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 16000 * args.seconds
    scenes = {"quiet room (-64 dBFS)": (rng.standard_normal(n) * 20).astype(np.int16)}
    for kind in ("white", "pink", "brown", "fan", "brown+fan+white"):
        scenes[f"{kind} -45 dBFS"] = np.round(noise(kind, -45, n, 3)).astype(np.int16)
    speech, rate = speech_recording()
    talk = np.tile(np.frombuffer(speech, dtype=np.int16), max(1, args.seconds // 4))
    print(f"capture front end, 16 kHz mono mic, {args.seconds} s of audio each, best of {args.repeat}:")
    for label, pcm in scenes.items():
        measure(pcm, 16000, label + ", nothing sent", args.repeat, args.periods)
    for chunk_ms in (int(c) for c in args.chunk_ms.split(",")):
        measure(talk, rate, f"speech, {chunk_ms} ms chunks", args.repeat, args.periods, chunk_ms=chunk_ms)


if __name__ == "__main__":
    main()
