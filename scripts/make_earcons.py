"""Generate the shipped earcons (appliance/data/earcons/*.wav): run once, commit the WAVs.

Each is a short, soft tone figure, 24 kHz mono PCM16, peaking at -9 dBFS: a sine with a
little second and third harmonic for warmth, a 5 ms raised-cosine attack and an
exponential decay ending in a 10 ms fade, so nothing clicks.

    .venv/bin/python scripts/make_earcons.py
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 24000
PEAK = 10 ** (-9 / 20)
OUT = Path(__file__).resolve().parents[1] / "appliance" / "data" / "earcons"

Samples = npt.NDArray[np.float64]


def note(freq: float, ms: float, *, to_freq: float | None = None, decay: float = 4.0) -> Samples:
    n = int(RATE * ms / 1000)
    t = np.arange(n) / RATE
    f = np.full(n, freq) if to_freq is None else np.geomspace(freq, to_freq, n)
    phase = 2 * np.pi * np.cumsum(f) / RATE
    tone = np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.08 * np.sin(3 * phase)
    env = np.exp(-decay * t / (ms / 1000))
    attack = int(RATE * 0.005)
    env[:attack] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    release = int(RATE * 0.010)
    env[-release:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    out: Samples = tone * env
    return out


def gap(ms: float) -> Samples:
    return np.zeros(int(RATE * ms / 1000))


def seq(*parts: Samples) -> Samples:
    return np.concatenate(parts)


SOUNDS: dict[str, Samples] = {
    # "speak now": one quick upward glide
    "listening": note(620, 110, to_freq=990, decay=2.5),
    # the wake word was heard: a bright rising arpeggio
    "wake": seq(note(523.3, 55), note(659.3, 55), note(784.0, 90)),
    # privacy mute on: falling fourth; off: rising fourth
    "mute": seq(note(880.0, 70), note(659.3, 100)),
    "unmute": seq(note(659.3, 70), note(880.0, 100)),
    # something is wrong: two low falling notes
    "error": seq(note(329.6, 120, decay=2.0), gap(30), note(261.6, 170, decay=2.5)),
    # the press held too little audio to send: two short low blips
    "too_short": seq(note(392.0, 50), gap(40), note(392.0, 50)),
    # a timer or alarm rings (repeated, with a pause to speak in): a bright three-note chime,
    # louder than the cues (``PEAKS``), long enough to be heard across a kitchen
    "alarm": seq(
        note(1046.5, 160, decay=3.0), gap(40), note(1318.5, 160, decay=3.0), gap(40),
        note(1568.0, 420, decay=3.5),
    ),
}
PEAKS = {"alarm": 10 ** (-3 / 20)}
"""Per-sound peak where it is not ``PEAK``."""


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, x in SOUNDS.items():
        pcm = np.round(x / np.max(np.abs(x)) * PEAKS.get(name, PEAK) * 32767).astype("<i2")
        with wave.open(str(OUT / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        print(f"{name}.wav: {len(pcm) / RATE * 1000:.0f} ms")


if __name__ == "__main__":
    main()
