"""Wire audio formats of the simulated service: decode what clients append, encode replies.

Owns the mapping from a session ``format`` object (``{"type": "audio/pcm", "rate": 24000}``,
``{"type": "audio/pcmu"}``, ``{"type": "audio/pcma"}``) to an :class:`AudioCodec`. Inside the
simulator all audio is PCM16 mono at 24 kHz; codecs convert at the wire boundary only.
G.711 runs at 8 kHz on the wire: decoding upsamples by linear interpolation, encoding
averages each 3 samples before decimating (crude, but the simulator only measures energy
and echoes audio back). New formats plug in through :data:`CODECS`.

Imports numpy only.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

INTERNAL_RATE = 24_000
"""Sample rate of all audio inside the simulator (PCM16 mono)."""

Samples = npt.NDArray[np.int16]


class AudioCodec(Protocol):
    """Converts between one wire format and internal PCM16 at 24 kHz."""

    name: str
    """The format's ``type`` string, e.g. ``audio/pcmu``."""
    wire_rate: int
    """Samples per second on the wire."""
    bytes_per_sample: int
    """Bytes per wire sample; appended data must hold whole samples."""

    def decode(self, data: bytes) -> Samples:
        """Wire bytes to PCM16 at 24 kHz."""
        ...

    def encode(self, pcm: Samples) -> bytes:
        """PCM16 at 24 kHz to wire bytes."""
        ...


class Pcm16Codec:
    """``audio/pcm``: little-endian PCM16 mono at 24 kHz, i.e. the internal format itself."""

    name = "audio/pcm"
    wire_rate = INTERNAL_RATE
    bytes_per_sample = 2

    def decode(self, data: bytes) -> Samples:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def encode(self, pcm: Samples) -> bytes:
        return pcm.astype("<i2").tobytes()


def _upsample3(x: npt.NDArray[np.float64]) -> Samples:
    if x.size == 0:
        return np.zeros(0, dtype=np.int16)
    positions = np.arange(x.size * 3, dtype=np.float64) / 3.0
    y = np.interp(positions, np.arange(x.size, dtype=np.float64), x)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _downsample3(pcm: Samples) -> npt.NDArray[np.int32]:
    x = pcm.astype(np.int32)
    if x.size % 3:
        x = np.concatenate([x, np.full(3 - x.size % 3, x[-1], dtype=np.int32)])
    narrow: npt.NDArray[np.int32] = np.rint(x.reshape(-1, 3).mean(axis=1)).astype(np.int32)
    return narrow


_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def ulaw_encode(pcm: npt.NDArray[np.int32] | Samples) -> bytes:
    """G.711 mu-law, the classic Sun ``linear2ulaw`` vectorised."""
    x = np.asarray(pcm, dtype=np.int32)
    sign = (x < 0).astype(np.int32)
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.frexp(magnitude.astype(np.float64))[1].astype(np.int32) - 8
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = ~((sign << 7) | (exponent << 4) | mantissa) & 0xFF
    return code.astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int32]:
    """G.711 mu-law to linear, Sun ``ulaw2linear``."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _ULAW_BIAS) << exponent
    magnitude -= _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude)


def alaw_encode(pcm: npt.NDArray[np.int32] | Samples) -> bytes:
    """G.711 A-law, Sun ``linear2alaw`` vectorised."""
    x = np.asarray(pcm, dtype=np.int32) >> 3
    negative = x < 0
    mask = np.where(negative, 0x55, 0xD5)
    x = np.where(negative, -x - 1, x)
    seg = np.searchsorted(_ALAW_SEG_END, x, side="left").astype(np.int32)
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((x >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return (aval ^ mask).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> npt.NDArray[np.int32]:
    """G.711 A-law to linear, Sun ``alaw2linear``."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t)


class G711Codec:
    """``audio/pcmu`` or ``audio/pcma``: one byte per sample at 8 kHz."""

    wire_rate = 8_000
    bytes_per_sample = 1

    def __init__(self, name: str) -> None:
        if name not in ("audio/pcmu", "audio/pcma"):
            raise ValueError(f"not a G.711 format: {name}")
        self.name = name
        self._mu = name == "audio/pcmu"

    def decode(self, data: bytes) -> Samples:
        linear = ulaw_decode(data) if self._mu else alaw_decode(data)
        return _upsample3(linear.astype(np.float64))

    def encode(self, pcm: Samples) -> bytes:
        narrow = _downsample3(pcm)
        return ulaw_encode(narrow) if self._mu else alaw_encode(narrow)


CODECS: dict[str, AudioCodec] = {
    "audio/pcm": Pcm16Codec(),
    "audio/pcmu": G711Codec("audio/pcmu"),
    "audio/pcma": G711Codec("audio/pcma"),
}
"""Every wire format the simulator accepts, by ``format.type``."""


def codec_for(audio_format: dict[str, Any]) -> AudioCodec:
    """The codec for a (validated) session format object."""
    return CODECS[str(audio_format["type"])]


def duration_ms(samples: int) -> float:
    """Milliseconds of internal audio in ``samples`` samples."""
    return samples * 1000.0 / INTERNAL_RATE
