"""A simulated room: the agent's voice from the speaker back into the microphone.

The one place that builds echo test signals, for tests/test_aec.py and bench/aec.py alike.
The speaker path is modelled the way cheap Pi hardware behaves: the reply is driven into a
small loudspeaker that clips softly (a ``tanh`` curve), reaches the microphone a fixed delay
later (device buffers plus the air), attenuated and smeared by a short reverberant impulse
response (a direct path plus exponentially decaying diffuse reflections), and the
microphone adds noise. The user's utterances are added on top at a level of their own.

Speech is real: the user is the shipped recording ``appliance/data/speech.wav``; the agent
is synthesized with espeak-ng (a Debian package the test setup installs), a different voice
saying different sentences, so echo and user are easy to tell apart.

Everything is float64 at ``RATE`` (16 kHz, the canceller's rate), full scale = 1.0; levels
are dBFS of the active-speech RMS. Seeded: the same arguments give the same signal.

``run_front_end`` plays a scene through the real capture front end (webrtcvad, the gate
and its echo guard, and the echo canceller fed by a ``ReferenceTap``) on a simulated clock.

Imports: numpy, soxr, ``appliance.config``, and ``appliance.audio`` in ``run_front_end`` (the
front end is what the room exists to test; nothing of the daemon's session or transport);
espeak-ng through subprocess.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import wave
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from appliance.config import GateSettings, ProcessingSettings, listen_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from appliance.audio.aec import EchoCanceller, ReferenceTap

RATE = 16000
Signal = npt.NDArray[np.float64]

AGENT_SENTENCES = (
    "Sure. Today in Paris it is mostly sunny, with a high of twenty one degrees.",
    "There is a light breeze from the west, and no rain is expected before the evening.",
    "If you are heading out tonight, a light jacket should be enough.",
    "Tomorrow looks a little cooler, with clouds moving in during the afternoon.",
    "I can also set a reminder for you, or read you the news headlines.",
    "The museum opens at nine in the morning and closes at six in the evening.",
    "The train to Lyon leaves every hour, and the trip takes about two hours.",
    "Here is a quick recipe: boil the pasta, then add olive oil, garlic and basil.",
    "Your next meeting is at three o'clock, with the design team, in room four.",
    "That song was released in nineteen eighty five and reached number one in France.",
    "I have added milk, eggs and bread to your shopping list.",
    "The timer is set for twelve minutes. I will tell you when it is done.",
)


def db(x: float) -> float:
    return float(10 * np.log10(max(x, 1e-20)))


def active_rms(x: Signal, frame: int = RATE // 50) -> float:
    """RMS over the frames within 30 dB of the loudest one (speech, not its pauses)."""
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    power = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    active = power[power > power.max() * 1e-3]
    return float(np.sqrt(np.mean(active)))


def set_level(x: Signal, dbfs: float) -> Signal:
    """``x`` scaled so its active-speech RMS is ``dbfs``."""
    rms = active_rms(x)
    return x * (10 ** (dbfs / 20) / rms) if rms > 0 else x.copy()


def user_speech() -> Signal:
    """The shipped recording (16 kHz mono), trimmed of its silent ends."""
    with (
        resources.as_file(resources.files("appliance") / "data" / "speech.wav") as path,
        wave.open(str(path), "rb") as wav,
    ):
        if wav.getframerate() != RATE or wav.getnchannels() != 1:
            raise ValueError("speech.wav must be 16 kHz mono")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    x = pcm.astype(np.float64) / 32768
    return trim(x)


def trim(x: Signal, frame: int = RATE // 100) -> Signal:
    """``x`` without leading and trailing frames 40 dB below its loudest frame."""
    n = len(x) // frame
    power = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    loud = np.flatnonzero(power > power.max() * 1e-4)
    return x[loud[0] * frame : (loud[-1] + 1) * frame].copy()


def speech_onset(x: Signal, frame: int = RATE // 100) -> int:
    """Sample index where ``x`` first rises within 20 dB of its loudest 10 ms frame."""
    n = len(x) // frame
    power = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    return int(np.flatnonzero(power > power.max() * 1e-2)[0]) * frame


def synthesize(text: str, voice: str = "en-us+m3", speed: int = 165) -> Signal:
    """``text`` spoken by espeak-ng, at ``RATE``. Raises RuntimeError if it is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    out = subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    # A WAV header (44 bytes) then PCM16 mono at 22050 Hz.
    if out[:4] != b"RIFF":
        raise RuntimeError("espeak-ng did not produce a WAV")
    rate = int.from_bytes(out[24:28], "little")
    pcm = np.frombuffer(out[44 : 44 + (len(out) - 44) // 2 * 2], dtype="<i2")
    return trim(_resample(pcm.astype(np.float64) / 32768, rate, RATE))


def _resample(x: Signal, src: int, dst: int) -> Signal:
    if src == dst:
        return x
    import soxr  # a dependency of the package already

    out: Signal = soxr.resample(x, src, dst, quality="HQ")
    return out


def agent_speech(seconds: float, pause_s: float = 0.6, seed: int = 1) -> Signal:
    """At least ``seconds`` of the agent talking: sentences with short pauses between them,
    in a seeded order, voices and speeds varied a little, at -20 dBFS."""
    rng = np.random.default_rng(seed)
    voices = ("en-us+m3", "en-us+f3", "en+m5", "en-us+f2")
    cache: dict[tuple[int, str, int], Signal] = {}
    parts: list[Signal] = []
    total = 0
    pause = np.zeros(int(pause_s * RATE))
    while total < seconds * RATE:
        i = int(rng.integers(len(AGENT_SENTENCES)))
        voice = voices[int(rng.integers(len(voices)))]
        speed = int(rng.choice((150, 165, 180)))
        key = (i, voice, speed)
        if key not in cache:
            cache[key] = set_level(synthesize(AGENT_SENTENCES[i], voice, speed), -20.0)
        parts += [cache[key], pause]
        total += len(cache[key]) + len(pause)
    return np.concatenate(parts)


@dataclass(frozen=True)
class Room:
    """The acoustic path from the speaker signal to the microphone."""

    delay_ms: float = 60.0
    """Speaker-to-microphone delay (device buffers and air), 20-150 ms."""
    echo_dbfs: float = -20.0
    """Active-speech level of the echo at the microphone."""
    rt60_ms: float = 150.0
    """Reverberation time of the diffuse tail."""
    ir_ms: float = 100.0
    """Length of the impulse response."""
    drr_db: float = 6.0
    """Direct-to-reverberant energy ratio. A speaker a few cm from the microphone is heard
    mostly directly (+10 dB and more); 6 dB is a deliberately reverberant case."""
    drive: float = 2.0
    """Loudspeaker overdrive into the tanh clipper (1: barely clips; 3: audibly distorts)."""
    noise_dbfs: float = -60.0
    """Microphone noise (white, RMS)."""
    seed: int = 7
    """Seeds the impulse response and the noise."""

    @property
    def impulse_response(self) -> Signal:
        rng = np.random.default_rng(self.seed)
        n = int(self.ir_ms * RATE / 1000)
        t = np.arange(n) / RATE
        tail = rng.standard_normal(n) * np.exp(-6.9 * t / (self.rt60_ms / 1000))
        tail[:16] = 0.0  # the first reflections arrive a millisecond after the direct path
        tail *= math.sqrt(10 ** (-self.drr_db / 10) / float(np.sum(tail**2)))
        tail[0] = 1.0
        return tail

    def echo(self, speaker: Signal) -> Signal:
        """What the microphone hears of ``speaker`` (same length, echo level applied)."""
        driven = np.tanh(self.drive * speaker / max(1e-9, np.abs(speaker).max())) / np.tanh(
            self.drive
        )
        wet = np.convolve(driven, self.impulse_response)[: len(speaker)]
        d = int(self.delay_ms * RATE / 1000)
        delayed = np.concatenate((np.zeros(d), wet[: len(wet) - d]))
        return set_level(delayed, self.echo_dbfs)

    def noise(self, n: int) -> Signal:
        rng = np.random.default_rng(self.seed + 1)
        return rng.standard_normal(n) * 10 ** (self.noise_dbfs / 20)


@dataclass
class Scene:
    """A microphone signal with its parts kept apart for measurement."""

    speaker: Signal
    """What the playback device played (the canceller's reference)."""
    echo: Signal
    """The echo part of the microphone signal."""
    user: Signal
    """The user part of the microphone signal (zeros where the user is silent)."""
    noise: Signal
    onsets: list[int] = field(default_factory=list)
    """Sample index where each user utterance's speech begins."""

    @property
    def mic(self) -> Signal:
        return np.clip(self.echo + self.user + self.noise, -1.0, 32767 / 32768)


def scene(
    speaker: Signal,
    room: Room,
    *,
    user_dbfs: float | None = None,
    user_every_s: float = 8.0,
    user_first_s: float = 5.0,
    user: Signal | None = None,
) -> Scene:
    """``speaker`` through ``room``, plus (when ``user_dbfs`` is given) the user utterance
    every ``user_every_s`` seconds from ``user_first_s`` on, while the echo goes on."""
    echo = room.echo(speaker)
    voice = np.zeros(len(speaker))
    onsets: list[int] = []
    if user_dbfs is not None:
        u = set_level(user_speech() if user is None else user, user_dbfs)
        onset = speech_onset(u)
        start = int(user_first_s * RATE)
        while start + len(u) <= len(speaker):
            voice[start : start + len(u)] += u
            onsets.append(start + onset)
            start += int(user_every_s * RATE)
    return Scene(
        speaker=speaker, echo=echo, user=voice, noise=room.noise(len(speaker)), onsets=onsets
    )


def to_pcm16(x: Signal) -> npt.NDArray[np.int16]:
    return np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)


# --- the real capture front end over a scene ----------------------------------------------


@dataclass
class GateRun:
    """What the front end made of a scene."""

    starts: list[int]
    """Microphone sample index at the end of the period in which each turn started."""
    stops: list[int]
    """Microphone sample index at the end of the period in which each turn ended."""
    heard: Signal
    """What the VAD heard: the canceller's output (the microphone itself without one)."""
    cpu_s: float
    """Thread CPU time spent in ``FrontEnd.process`` (canceller included)."""
    canceller_cpu_s: float
    """Of which in the canceller."""


def run_front_end(
    sc: Scene,
    gate: GateSettings,
    processing: ProcessingSettings | None,
    *,
    device_delay_ms: int = 40,
    read_jitter_ms: float = 2.0,
    playing: bool = True,
    make_canceller: Callable[[ReferenceTap, Callable[[], float]], EchoCanceller] | None = None,
) -> GateRun:
    """Play ``sc`` through the real ``FrontEnd`` (webrtcvad, gate, echo guard) and, with
    ``processing``, the real ``EchoCanceller`` fed by a ``ReferenceTap``.

    The devices are simulated at 16 kHz with 10 ms periods on a simulated clock: the player
    writes each period ``device_delay_ms`` before it is heard (and reports that as its ALSA
    delay); the microphone period recorded over [t, t + 10 ms) is read a random 0 to
    ``read_jitter_ms`` after it completed. ``playing`` is the front end's echo-guard flag.
    ``make_canceller`` replaces ``load_canceller`` (to evaluate another module).
    """
    from appliance.audio.aec import ReferenceTap, load_canceller
    from appliance.audio.frontend import FrontEnd, GateOutput, SpeechStarted, SpeechStopped
    from appliance.audio.vad import WebRtcVad
    from appliance.core.listen import Control

    period = RATE // 100
    now = [0.0]
    tap = ReferenceTap(RATE)
    canceller: EchoCanceller | None = None
    if make_canceller is not None:
        canceller = make_canceller(tap, lambda: now[0])
    elif processing is not None:
        canceller = load_canceller(processing, tap, clock=lambda: now[0])
    timed = _Timed(canceller) if canceller is not None else None
    starts: list[int] = []
    stops: list[int] = []
    fed = [0]

    def emit(out: GateOutput) -> None:
        if isinstance(out, SpeechStarted):
            starts.append(fed[0])
        elif isinstance(out, SpeechStopped):
            stops.append(fed[0])

    fe = FrontEnd(
        device_rate=RATE,
        settings=listen_settings(gate),
        chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms),
        emit=emit,
        canceller=timed,
    )
    if playing:
        fe.post(Control.SPEAKER_PLAYING)
    mic = to_pcm16(sc.mic)
    spk = to_pcm16(sc.speaker)
    ahead = RATE * device_delay_ms // 1000
    rng = np.random.default_rng(3)
    written = 0
    cpu = 0.0
    for start in range(0, len(mic) - period + 1, period):
        t = start / RATE
        # The player keeps the device buffer full: what is heard at t + delay is written now.
        while written < min(start + ahead, len(spk)):
            now[0] = t
            written += period
            tap.written(spk[written - period : written], written - start, t)
        now[0] = t + period / RATE + rng.uniform(0, read_jitter_ms / 1000)
        fed[0] = start + period
        t0 = time.thread_time()
        fe.process(mic[start : start + period])
        cpu += time.thread_time() - t0
    if timed is None:
        return GateRun(starts, stops, sc.mic[: fed[0]].copy(), cpu, 0.0)
    out = np.concatenate(timed.heard).astype(np.float64) / 32768
    return GateRun(starts, stops, out, cpu, timed.cpu_s)


class _Timed:
    """The canceller, timed, keeping what it returned."""

    def __init__(self, inner: EchoCanceller) -> None:
        self._inner = inner
        self.heard: list[npt.NDArray[np.int16]] = []
        self.cpu_s = 0.0

    def process(self, mono: np.ndarray) -> np.ndarray:
        t0 = time.thread_time()
        out = self._inner.process(mono)
        self.cpu_s += time.thread_time() - t0
        self.heard.append(out.copy())
        return out

    @property
    def idle(self) -> bool:
        return self._inner.idle

    @property
    def pending(self) -> int:
        return self._inner.pending


def barge_in_latencies(onsets: list[int], starts: list[int], within_s: float = 2.0) -> list[float]:
    """Seconds from each onset to the first turn start after it (inf when none came within
    ``within_s``)."""
    out = []
    for onset in onsets:
        after = [s for s in starts if onset <= s <= onset + within_s * RATE]
        out.append((after[0] - onset) / RATE if after else math.inf)
    return out


def false_starts(onsets: list[int], starts: list[int], user_len: int) -> list[int]:
    """Turn starts that no user utterance explains (outside every [onset, onset + length])."""
    return [s for s in starts if not any(o <= s <= o + user_len for o in onsets)]


def erle(echo: Signal, residual: Signal, window: int = RATE // 2) -> tuple[Signal, Signal]:
    """ERLE in dB per ``window`` (echo power over residual power) and the echo power, for
    a stretch with no user speech; windows where the echo is faint carry no information
    and are NaN."""
    n = min(len(echo), len(residual)) // window
    e = np.mean(echo[: n * window].reshape(n, window) ** 2, axis=1)
    r = np.mean(residual[: n * window].reshape(n, window) ** 2, axis=1)
    curve = 10 * np.log10(e / np.maximum(r, 1e-20))
    curve[e < e.max() * 1e-2] = np.nan
    return curve, e
