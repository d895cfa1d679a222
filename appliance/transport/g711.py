"""G.711 (mu-law ``audio/pcmu``, A-law ``audio/pcma``) at 8 kHz: the only module that imports
``audioop``.

The codec itself is the standard library's ``audioop`` (CPython's C implementation of the Sun
tables) on Python 3.11 and 3.12, and its maintained fork ``audioop-lts`` from 3.13 on (the
package installs the same ``audioop`` module; pyproject.toml pulls it in with an environment
marker). Rate conversion between 8 kHz and the daemon's 24 kHz is soxr, as everywhere else.

:class:`G711Encoder` / :class:`G711Decoder` are streaming converters (soxr keeps its filter
state between chunks, so chunk edges do not click); the module-level functions are one-shot
helpers for the simulator. Imports numpy, soxr and audioop.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import numpy.typing as npt
import soxr

if sys.version_info >= (3, 13):  # pragma: no cover - audioop-lts
    import audioop
else:
    with warnings.catch_warnings():
        # 3.11/3.12 warn that audioop leaves the standard library in 3.13 (audioop-lts then).
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

WIRE_RATE = 8_000
"""G.711's sample rate on the wire."""
FORMATS = {"pcmu": "audio/pcmu", "pcma": "audio/pcma"}
"""``[audio] wire_format`` values and the API's ``format.type`` for each."""
QUALITY = "MQ"
"""soxr quality: 'MQ' keeps the 3.4 kHz telephone band clean at a third of 'HQ''s cost."""


def encode(linear: bytes, law: str) -> bytes:
    """PCM16 little-endian (any rate) to G.711 bytes, one per sample."""
    return audioop.lin2ulaw(linear, 2) if law == "pcmu" else audioop.lin2alaw(linear, 2)


def decode(coded: bytes, law: str) -> bytes:
    """G.711 bytes to PCM16 little-endian, two bytes per sample."""
    return audioop.ulaw2lin(coded, 2) if law == "pcmu" else audioop.alaw2lin(coded, 2)


def _check_law(law: str) -> str:
    if law not in FORMATS:
        raise ValueError(f"not a G.711 wire format: {law!r} (expected pcmu or pcma)")
    return law


class G711Encoder:
    """PCM16 mono at ``rate`` to G.711 at 8 kHz, streaming."""

    def __init__(self, law: str, rate: int = 24_000) -> None:
        self.law = _check_law(law)
        self._rate = rate
        self._stream = soxr.ResampleStream(rate, WIRE_RATE, 1, dtype="int16", quality=QUALITY)

    def encode(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Encode a chunk; ``last`` flushes what the filter holds back and starts afresh."""
        samples = np.frombuffer(pcm, dtype="<i2")
        narrow: npt.NDArray[np.int16] = self._stream.resample_chunk(samples, last=last)
        if last:
            self.reset()
        return encode(narrow.astype("<i2").tobytes(), self.law)

    def reset(self) -> None:
        self._stream = soxr.ResampleStream(self._rate, WIRE_RATE, 1, dtype="int16", quality=QUALITY)


class G711Decoder:
    """G.711 at 8 kHz to PCM16 mono at ``rate``, streaming."""

    def __init__(self, law: str, rate: int = 24_000) -> None:
        self.law = _check_law(law)
        self._rate = rate
        self._stream = soxr.ResampleStream(WIRE_RATE, rate, 1, dtype="int16", quality=QUALITY)

    def decode(self, coded: bytes, *, last: bool = False) -> bytes:
        """Decode a chunk; ``last`` flushes the filter's tail and starts afresh."""
        narrow = np.frombuffer(decode(coded, self.law), dtype="<i2")
        wide: npt.NDArray[np.int16] = self._stream.resample_chunk(narrow, last=last)
        if last:
            self.reset()
        return wide.astype("<i2").tobytes()

    def reset(self) -> None:
        self._stream = soxr.ResampleStream(WIRE_RATE, self._rate, 1, dtype="int16", quality=QUALITY)
