"""Prosodic end-of-turn hint: a turn's audio in, P(phrase complete) out, from where its pitch ends.

A request usually ends low: its last syllable falls to the bottom of the speaker's pitch range
(final lowering). A phrase that stops half-way ("set a timer for ...") ends level or high
(continuation intonation), and so does a yes/no question, which then only waits longer. This
tracks the pitch (F0, autocorrelation, 60-400 Hz, in the 70-1000 Hz band) over the turn's
last ``LOOKBACK_S`` and maps where the final pitch lies in that stretch's own range (in
semitones, so any voice) to a probability: at or below its 10th percentile -> complete. The
final pitch is the median of the last 50 ms voiced, and only frames within 25 dB of the
loudest are voiced, so a stray noise frame after the last word is not taken for it. On
``bench.turns``' espeak-ng corpus (thresholds chosen on two of its four voices) it calls 2 of
78 complete requests incomplete and 3 of 38 paused ones complete. It is DSP, not a model:
about 1.5 ms of numpy per pause on x86 (float32, on every 4th sample of the band, and an
autocorrelation only for loud frames), under 1 MB of working memory, nothing per frame. It
knows no words, so it is a cue the endpoint core weighs, not a verdict.

Imports numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

RATE = 16000
_FRAME, _HOP = 640, 160  # 40 ms windows every 10 ms
_LAG_MIN, _LAG_MAX = RATE // 400, RATE // 60
BAND_HZ = (70.0, 1000.0)
"""The band the pitch is tracked in (see ``band``)."""
LOOKBACK_S = 1.5
"""How much of the turn's end the speaker's range and the final pitch are read from."""
MIN_VOICED = 4
"""Voiced 10 ms frames needed for a verdict."""
OUTLIER_ST = 7.0
"""Pitch further than this (semitones) from the median is taken for a tracking error."""
BIAS = 0.07
"""The final position (``final_position``) taken as even odds: about the 10th percentile of
the speaker's range."""
LOUD_DB = 25.0
"""A frame more than this below the loudest of the stretch has no pitch: at 10 dB SNR the
tracker finds one in a lone noise frame after the last word, which became the "final"
pitch (35 dB let 5 of 70 complete requests on ``bench.turns`` end high)."""
END_FRAMES = 5
"""The final pitch is the median of the last this many voiced frames (50 ms): one stray
frame does not decide it."""

_DECIMATE = 4
"""The band ends at 1 kHz, so the tracker works on every 4th sample (4 kHz): the band-pass's
inverse FFT yields them directly, and each frame's spectrum is a 256-point FFT."""
_NFFT = 1024 // _DECIMATE
"""The frames' FFT length at 4 kHz: 1024 at 16 kHz, and a circular autocorrelation that long
is the linear one for every lag up to ``1024 - _FRAME`` (384, past ``_LAG_MAX``)."""
_WINDOW = np.hanning(_FRAME)[::_DECIMATE].astype(np.float32)
_PEAK = 0.45  # the normalized autocorrelation's peak that makes a frame voiced
_BATCH = 32  # frames per FFT call


def band(x: npt.NDArray[np.float32], decimate: int = 1) -> npt.NDArray[np.float32]:
    """``x`` with only ``BAND_HZ`` left: the pitch and its first harmonics. Below it are mains
    hum, brown noise and fans, which are periodic or nearly so and would be tracked as pitch;
    above it is hiss that flattens the autocorrelation's peak. Every ``decimate``-th sample
    (exact: nothing is left above 1 kHz to alias). In float32 (numpy's FFT keeps the precision
    it is given): half the time and memory of float64, the same verdicts."""
    n = len(x)
    spec = np.fft.rfft(x)
    # Bin k is k * RATE / n Hz: keep BAND_HZ[0] <= f <= BAND_HZ[1].
    spec[: -(-int(BAND_HZ[0]) * n // RATE)] = 0.0
    top = int(BAND_HZ[1]) * n // RATE + 1
    m = n // decimate
    out = np.fft.irfft(spec[: min(top, m // 2 + 1)], m) / np.float32(decimate)
    return out.astype(np.float32, copy=False)


def pitch_track(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """F0 in Hz per 10 ms frame of ``pcm`` (0 where unvoiced).

    Only frames within ``LOUD_DB`` of the loudest can be voiced, so only they get an
    autocorrelation: their energies come first, from running sums (the trailing silence of a
    pause and the quiet between words cost nothing)."""
    if len(pcm) < _FRAME:
        return np.zeros(0)
    x = band(pcm[: len(pcm) // _DECIMATE * _DECIMATE].astype(np.float32), _DECIMATE)
    frame, hop = _FRAME // _DECIMATE, _HOP // _DECIMATE
    count = (len(x) - frame) // hop + 1
    # Each frame's energy about its mean, sum(x^2) - sum(x)^2 / n, from running sums
    # (float64: the difference of two large sums).
    s1 = np.concatenate(([0.0], np.cumsum(x, dtype=np.float64)))
    s2 = np.concatenate(([0.0], np.cumsum(np.square(x, dtype=np.float64))))
    at = np.arange(count) * hop
    total = s1[at + frame] - s1[at]
    energy = s2[at + frame] - s2[at] - total * total / frame
    f0 = np.zeros(count)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-LOUD_DB / 10))
    if len(loud) == 0:
        return f0
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    mean = (total / frame).astype(np.float32)
    # A few frames at a time: numpy's FFTs take working memory in proportion to their batch.
    for i in range(0, len(loud), _BATCH):
        some = loud[i : i + _BATCH]
        lags, peak = _period((frames[some] - mean[some, None]) * _WINDOW)
        f0[some] = np.where(peak > _PEAK, RATE / lags, 0.0)
    return f0


def _period(
    frames: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Each windowed 4 kHz frame's period (a 16 kHz lag) and its normalized autocorrelation
    there. The autocorrelation at every 16 kHz lag is the frame's power spectrum, zero-padded
    past the band to 1024 points (numpy's irfft pads), inverse-transformed. (A matrix product
    would give the lags read only, but OpenBLAS's threads make it 100 times slower on a busy
    CPU.)"""
    spec = np.fft.rfft(frames, n=_NFFT, axis=1)
    power = spec.real * spec.real + spec.imag * spec.imag
    ac = np.fft.irfft(power, n=_NFFT * _DECIMATE, axis=1)[:, : _LAG_MAX + 1]
    lags = np.argmax(ac[:, _LAG_MIN:], axis=1) + _LAG_MIN
    peak = ac[np.arange(len(ac)), lags] / np.maximum(ac[:, 0], 1e-9)
    return lags, peak


def final_position(pcm: npt.NDArray[np.int16]) -> float | None:
    """Where the pitch ends within the speaker's own range over the last ``LOOKBACK_S``:
    0 at its 10th percentile, 1 at its 90th, below 0 under it (in semitones, so a voice's
    register does not matter). None with fewer than ``MIN_VOICED`` voiced frames.

    Frames further than ``OUTLIER_ST`` from the median pitch are dropped: they are the
    tracker's octave errors and fricatives taken for a high pitch, which would otherwise
    be the "last" pitch."""
    f0 = pitch_track(pcm[-int(LOOKBACK_S * RATE) :])
    f0 = f0[f0 > 0]
    if len(f0) < MIN_VOICED:
        return None
    semis = 12 * np.log2(f0)
    semis = semis[np.abs(semis - np.median(semis)) < OUTLIER_ST]
    if len(semis) < MIN_VOICED:
        return None
    low, high = np.percentile(semis, [10, 90])
    end = float(np.median(semis[-END_FRAMES:]))
    return (end - float(low)) / max(float(high - low), 1.0)


def complete(pcm: npt.NDArray[np.int16], bias: float = BIAS, scale: float = 0.1) -> float:
    """P(the phrase is complete): the logistic of how low it ends (``final_position``).
    ``bias`` is the position taken as even odds, ``scale`` how sharply it turns. 0.5 when no
    pitch is found."""
    position = final_position(pcm)
    if position is None:
        return 0.5
    return 1.0 / (1.0 + math.exp((position - bias) / scale))
