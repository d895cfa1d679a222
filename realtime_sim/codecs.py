"""Wire audio formats of the simulated service: decode what clients append, encode replies.

Owns the mapping from a session ``format`` object (``{"type": "audio/pcm", "rate": 24000}``,
``{"type": "audio/pcmu"}``, ``{"type": "audio/pcma"}``) to an :class:`AudioCodec`. Inside the
simulator all audio is PCM16 mono at 24 kHz; codecs convert at the wire boundary only.
G.711 runs at 8 kHz on the wire: the codec is ``audioop`` (the standard library's until
3.12, ``audioop-lts`` from 3.13; imported here, not through the daemon's transport, so the
stand-in and the client cannot share a bug) and the 8 <-> 24 kHz rate
change is soxr, one-shot per chunk (each delta or append is converted on its own, as the
service has no reason to keep filter state across a client's events). New formats plug in
through :data:`CODECS`.

Imports numpy, soxr and audioop; nothing from ``appliance``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Protocol

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

G711_QUALITY = "MQ"
"""soxr quality of the 8 <-> 24 kHz change: keeps the telephone band clean."""

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


def _g711_encode(linear: bytes, law: str) -> bytes:
    return audioop.lin2ulaw(linear, 2) if law == "pcmu" else audioop.lin2alaw(linear, 2)


def _g711_decode(coded: bytes, law: str) -> bytes:
    return audioop.ulaw2lin(coded, 2) if law == "pcmu" else audioop.alaw2lin(coded, 2)


def ulaw_encode(pcm: npt.NDArray[np.int32] | Samples) -> bytes:
    """G.711 mu-law (the standard library's ``audioop``, or ``audioop-lts``)."""
    return _g711_encode(_linear_bytes(pcm), "pcmu")


def ulaw_decode(data: bytes) -> npt.NDArray[np.int32]:
    """G.711 mu-law to linear samples."""
    return np.frombuffer(_g711_decode(data, "pcmu"), dtype="<i2").astype(np.int32)


def alaw_encode(pcm: npt.NDArray[np.int32] | Samples) -> bytes:
    """G.711 A-law (the standard library's ``audioop``, or ``audioop-lts``)."""
    return _g711_encode(_linear_bytes(pcm), "pcma")


def alaw_decode(data: bytes) -> npt.NDArray[np.int32]:
    """G.711 A-law to linear samples."""
    return np.frombuffer(_g711_decode(data, "pcma"), dtype="<i2").astype(np.int32)


def _linear_bytes(pcm: npt.NDArray[np.int32] | Samples) -> bytes:
    clipped = np.clip(np.asarray(pcm, dtype=np.int32), -32768, 32767)
    return clipped.astype("<i2").tobytes()


class G711Codec:
    """``audio/pcmu`` or ``audio/pcma``: one byte per sample at 8 kHz."""

    wire_rate = 8_000
    bytes_per_sample = 1

    def __init__(self, name: str) -> None:
        if name not in ("audio/pcmu", "audio/pcma"):
            raise ValueError(f"not a G.711 format: {name}")
        self.name = name
        self._law = name.removeprefix("audio/")

    def decode(self, data: bytes) -> Samples:
        narrow = np.frombuffer(_g711_decode(data, self._law), dtype="<i2")
        if narrow.size == 0:
            return np.zeros(0, dtype=np.int16)
        wide: Samples = soxr.resample(narrow, self.wire_rate, INTERNAL_RATE, quality=G711_QUALITY)
        return wide.astype(np.int16)

    def encode(self, pcm: Samples) -> bytes:
        x = np.asarray(pcm, dtype=np.int16)
        if x.size % 3:  # whole wire samples: pad with the last sample, as a held value
            x = np.concatenate([x, np.full(3 - x.size % 3, x[-1], dtype=np.int16)])
        narrow = soxr.resample(x, INTERNAL_RATE, self.wire_rate, quality=G711_QUALITY)
        return _g711_encode(narrow.astype("<i2").tobytes(), self._law)


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
