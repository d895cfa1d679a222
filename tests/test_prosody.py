"""The prosodic end-of-turn hint on generated voiced sound and on espeak-ng speech: a phrase
that ends at the bottom of its pitch range reads complete, one that ends high (rising) or
half-way incomplete; the cheap tracker finds what a plain float64 one does."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from appliance.audio import prosody
from bench.turn_corpus import active_rms, noise
from bench.wake_corpus import synthesize

RATE = 16000


def glide(f_from: float, f_to: float, seconds: float = 0.6) -> np.ndarray:
    """A vowel-like harmonic tone whose pitch glides from ``f_from`` to ``f_to`` Hz."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = f_from + (f_to - f_from) * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = sum((0.6**k) * np.sin((k + 1) * phase) for k in range(6))
    pcm = np.concatenate([np.asarray(tone) * 6000, np.zeros(RATE // 4)])
    return pcm.astype(np.int16)


def test_pitch_track_follows_a_steady_tone() -> None:
    f0 = prosody.pitch_track(glide(150, 150))
    voiced = f0[f0 > 0]
    assert len(voiced) > 40
    assert np.median(voiced) == pytest.approx(150, rel=0.03)


def test_falling_pitch_reads_complete_and_rising_incomplete() -> None:
    falling = prosody.final_position(glide(220, 120))
    rising = prosody.final_position(glide(140, 190))
    assert falling is not None and falling < 0.0
    assert rising is not None and rising > 0.9
    assert prosody.complete(glide(220, 120)) > 0.7
    assert prosody.complete(glide(140, 190)) < 0.3


def test_the_end_is_judged_against_the_speakers_range_not_a_fixed_pitch() -> None:
    # A phrase that rose and came back down to where it began ends at the bottom of its
    # range; one that dipped and rose again ends at the top, both at 150 Hz.
    down = np.concatenate([glide(150, 210, 0.5)[: RATE // 2], glide(210, 150)])
    up = np.concatenate([glide(150, 100, 0.5)[: RATE // 2], glide(100, 150)])
    assert prosody.complete(down) > 0.7
    assert prosody.complete(up) < 0.3


def test_noise_has_no_pitch_and_gives_even_odds() -> None:
    # Brown noise's low rumble reads as a pitch without the band (``prosody.BAND_HZ``).
    for kind in ("pink", "brown", "hum", "fan"):
        pcm = noise(kind, -40.0, RATE, seed=5).astype(np.int16)
        assert prosody.final_position(pcm) is None, kind
        assert prosody.complete(pcm) == 0.5


def reference_track(pcm: np.ndarray) -> np.ndarray:
    """The tracker in plain float64 at 16 kHz, every frame (as it was before it was made
    cheap): what ``prosody.pitch_track`` must still find."""
    x = pcm.astype(np.float64)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    spec[(f < prosody.BAND_HZ[0]) | (f > prosody.BAND_HZ[1])] = 0.0
    x = np.fft.irfft(spec, len(x))
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::160]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames * frames, axis=1)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames * np.hanning(640), n=1280, axis=1)) ** 2)
    lags = np.argmax(ac[:, 40:267], axis=1) + 40
    peak = ac[np.arange(len(ac)), lags] / np.maximum(ac[:, 0], 1e-9)
    loud = energy > energy.max() * 10 ** (-prosody.LOUD_DB / 10)
    f0: np.ndarray = np.where((peak > 0.45) & loud, RATE / lags, 0.0)
    return f0


def speech(text: str, voice: str, speed: int, kind: str = "", level: float = -50.0) -> np.ndarray:
    """espeak-ng's ``text`` and 150 ms of room after it (over ``kind`` noise at 10 dB SNR)."""
    x = np.concatenate([synthesize(text, voice, speed), np.zeros(RATE * 150 // 1000)])
    x = x.astype(np.float64)
    if kind:
        x = x * 32768 * 10 ** ((level + 10) / 20) / active_rms(x)
        x = x + noise(kind, level, len(x), seed=3)
    pcm: np.ndarray = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return pcm


@pytest.mark.parametrize("voice", ["en+m3", "en-us+m1"])
def test_the_cheap_tracker_finds_the_pitch_the_plain_one_does(voice: str) -> None:
    pcm = speech("what is the square root of, one hundred", voice, 150, "pink")[-24000:]
    fast, plain = prosody.pitch_track(pcm), reference_track(pcm)
    assert len(fast) == len(plain) and np.count_nonzero(plain) > 40
    assert np.count_nonzero(fast != plain) <= 2  # near-ties of the peak in float32


def test_a_pause_costs_under_a_megabyte() -> None:
    pcm = speech("remind me to call my sister tonight", "en", 200, "fan")[-24000:]
    prosody.complete(pcm)  # numpy's FFT plans are made once
    tracemalloc.start()
    try:
        prosody.complete(pcm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # it was 6.2 MB in float64 with every frame in one batch


def test_a_faint_sound_after_the_last_word_is_not_its_pitch() -> None:
    # A phrase falling to the bottom of its range, then 50 ms of quiet and a faint (30 dB
    # down) tone at the top of it, as a noise frame the tracker finds periodic: read from
    # frames 35 dB down, that was the "final" pitch and the phrase waited 1000 ms.
    tail = glide(190, 190, 0.04)[: RATE * 40 // 1000] // 32
    pcm = np.concatenate([glide(220, 120)[: int(0.6 * RATE)], np.zeros(RATE // 20, np.int16),
                          tail, np.zeros(RATE // 10, np.int16)])
    assert prosody.complete(pcm) > 0.7


@pytest.mark.parametrize(
    ("text", "voice", "speed", "kind"),
    [
        ("what is the weather like tomorrow", "en+m3", 150, "pink"),
        # These two were called incomplete (1000 ms) by the hint that took the final pitch
        # as the mean of the last 30 ms voiced, frames 35 dB down: a faint tail, a last rise.
        ("what time is it in Tokyo", "en-us+f3", 175, ""),
        ("what is on my calendar today", "en-us+f3", 175, ""),
    ],
)
def test_a_complete_request_reads_complete(text: str, voice: str, speed: int, kind: str) -> None:
    assert prosody.complete(speech(text, voice, speed, kind)[-24000:]) > 0.5


@pytest.mark.parametrize(
    ("head", "voice", "speed"),
    [("set a timer for,", "en+m3", 150), ("what is the capital of,", "en-us+m1", 130),
     ("remind me to,", "en", 200), ("send a message to,", "en-us+f3", 175)],
)
def test_an_unfinished_phrase_reads_incomplete(head: str, voice: str, speed: int) -> None:
    assert prosody.complete(speech(head, voice, speed)[-24000:]) < 0.5
