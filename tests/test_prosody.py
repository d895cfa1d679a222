"""The prosodic end-of-turn hint on generated voiced sound: a phrase that ends at the bottom
of its pitch range reads complete, one that ends high (rising) incomplete."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.audio import prosody
from bench.turn_corpus import noise

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
