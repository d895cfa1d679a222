"""Signal helpers the audio tests share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def window_norms(a: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """The L2 norm of every ``n``-sample window of ``a`` (``len(a) - n + 1`` of them), from a
    running sum: linear time, where ``np.convolve(a**2, ones(n))`` is ``len(a) * n`` (over a
    minute for a few seconds of 24 kHz audio)."""
    power = np.concatenate([[0.0], np.cumsum(a**2)])
    norms: npt.NDArray[np.float64] = np.sqrt(np.maximum(power[n:] - power[: len(power) - n], 0.0))
    return norms


def best_match(haystack: npt.NDArray[np.int16] | npt.NDArray[np.float64],
               needle: npt.NDArray[np.int16] | npt.NDArray[np.float64]) -> float:
    """The highest normalised correlation of ``needle`` anywhere in ``haystack`` (0 when
    the haystack is shorter)."""
    a, b = haystack.astype(np.float64), needle.astype(np.float64)
    if len(a) < len(b):
        return 0.0
    size = 1 << (len(a) + len(b)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    energy = window_norms(a, len(b))
    return float(np.max(corr[: len(energy)] / (energy * np.linalg.norm(b) + 1e-9)))

