"""The daemon's G.711 path checked against an independent codec: sox (Debian ``sox``).

Both directions, both laws: what sox encodes, the daemon decodes to the very samples sox
decodes it to; what the daemon encodes, sox decodes to the signal within G.711's own
quantisation; and the streaming 24 kHz <-> 8 kHz path of ``appliance.transport.wire``
(``G711Encoder`` / ``G711Decoder``) carries a tone through sox with telephone quality.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from appliance.transport import g711

SOX = shutil.which("sox")
if SOX is None:  # scripts/setup.sh test installs it; a run without it is a broken setup
    raise RuntimeError("sox is not installed: run scripts/setup.sh test")
LAWS = [("pcmu", "mu-law"), ("pcma", "a-law")]
RAW16 = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]


def sox(args_in: list[str], args_out: list[str], data: bytes) -> bytes:
    assert SOX is not None
    done = subprocess.run([SOX, *args_in, "-", *args_out, "-"], input=data, capture_output=True, check=True)
    return done.stdout


def law_args(name: str) -> list[str]:
    return ["-t", "raw", "-r", "8000", "-e", name, "-b", "8", "-c", "1"]


def ramp() -> npt.NDArray[np.int16]:
    """Every 7th value of the 16-bit range: all segments of both laws, their edges too."""
    return np.arange(-32768, 32768, 7, dtype=np.int64).astype("<i2")


def tone(rate: int, seconds: float = 1.0, hz: float = 1000.0, dbfs: float = -6.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(32767 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype("<i2")


def snr_db(samples: npt.NDArray[Any], rate: int, hz: float = 1000.0) -> float:
    """How far ``samples`` are from the best-fitting sine at ``hz`` (delay-independent)."""
    x = samples.astype(np.float64)
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t), np.ones_like(t)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, x, rcond=None)
    residual = x - basis @ fit
    return float(10 * np.log10(np.sum((basis @ fit) ** 2) / np.sum(residual**2)))


@pytest.mark.parametrize(("law", "name"), LAWS)
def test_what_sox_encodes_the_daemon_decodes_as_sox_does(law: str, name: str) -> None:
    every_code = bytes(range(256))
    assert g711.decode(every_code, law) == sox(law_args(name), RAW16, every_code)
    coded = sox(RAW16, law_args(name), ramp().tobytes())
    ours = np.frombuffer(g711.decode(coded, law), dtype="<i2")
    assert ours.tobytes() == sox(law_args(name), RAW16, coded)
    # And it is the signal, within G.711's step (1/16 of the segment's top, at most 1024).
    error = np.abs(ours.astype(np.int64) - ramp())
    assert error.max() <= 1024 and np.all(error <= np.abs(ramp().astype(np.int64)) / 16 + 16)


@pytest.mark.parametrize(("law", "name"), LAWS)
def test_what_the_daemon_encodes_sox_decodes_to_the_signal(law: str, name: str) -> None:
    signal = ramp()
    ours = g711.encode(signal.tobytes(), law)
    theirs = sox(RAW16, law_args(name), signal.tobytes())
    decoded = np.frombuffer(sox(law_args(name), RAW16, ours), dtype="<i2").astype(np.int64)
    reference = np.frombuffer(sox(law_args(name), RAW16, theirs), dtype="<i2").astype(np.int64)
    # The two encoders round differently only exactly between two levels: the same level,
    # or the neighbouring one, never further.
    levels = np.unique(np.frombuffer(sox(law_args(name), RAW16, bytes(range(256))), dtype="<i2"))
    steps = np.abs(np.searchsorted(levels, decoded) - np.searchsorted(levels, reference))
    assert steps.max() <= 1 and np.count_nonzero(steps) < 0.02 * signal.size
    assert np.abs(decoded - signal).max() <= 1024
    # A tone through the daemon's encoder and sox's decoder: G.711 measures 34-35 dB at -6 dBFS.
    coded = g711.encode(tone(8000).tobytes(), law)
    assert snr_db(np.frombuffer(sox(law_args(name), RAW16, coded), dtype="<i2"), 8000) > 32  # wrong law: 16


@pytest.mark.parametrize(("law", "name"), LAWS)
def test_the_streaming_24_khz_path_through_sox_both_ways(law: str, name: str) -> None:
    # Upstream: PCM16 24 kHz in 40 ms chunks -> G711Encoder -> sox decodes at 8 kHz.
    source = tone(24000)
    encoder = g711.G711Encoder(law)
    chunks = [source[i : i + 960].tobytes() for i in range(0, source.size, 960)]
    coded = b"".join(encoder.encode(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks))
    assert abs(len(coded) - source.size // 3) <= 3
    narrow = np.frombuffer(sox(law_args(name), RAW16, coded), dtype="<i2")
    assert snr_db(narrow[400:-400], 8000) > 30
    # Downstream: sox encodes an 8 kHz tone -> G711Decoder in 100 ms deltas -> 24 kHz.
    wire = sox(RAW16, law_args(name), tone(8000).tobytes())
    decoder = g711.G711Decoder(law)
    deltas = [wire[i : i + 800] for i in range(0, len(wire), 800)]
    wide = np.frombuffer(
        b"".join(decoder.decode(d, last=i == len(deltas) - 1) for i, d in enumerate(deltas)),
        dtype="<i2",
    )
    assert abs(wide.size - 3 * len(wire)) <= 9
    assert snr_db(wide[1200:-1200], 24000) > 30
