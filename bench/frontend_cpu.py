"""CPU per audio second of the capture front end (resample, energy check, webrtcvad, gate).

Feeds 10 ms periods exactly as the capture thread does, on one thread, and reports thread
CPU time per second of audio for: a quiet room (nothing sent), a noisy room at about -45 dBFS,
and continuous speech (streaming). Run: ``.venv/bin/python -m bench.frontend_cpu``.
"""

from __future__ import annotations

import time

import numpy as np

from appliance.audio.frontend import FrontEnd, GateOutput
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings
from appliance.demo import speech_recording

SECONDS = 60


def measure(pcm: np.ndarray, rate: int, label: str) -> None:
    gate = GateSettings()
    out: list[GateOutput] = []
    fe = FrontEnd(device_rate=rate, gate=gate, chunk_ms=40, vad=WebRtcVad(2, 30), emit=out.append)
    step = rate // 100
    periods = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
    t0 = time.thread_time()
    for p in periods:
        fe.process(p)
    cpu = time.thread_time() - t0
    audio_s = len(periods) / 100
    print(
        f"{label:<34} {cpu / audio_s * 100:6.3f} % of one core"
        f"  ({cpu / len(periods) * 1e6:5.1f} us per 10 ms period, {fe.vad_calls} VAD calls,"
        f" {sum(1 for o in out if type(o).__name__ == 'AudioChunk')} chunks)"
    )


def main() -> None:
    rng = np.random.default_rng(0)
    n = 16000 * SECONDS
    quiet = (rng.standard_normal(n) * 20).astype(np.int16)
    noisy = (rng.standard_normal(n) * 180).astype(np.int16)
    speech, rate = speech_recording()
    talk = np.tile(np.frombuffer(speech, dtype=np.int16), SECONDS // 4)
    print(f"capture front end, 16 kHz mono mic, {SECONDS} s of audio each:")
    measure(quiet, 16000, "quiet room (-64 dBFS), nothing sent")
    measure(noisy, 16000, "noisy room (-45 dBFS), nothing sent")
    measure(talk, rate, "speech (streaming 24 kHz)")


if __name__ == "__main__":
    main()
