"""The turn-taking corpus: espeak-ng requests (clean and at 10 dB SNR) and room noise.

Written once into a cache directory (``$APPLIANCE_BENCH_CACHE`` or
``~/.cache/appliance-bench/turns-v1``), never into the repo; ``load()`` builds it on first
use. Every clip is 16 kHz mono int16 with its ground truth in samples:

- ``speech``: 40 requests in several voices and rates. Half are complete; half pause
  600-800 ms after an incomplete phrase ("set a timer for" ... "twelve minutes"). Each is
  heard clean (at -26 dBFS active level over a -70 dBFS floor) and at 10 dB SNR over one of
  the room noises (noise at -55 to -40 dBFS RMS). 1.5 s of room before the speech, 3 s after.
- ``noise``: 8 kinds (pink, brown, white, mains hum, fan, air conditioner, two mixtures) at
  five levels from -60 to -40 dBFS RMS, 20 s each (13.3 minutes).

    .venv/bin/python -m bench.turn_corpus      # (re)build the cache and list it
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.wake_corpus import RATE, Samples, synthesize

Floats = npt.NDArray[np.float64]

COMPLETE = (
    "what is the weather like tomorrow",
    "turn off the kitchen lights",
    "how tall is the eiffel tower",
    "play some jazz in the living room",
    "what time is it in Tokyo",
    "remind me to call my sister tonight",
    "how many grams are in a pound",
    "tell me a joke about penguins",
    "stop the music",
    "what is on my calendar today",
)
# (incomplete phrase, rest of the request) spoken with a pause between.
PAUSED = (
    ("set a timer for", "twelve minutes"),
    ("remind me to", "buy milk on the way home"),
    ("what is the capital of", "australia"),
    ("add to the shopping list", "eggs and butter"),
    ("play the song by", "the beatles"),
    ("turn the heating up to", "twenty one degrees"),
    ("how far is it from London to", "Edinburgh"),
    ("send a message to", "my brother saying I am late"),
    ("what is the square root of", "one hundred and forty four"),
    ("set an alarm for", "seven thirty tomorrow"),
)
VOICES = (("en+m3", 150), ("en-us+f3", 175), ("en", 200), ("en-us+m1", 130))
TUNING_VOICES = ("en+m3", "en-us+f3")
"""The voices the end-of-turn hint's thresholds were chosen on; ``bench.turns`` reports the
other two apart, as held-out voices."""
NOISE_KINDS = ("pink", "brown", "white", "hum", "fan", "aircon", "pink+hum", "brown+fan+white")
NOISE_LEVELS = (-60.0, -54.0, -48.0, -45.0, -40.0)
NOISE_S = 20.0
LEAD_S, TAIL_S = 1.5, 3.0
SNR_DB = 10.0
VERSION = "turns-v1"


@dataclass(frozen=True)
class Clip:
    name: str
    kind: str
    """``speech`` or ``noise``."""
    text: str
    noise: str
    """The room noise under it (``none`` for clean speech)."""
    level_db: float
    """Noise RMS level, dBFS."""
    speech: tuple[tuple[int, int], ...]
    """Spoken segments as (first, last) sample; two for a paused request."""
    complete_at: int
    """Sample where the last word ends (0 for noise)."""
    voice: str = ""
    """The espeak-ng voice (``""`` for noise)."""


def request_voice(k: int) -> tuple[str, int]:
    """(voice, rate) of request ``k`` (the number in its clips' names): the complete requests
    come first, two per phrase, then the paused ones, and each pair takes the next voices."""
    half = 2 * len(COMPLETE)
    i, j = divmod(k % half, 2)
    return VOICES[(i + j + (k >= half)) % len(VOICES)]


def cache_dir() -> Path:
    base = os.environ.get("APPLIANCE_BENCH_CACHE") or str(Path.home() / ".cache/appliance-bench")
    return Path(base) / VERSION


def _shaped(rng: np.random.Generator, n: int, slope: float, low_hz: float = 20.0) -> Floats:
    """Gaussian noise whose power falls as f**-slope above ``low_hz`` (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec *= np.where(f < low_hz, 0.0, np.maximum(f, low_hz) ** (-slope / 2))
    out: Floats = np.fft.irfft(spec, n)
    return out


def _hum(rng: np.random.Generator, n: int) -> Floats:
    t = np.arange(n) / RATE
    base = 50.0 + rng.uniform(-0.1, 0.1)
    out = sum(
        (0.7**k) * np.sin(2 * np.pi * base * (k + 1) * t + rng.uniform(0, 6.28)) for k in range(8)
    )
    return np.asarray(out) + 0.02 * _unit(_shaped(rng, n, 1.0))


def _fan(rng: np.random.Generator, n: int) -> Floats:
    t = np.arange(n) / RATE
    blade = rng.uniform(18, 30)
    air = _unit(_shaped(rng, n, 1.5, 40.0)) * (1 + 0.25 * np.sin(2 * np.pi * blade * t))
    motor = 0.3 * np.sin(2 * np.pi * blade * 6 * t) + 0.15 * np.sin(2 * np.pi * 100 * t)
    return np.asarray(air + motor)


def _aircon(rng: np.random.Generator, n: int) -> Floats:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    # A broad hump of airflow around 300 Hz with a hiss above it.
    spec *= np.exp(-(((np.log(np.maximum(f, 1) / 300)) / 0.9) ** 2)) + 0.05 * (f > 2000)
    body: Floats = np.fft.irfft(spec, n)
    return body + 0.2 * _unit(np.sin(2 * np.pi * 60 * np.arange(n) / RATE))


def _unit(x: Floats) -> Floats:
    rms = float(np.sqrt(np.mean(x * x))) or 1.0
    return x / rms


KINDS: dict[str, Callable[[np.random.Generator, int], Floats]] = {
    "pink": lambda r, n: _shaped(r, n, 1.0),
    "brown": lambda r, n: _shaped(r, n, 2.0),
    "white": lambda r, n: r.standard_normal(n),
    "hum": _hum,
    "fan": _fan,
    "aircon": _aircon,
    "pink+hum": lambda r, n: _unit(_shaped(r, n, 1.0)) + 0.7 * _unit(_hum(r, n)),
    "brown+fan+white": lambda r, n: (
        _unit(_shaped(r, n, 2.0)) + _unit(_fan(r, n)) + 0.3 * r.standard_normal(n)
    ),
}


def noise(kind: str, level_db: float, n: int, seed: int) -> Floats:
    """``n`` samples of ``kind`` at ``level_db`` dBFS RMS (full scale = 32768)."""
    x = _unit(KINDS[kind](np.random.default_rng(seed), n))
    return x * 32768.0 * 10 ** (level_db / 20)


def active_rms(pcm: Floats) -> float:
    """RMS over the 10 ms frames within 40 dB of the loudest (speech, not its gaps)."""
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames * frames, axis=1)
    return float(np.sqrt(np.mean(power[power > power.max() * 1e-4])))


def _to_int16(x: Floats) -> Samples:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def _speech_clips() -> list[tuple[Clip, Samples]]:
    out: list[tuple[Clip, Samples]] = []
    rng = np.random.default_rng(17)
    requests: list[tuple[str, list[Samples], float]] = []
    for text in COMPLETE:
        for _ in range(2):
            voice, speed = request_voice(len(requests))
            requests.append((text, [synthesize(text, voice, speed)], 0.0))
    for head, tail in PAUSED:
        for _ in range(2):
            voice, speed = request_voice(len(requests))
            # The comma gives the head espeak-ng's continuation intonation, as a speaker's
            # "set a timer for ..." has.
            parts = [synthesize(head + ",", voice, speed), synthesize(tail, voice, speed)]
            requests.append((f"{head} ... {tail}", parts, rng.uniform(0.6, 0.8)))
    for k, (text, parts, pause_s) in enumerate(requests):
        dry, segments = _lay_out(parts, pause_s)
        speech_level = active_rms(dry)
        for cond in ("clean", "noisy"):
            if cond == "clean":
                kind, level = "white", -70.0
                gain = 32768 * 10 ** (-26 / 20) / speech_level
            else:
                kind = NOISE_KINDS[k % len(NOISE_KINDS)]
                level = float(rng.uniform(-55, -40))
                gain = 32768 * 10 ** ((level + SNR_DB) / 20) / speech_level
            mix = dry * gain + noise(kind, level, len(dry), seed=1000 + k)
            clip = Clip(
                name=f"speech-{k:02d}-{cond}",
                kind="speech",
                text=text,
                noise="none" if cond == "clean" else kind,
                level_db=round(level, 1),
                speech=segments,
                complete_at=segments[-1][1],
                voice=request_voice(k)[0],
            )
            out.append((clip, _to_int16(mix)))
    return out


def _lay_out(parts: list[Samples], pause_s: float) -> tuple[Floats, tuple[tuple[int, int], ...]]:
    """The parts with ``pause_s`` between them (from the end of one's speech to the start of
    the next), ``LEAD_S`` of room before and ``TAIL_S`` after; and where each part's speech
    lies."""
    margin = RATE * 50 // 1000  # synthesize() keeps 50 ms around the loud samples
    lead = int(LEAD_S * RATE)
    pieces: list[Floats] = [np.zeros(lead)]
    segments: list[tuple[int, int]] = []
    pos = lead
    for p, part in enumerate(parts):
        if p:
            gap = int(pause_s * RATE) - 2 * margin
            pieces.append(np.zeros(gap))
            pos += gap
        segments.append((pos + margin, pos + len(part) - margin))
        pieces.append(part.astype(np.float64))
        pos += len(part)
    pieces.append(np.zeros(int(TAIL_S * RATE)))
    return np.concatenate(pieces), tuple(segments)


SWEEP_KINDS = ("pink", "white", "hum", "fan", "aircon", "brown+fan+white")
SWEEP_LEVEL_DB = -48.0
SWEEP_PAUSE_S = 0.7


def sweep() -> list[tuple[Clip, Samples]]:
    """A wider check than the corpus, built in memory (``bench.turns --sweep``): every phrase,
    complete and paused (a 0.7 s pause), in every voice, clean and over six noises at
    -48 dBFS with the speech 10 dB above, on noise seeds the corpus does not use (560 clips)."""
    out: list[tuple[Clip, Samples]] = []
    requests: list[tuple[str, list[str]]] = [(t, [t]) for t in COMPLETE]
    requests += [(f"{head} ... {tail}", [head + ",", tail]) for head, tail in PAUSED]
    for text, words in requests:
        for voice, speed in VOICES:
            dry, segments = _lay_out([synthesize(w, voice, speed) for w in words], SWEEP_PAUSE_S)
            speech_level = active_rms(dry)
            for kind in ("none", *SWEEP_KINDS):
                level = -70.0 if kind == "none" else SWEEP_LEVEL_DB
                gain = 32768 * 10 ** ((-26 if kind == "none" else level + SNR_DB) / 20)
                seed = 7000 + len(out)
                mix = dry * gain / speech_level + noise(
                    "white" if kind == "none" else kind, level, len(dry), seed
                )
                clip = Clip(f"sweep-{len(out)}", "speech", text, kind, level, segments,
                            segments[-1][1], voice)
                out.append((clip, _to_int16(mix)))
    return out


def _noise_clips() -> list[tuple[Clip, Samples]]:
    out: list[tuple[Clip, Samples]] = []
    n = int(NOISE_S * RATE)
    for i, kind in enumerate(NOISE_KINDS):
        for j, level in enumerate(NOISE_LEVELS):
            pcm = _to_int16(noise(kind, level, n, seed=100 * i + j))
            clip = Clip(f"noise-{kind}-{-level:.0f}", "noise", "", kind, level, (), 0)
            out.append((clip, pcm))
    return out


def build(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for clip, pcm in _speech_clips() + _noise_clips():
        np.save(directory / f"{clip.name}.npy", pcm)
        index.append(asdict(clip))
    (directory / "index.json").write_text(json.dumps(index, indent=1))


def load(directory: Path | None = None) -> list[tuple[Clip, Samples]]:
    """Every clip with its samples, building the cache first if it is not there."""
    directory = directory or cache_dir()
    if not (directory / "index.json").exists():
        build(directory)
    out = []
    for entry in json.loads((directory / "index.json").read_text()):
        entry["speech"] = tuple(tuple(s) for s in entry["speech"])
        if entry["kind"] == "speech" and not entry.get("voice"):  # a cache from before voices
            entry["voice"] = request_voice(int(entry["name"].split("-")[1]))[0]
        clip = Clip(**entry)
        out.append((clip, np.load(directory / f"{clip.name}.npy")))
    return out


def main() -> None:
    directory = cache_dir()
    build(directory)
    clips = load(directory)
    speech = [c for c, _ in clips if c.kind == "speech"]
    noise_s = sum(len(p) for c, p in clips if c.kind == "noise") / RATE
    print(f"{directory}: {len(speech)} speech clips, {noise_s / 60:.1f} min of noise")


if __name__ == "__main__":
    main()
