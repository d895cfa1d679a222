"""Prosodic end-of-turn hint: a turn's audio in, P(phrase complete) out, from its last pitch.

A phrase that ends a request usually ends on a falling pitch; one that stops half-way ("set a
timer for ...") ends level or rising (continuation intonation). This reads the pitch (F0,
autocorrelation, 60-400 Hz) of the last voiced stretch before the pause and maps its slope in
semitones per second to a probability: falling -> complete. It is DSP, not a model: a few
milliseconds of numpy per pause, nothing per frame. It knows no words, so it is a cue the
endpoint core weighs, not a verdict.

Imports numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

RATE = 16000
_FRAME, _HOP = 640, 160  # 40 ms windows every 10 ms
_LAG_MIN, _LAG_MAX = RATE // 400, RATE // 60
LOOKBACK_S = 1.5
"""How much of the turn's end is searched for its last voiced stretch."""


def pitch_track(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """F0 in Hz per 10 ms frame of ``pcm`` (0 where unvoiced)."""
    x = pcm.astype(np.float64)
    if len(x) < _FRAME:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_HOP]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames * frames, axis=1)
    spec = np.fft.rfft(frames * np.hanning(_FRAME), n=2 * _FRAME, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : _LAG_MAX + 1]
    ac = ac / np.maximum(ac[:, :1], 1e-9)
    lags = np.argmax(ac[:, _LAG_MIN:], axis=1) + _LAG_MIN
    peak = ac[np.arange(len(ac)), lags]
    loud = energy > energy.max() * 10 ** (-35 / 10)
    return np.where((peak > 0.45) & loud, RATE / lags, 0.0)


def final_slope(pcm: npt.NDArray[np.int16], tail_ms: int = 400) -> float | None:
    """Pitch slope (semitones/s) of the voiced frames in the last ``tail_ms`` before the
    last voiced frame, or None with fewer than 4 of them."""
    f0 = pitch_track(pcm[-int(LOOKBACK_S * RATE) :])
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) < 4:
        return None
    idx = voiced[voiced > voiced[-1] - tail_ms // 10]
    if len(idx) < 4:
        return None
    semis = 12 * np.log2(f0[idx])
    # Fold octave errors (the tracker's usual mistake) back next to the median.
    med = float(np.median(semis))
    semis = semis - 12 * np.round((semis - med) / 12)
    return float(np.polyfit(idx * (_HOP / RATE), semis, 1)[0])


def complete(pcm: npt.NDArray[np.int16], scale: float = 8.0, bias: float = -8.0) -> float:
    """P(the phrase is complete): the logistic of a falling slope. ``bias`` (semitones/s) is
    the slope taken as even odds; ``scale`` how sharply it turns. 0.5 when no pitch is found."""
    slope = final_slope(pcm)
    if slope is None:
        return 0.5
    return 1.0 / (1.0 + math.exp((slope - bias) / scale))
