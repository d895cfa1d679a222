"""Wake word: CPU of the detector next to the VAD, detections and false accepts.

    .venv/bin/python -m bench.wake

The recordings are synthesized by espeak-ng (``bench/wake_corpus.py``): "okay nabu, <request>"
and everyday sentences without the wake word, each in 6 voices at 2 speaking rates, with
pink noise at 20 dB and 10 dB SNR (against each sentence's speech level) besides clean. Each
condition is one continuous stream (1 s of room between sentences) through one detector, as
the device hears it; a detection within a wake sentence counts as a hit, any other one as a
false accept.

CPU is process time per audio second on this machine (x86-64, shared: read ratios): the
detector alone (features + model), webrtcvad alone (30 ms frames), and the whole front end
in "wake" mode next to "vad" mode on the same stream of talk without the wake word (nothing
is sent in wake mode, so this is its idle cost).
"""

from __future__ import annotations

import os
import time

import numpy as np
import numpy.typing as npt

from appliance.audio.frontend import FrontEnd, GateOutput
from appliance.audio.vad import WebRtcVad
from appliance.audio.wake import WakeWordDetector
from appliance.config import GateSettings, listen_settings
from appliance.core.listen import GateMode
from bench.wake_corpus import OTHER, RATE, REQUESTS, SPEEDS, VOICES, WAKE, synthesize

Samples = npt.NDArray[np.int16]
GAP_S = 1.0
ROOM_DBFS = -70.0  # the room between sentences in the clean condition


def pink(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Unit-RMS pink (1/f) noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    out: npt.NDArray[np.float64] = x / np.sqrt(np.mean(x**2))
    return out


def speech_rms(pcm: Samples) -> float:
    f = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    rms = np.sqrt((f**2).mean(axis=1))
    return float(np.sqrt(np.mean(rms[rms > rms.max() / 30] ** 2)))


def build_stream(
    sentences: list[tuple[Samples, bool]], snr_db: float | None, seed: int
) -> tuple[Samples, list[tuple[int, int, bool]]]:
    """One stream: room, sentence, room, ...; returns it and each sentence's (start, end,
    has_wake_word) in samples."""
    rng = np.random.default_rng(seed)
    gap = int(RATE * GAP_S)
    total = gap + sum(len(s) + gap for s, _ in sentences)
    level = float(np.mean([speech_rms(s) for s, _ in sentences]))
    noise_rms = level * 10 ** (-snr_db / 20) if snr_db is not None else 32768 * 10 ** (ROOM_DBFS / 20)
    stream = pink(total, rng) * noise_rms
    spans = []
    pos = gap
    for s, wake in sentences:
        stream[pos : pos + len(s)] += s
        spans.append((pos, pos + len(s), wake))
        pos += len(s) + gap
    return np.clip(stream, -32768, 32767).astype(np.int16), spans


def run_detector(stream: Samples) -> tuple[list[int], float]:
    detector = WakeWordDetector("okay_nabu")
    hits = []
    t0 = time.process_time()
    for i in range(0, len(stream) - 159, 160):
        if detector(stream[i : i + 160]):
            hits.append(i + 160)
    return hits, time.process_time() - t0


def run_vad(stream: Samples) -> float:
    vad = WebRtcVad(2, 30)
    t0 = time.process_time()
    for i in range(0, len(stream) - 479, 480):
        vad(stream[i : i + 480].tobytes())
    return time.process_time() - t0


def run_frontend(stream: Samples, mode: str) -> tuple[float, int]:
    gate = GateSettings(mode=GateMode(mode))
    out: list[GateOutput] = []
    fe = FrontEnd(
        device_rate=RATE,
        settings=listen_settings(gate),
        chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms),
        emit=out.append,
        wake=WakeWordDetector("okay_nabu") if mode == "wake" else None,
    )
    t0 = time.process_time()
    for i in range(0, len(stream) - 159, 160):
        fe.process(stream[i : i + 160])
    return time.process_time() - t0, len(out)


def score(
    hits: list[int], spans: list[tuple[int, int, bool]]
) -> tuple[set[int], int, int]:
    """(indexes of the wake sentences detected, false accepts, detections inside wake
    sentences beyond the first). A detection may land up to 0.5 s past a sentence's end
    (it fires after the word)."""
    late = RATE // 2
    found: set[int] = set()
    false = extra = 0
    for h in hits:
        owner = next((k for k, (a, b, _) in enumerate(spans) if a <= h <= b + late), None)
        if owner is None or not spans[owner][2]:
            false += 1
        elif owner in found:
            extra += 1
        else:
            found.add(owner)
    return found, false, extra


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    before = rss_mb()
    first = WakeWordDetector("okay_nabu")  # loads the TFLite runtime: the memory it costs
    first((pink(RATE * 2, np.random.default_rng(0)) * 3000).astype(np.int16))
    print(f"detector resident memory (TFLite runtime + model): {rss_mb() - before:.1f} MB")
    t0 = time.monotonic()
    wake_voices = [v for v in VOICES for _ in SPEEDS for _ in REQUESTS]
    wake_sentences = [
        synthesize(f"{WAKE}, {req}", voice, speed)
        for voice in VOICES
        for speed in SPEEDS
        for req in REQUESTS
    ]
    other = [synthesize(text, voice, speed) for voice in VOICES for speed in SPEEDS for text in OTHER]
    labelled = [(s, True, v) for s, v in zip(wake_sentences, wake_voices, strict=True)]
    labelled += [(s, False, "") for s in other]
    order = np.random.default_rng(7).permutation(len(labelled))
    labelled = [labelled[k] for k in order]
    sentences: list[tuple[Samples, bool]] = [(s, w) for s, w, _ in labelled]
    per_voice = len(SPEEDS) * len(REQUESTS)
    other_s = sum(len(s) for s in other) / RATE
    print(
        f"corpus: {len(wake_sentences)} sentences with the wake word, {len(other)} without "
        f"({other_s:.0f} s of talk), {len(VOICES)} espeak-ng voices x {len(SPEEDS)} rates; "
        f"synthesized in {time.monotonic() - t0:.1f} s"
    )
    print()
    print(f"{'condition':<12} {'detected':>10} {'false accepts':>14} {'repeats':>8} {'detector CPU':>14} {'VAD CPU':>10}")
    by_voice: dict[str, list[int]] = {}
    for name, snr in (("clean", None), ("20 dB SNR", 20.0), ("10 dB SNR", 10.0)):
        stream, spans = build_stream(sentences, snr, seed=1)
        hits, det_s = run_detector(stream)
        vad_s = run_vad(stream)
        found, false, extra = score(hits, spans)
        audio_s = len(stream) / RATE
        print(
            f"{name:<12} {len(found):>4}/{len(wake_sentences):<5} {false:>14} {extra:>8} "
            f"{det_s / audio_s * 100:>12.3f} % {vad_s / audio_s * 100:>8.3f} %"
        )
        for voice in VOICES:
            got = sum(1 for k in found if labelled[k][2] == voice)
            by_voice.setdefault(voice, []).append(got)
    hours = other_s / 3600
    print(f"(false accepts are over {other_s:.0f} s of talk without the wake word = {hours:.3f} h, plus the room)")
    print(f"detected per voice (of {per_voice}; clean / 20 dB / 10 dB): " + ", ".join(
        f"{v} {'/'.join(map(str, n))}" for v, n in by_voice.items()
    ))
    print()

    # The detector sleeping in a quiet room, and the whole front end per mode.
    quiet = (pink(RATE * 60, np.random.default_rng(3)) * 32768 * 10 ** (-70 / 20)).astype(np.int16)
    _, quiet_s = run_detector(quiet)
    print(f"detector in a quiet room (-70 dBFS, the model sleeps): {quiet_s / 60 * 100:.4f} % of one core")
    talk, _ = build_stream([(s, False) for s in other], 20.0, seed=2)
    audio_s = len(talk) / RATE
    print(f"front end on {audio_s:.0f} s of talk without the wake word at 20 dB SNR (16 kHz device):")
    for mode in ("vad", "wake"):
        cpu, outputs = run_frontend(talk, mode)
        print(f"  mode {mode:<5} {cpu / audio_s * 100:.3f} % of one core, {outputs} outputs")


if __name__ == "__main__":
    main()
