"""The echo's delay behind the reference, measured, and the reference read at a drifting position.

``EchoDelay`` keeps the last ``WINDOW_S`` of the microphone and ``WINDOW_S + MAX_DELAY_S``
of the reference the linear canceller was given, and measures by GCC-PHAT (the
cross-correlation with every frequency weighted alike, whose peak is sharp on speech and
left alone by a stationary room noise) how far the echo lies behind the reference, to a
fraction of a sample (a parabola through the peak). ``appliance.core.drift.DriftFit`` turns
those into a rate.

``FractionalReader`` reads the reference from a fractional ring position: the 16 samples
around it through a windowed-sinc interpolator (flat to about 6 kHz, where speech has
little energy left at 16 kHz), so a position that moves by a hundredth of a sample per
frame moves the reference by that much, not by a whole sample now and then.

Both run on the capture thread, only while the speaker sounds; a measurement costs two real
FFTs of 16384 points (about 1 ms here, a few times a second).

Imports: numpy, ``appliance.audio.reference``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from appliance.audio.reference import FRAME, RATE, ReferenceTap, Samples

WINDOW_S = 0.5  # the microphone compared
MAX_DELAY_S = 0.25  # the echo's delay behind the reference looked for (the MDF's tail)
_WINDOW = int(WINDOW_S * RATE)
_MAX_DELAY = int(MAX_DELAY_S * RATE)
_FFT = 1 << math.ceil(math.log2(2 * _WINDOW + _MAX_DELAY))
TAPS = 16  # the interpolator's length (even)
_PHASES = 64  # the fractional positions it is tabulated for


class EchoDelay:
    """The echo's delay (samples) behind the reference over the last ``WINDOW_S``."""

    def __init__(self) -> None:
        self._mic = np.zeros(_WINDOW, dtype=np.float32)
        self._far = np.zeros(_WINDOW + _MAX_DELAY, dtype=np.float32)
        self._mic_at = 0  # ring positions of the next frame
        self._far_at = 0
        self.frames = 0  # frames kept since the last clear
        bins = np.arange(_FFT // 2 + 1)
        self._omega = 2 * np.pi * bins / _FFT  # radians per sample
        self._band = slice(math.ceil(200 * _FFT / RATE), 3500 * _FFT // RATE + 1)

    def clear(self) -> None:
        self._mic[:] = 0
        self._far[:] = 0
        self.frames = 0

    def add(self, mic: Samples, far: Samples) -> None:
        """The microphone frame and the reference frame handed with it."""
        _put(self._mic, self._mic_at, mic)
        _put(self._far, self._far_at, far)
        self._mic_at = (self._mic_at + FRAME) % len(self._mic)
        self._far_at = (self._far_at + FRAME) % len(self._far)
        self.frames += 1

    def measure(self) -> tuple[float, float]:
        """(delay in samples, peak quality 0-1) of the echo behind the reference."""
        mic = np.roll(self._mic, -self._mic_at)
        far = np.roll(self._far, -self._far_at)
        cross = np.fft.rfft(far, _FFT) * np.conj(np.fft.rfft(mic, _FFT))
        weight = np.abs(cross)
        phat = cross / (weight + 1e-9)
        corr = np.fft.irfft(phat, _FFT)
        # corr[k]: the microphone against the reference from sample k on; the microphone's
        # window ends with the reference's, so the echo's delay is _MAX_DELAY - k.
        k = int(np.argmax(corr[: _MAX_DELAY + 1]))
        peak = float(corr[k])
        # The fraction of a sample from the slope of the cross-spectrum's phase once the
        # whole samples are taken out (a parabola through the peak is biased by up to a
        # fifth of a sample, which the kept filter cannot take: a tenth of a sample off is
        # about 12 dB less cancelled at 3 kHz), over the band where speech has its energy,
        # each bin weighted by its cross power.
        band = self._band
        omega = self._omega[band]
        rest = phat[band] * np.exp(1j * k * omega)
        w = weight[band] * omega
        frac = -float(np.dot(w, np.angle(rest))) / float(np.dot(w, omega) + 1e-12)
        return _MAX_DELAY - (k + max(-1.0, min(1.0, frac))), peak

def _put(ring: npt.NDArray[np.float32], at: int, frame: Samples) -> None:
    ring[at : at + len(frame)] = frame


def _table() -> npt.NDArray[np.float32]:
    """Windowed-sinc interpolators: row p delays by p / _PHASES of a sample less than
    row 0, i.e. reads ``p / _PHASES`` later."""
    k = np.arange(TAPS) - (TAPS // 2 - 1)  # tap j reads sample pos + k[j]
    window = np.hanning(TAPS + 2)[1:-1]
    rows = [np.sinc(k - p / _PHASES) * window for p in range(_PHASES)]
    table: npt.NDArray[np.float32] = np.array(rows, dtype=np.float32)
    table /= table.sum(axis=1, keepdims=True)
    return table


class FractionalReader:
    """The reference read from a fractional ring position (see the module docstring)."""

    def __init__(self) -> None:
        self._taps = _table()
        self._span: Samples = np.zeros(FRAME + TAPS - 1, dtype=np.int16)
        self._f32 = np.zeros(FRAME + TAPS - 1, dtype=np.float32)
        # Row n: the TAPS samples around output sample n (a view: no copy per frame).
        self._rows = np.lib.stride_tricks.sliding_window_view(self._f32, TAPS)
        self._out = np.zeros(FRAME, dtype=np.float32)

    def read(self, tap: ReferenceTap, at: float, out: Samples, pos: float) -> bool:
        """Fill ``out`` with the reference from ring position ``pos`` (see
        ``ReferenceTap.read``, whose ``at`` this passes on). Returns False if all silence."""
        whole = math.floor(pos)
        phase = round((pos - whole) * _PHASES)
        if phase == _PHASES:
            whole, phase = whole + 1, 0
        if phase == 0:
            return tap.read(at, out, whole)
        if not tap.read(at, self._span, whole - (TAPS // 2 - 1)):
            out[:] = 0
            return False
        np.copyto(self._f32, self._span)
        acc = np.matmul(self._rows, self._taps[phase], out=self._out)
        np.rint(acc, out=acc)
        np.clip(acc, -32768, 32767, out=acc)
        np.copyto(out, acc, casting="unsafe")
        return True
