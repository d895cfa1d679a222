"""Synthesized speech for the wake-word tests and benchmark (espeak-ng, 16 kHz mono).

The build machine has no microphone and no internet, so the recordings are made with
Debian's espeak-ng (``scripts/setup.sh test`` installs it) and resampled with soxr. The
tests use the small clips this module wrote into ``tests/data/wake/`` (checked in, so the
tests do not depend on the synthesizer's version); the benchmark synthesizes its larger set
each run. Rewrite the test clips with:

    .venv/bin/python -m bench.wake_corpus tests/data/wake
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

RATE = 16000
Samples = npt.NDArray[np.int16]

# espeak-ng voices (language + variant) and speaking rates (words per minute).
VOICES = ("en+m3", "en", "en-us", "en+f3", "en-us+m1", "en+f4")
SPEEDS = (140, 170)
WAKE = "okay nabu"
REQUESTS = (
    "what is the weather like in Paris today",
    "set a timer for ten minutes",
    "play some jazz in the kitchen",
    "how tall is the eiffel tower",
    "turn off the lights",
)
# Everyday talk with no wake word (some with near misses) for false accepts.
OTHER = (
    "I think we should go to the cinema tonight",
    "can you pass me the salt please",
    "the train to Nottingham leaves at nine",
    "okay, but not now",
    "a banana and a nap after lunch",
    "did you call your mother about the weekend",
    "nobody knows what happened to the old bakery",
    "okay let me check the calendar",
    "the news at nine said it will rain",
    "we need more coffee and some bread",
)
TEST_CLIPS = {
    "okay_nabu": (WAKE, "en+m3", 150),
    "chatter": ("I think we should go to the cinema tonight", "en+m3", 160),
    "follow_up": ("and what about tomorrow", "en+m3", 160),
}


def synthesize(text: str, voice: str = "en+m3", speed: int = 150) -> Samples:
    """``text`` spoken by espeak-ng, 16 kHz mono int16, silence trimmed to 50 ms."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing: scripts/setup.sh test installs it")
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    out = soxr.resample(pcm, rate, RATE).astype(np.int16)
    return trim(out)


def trim(pcm: Samples, margin_ms: int = 50) -> Samples:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    if not len(loud):
        return pcm
    m = RATE * margin_ms // 1000
    return pcm[max(0, loud[0] - m) : loud[-1] + m]


def write_wav(path: Path, pcm: Samples) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: Path) -> Samples:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/wake")
    out.mkdir(parents=True, exist_ok=True)
    for name, (text, voice, speed) in TEST_CLIPS.items():
        pcm = synthesize(text, voice, speed)
        write_wav(out / f"{name}.wav", pcm)
        print(f"{out / name}.wav: {text!r}, {voice}, {speed} wpm, {len(pcm) / RATE:.2f} s")


if __name__ == "__main__":
    main()
