"""pymicro-vad adapter: 16 kHz PCM16 in 10 ms frames in, speech probability out.

pymicro-vad is a small neural VAD (the one Home Assistant's voice satellites use) compiled
into one C++ extension with no other dependency; x86-64 and aarch64 abi3 wheels
(manylinux_2_28; Bookworm's glibc is 2.36). Unlike webrtcvad it gives stationary noise
(fans, hum, pink/brown/white) a probability near 0, which is what keeps room noise from
opening turns. It keeps state between frames: feed every frame of the stream, in order.
"""

from __future__ import annotations

from pymicro_vad import MicroVad as _MicroVad

VAD_RATE = 16000
FRAME_MS = 10
FRAME_BYTES = VAD_RATE * FRAME_MS // 1000 * 2


class MicroVad:
    frame_ms = FRAME_MS
    frame_bytes = FRAME_BYTES

    def __init__(self) -> None:
        self._vad = _MicroVad()

    def __call__(self, frame: bytes | memoryview) -> float:
        """Speech probability (0-1) of one 10 ms frame (320 bytes of PCM16)."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"pymicro-vad takes {FRAME_BYTES}-byte frames, got {len(frame)}")
        return max(0.0, float(self._vad.process_10ms(bytes(frame))))

    def reset(self) -> None:
        """Forget the stream (a new device, after a mute)."""
        self._vad.reset()
