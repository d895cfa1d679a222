"""webrtcvad adapter: one 16 kHz PCM16 frame in, voiced or not out."""

from __future__ import annotations

import webrtcvad

from appliance.errors import ConfigError

VAD_RATE = 16000


class WebRtcVad:
    def __init__(self, aggressiveness: int, frame_ms: int) -> None:
        if frame_ms not in (10, 20, 30):
            raise ConfigError(
                "gate.vad_frame_ms", f"webrtcvad takes 10, 20 or 30 ms, got {frame_ms}"
            )
        self._vad = webrtcvad.Vad(aggressiveness)
        self.aggressiveness = aggressiveness
        self.frame_samples = VAD_RATE * frame_ms // 1000

    def __call__(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, VAD_RATE))

    def set_aggressiveness(self, level: int) -> None:
        """Change the mode in place: the adapted noise model is kept (a new Vad would
        report its first ~90 ms as speech again)."""
        if level != self.aggressiveness:
            self._vad.set_mode(level)
            self.aggressiveness = level
