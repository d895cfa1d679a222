"""Audio between PCM16 and aiortc's frames: what both ends of a WebRTC call do with it.

Used by the WebRTC transport (``appliance.transport.webrtc``: the microphone track out, the
reply track in); the loopback simulator keeps its own copy (``realtime_sim.rtcaudio``), as a
stand-in for the service must not share the client's code. Outgoing tracks carry PCM16 mono at 24 kHz in 20 ms frames (aiortc encodes
Opus); incoming Opus is decoded by aiortc to 48 kHz, usually stereo, and brought back to
24 kHz mono here. Imports av, numpy and soxr.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import soxr

RATE = 24_000
"""Sample rate of the PCM16 both sides hand to and take from their tracks."""
FRAME_SAMPLES = 480
"""20 ms at 24 kHz, Opus's usual frame."""
DECODED_RATE = 48_000
"""What aiortc's Opus decoder produces."""


def take_frame(queue: bytearray) -> bytes:
    """The next frame's PCM16 from ``queue`` (removed from it), padded with silence."""
    size = FRAME_SAMPLES * 2
    chunk = bytes(queue[:size])
    del queue[:size]
    return chunk + bytes(size - len(chunk))


def pcm_frame(pcm: bytes, pts: int) -> av.AudioFrame:
    """PCM16 mono at ``RATE`` as a frame for aiortc's encoder; ``pts`` counts samples."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, RATE)
    return frame


def mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame's samples; of a stereo frame, the left channel."""
    pcm = frame.to_ndarray().reshape(-1)
    if frame.layout.nb_channels == 2:
        pcm = pcm[0::2]
    return pcm


def downsampler() -> soxr.ResampleStream:
    """A fresh stream from ``DECODED_RATE`` to ``RATE`` (int16, keeps its state per call)."""
    return soxr.ResampleStream(DECODED_RATE, RATE, 1, dtype="int16", quality="MQ")
