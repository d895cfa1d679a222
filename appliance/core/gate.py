"""Voice-activity gate, sans I/O: per VAD frame "voiced or not" in, speech edges out.

Speech starts when ``start_frames`` of the last ``start_window`` frames are voiced and ends
after ``hangover_ms`` without a voiced frame, or at once at an unvoiced frame that the
detector marks as a possible end of turn (``may_end``: a detector that judges pauses, where
webrtcvad never does). The first ``warmup_ms`` are ignored because
webrtcvad reports speech while it adapts. ``require()`` changes how much evidence opens the
gate (the echo guard asks for more while the speaker plays). Time is the frame count;
nothing is read from a clock.
"""

from __future__ import annotations

import enum
from collections import deque


class Edge(enum.Enum):
    START = "start"
    STOP = "stop"


class VadGate:
    def __init__(
        self,
        *,
        frame_ms: int,
        start_frames: int,
        start_window: int,
        hangover_ms: int,
        warmup_ms: int,
    ) -> None:
        if start_frames > start_window:
            raise ValueError("start_frames must not exceed start_window")
        self.frame_ms = frame_ms
        self._start_frames = start_frames
        self._window: deque[bool] = deque(maxlen=start_window)
        self._hangover_frames = max(1, -(-hangover_ms // frame_ms))
        self._warmup_frames = -(-warmup_ms // frame_ms)
        self._frames = 0
        self._silent_run = 0
        self.active = False

    def process(self, voiced: bool, may_end: bool = False) -> Edge | None:
        """Feed one frame's VAD decision; returns an edge when speech starts or stops.
        ``may_end``: this pause may end the turn (the hang-over is then not waited for)."""
        self._frames += 1
        if self._frames <= self._warmup_frames:
            voiced = False
        if self.active:
            self._silent_run = 0 if voiced else self._silent_run + 1
            if self._silent_run >= self._hangover_frames or (may_end and not voiced):
                self.active = False
                self._window.clear()
                return Edge.STOP
            return None
        self._window.append(voiced)
        if voiced and sum(self._window) >= self._start_frames:
            self.active = True
            self._silent_run = 0
            return Edge.START
        return None

    @property
    def silence_ms(self) -> int:
        """Unvoiced time since the last voiced frame (at STOP: the hang-over waited)."""
        return self._silent_run * self.frame_ms

    def require(self, start_frames: int, start_window: int) -> None:
        """From now on speech starts when ``start_frames`` of the last ``start_window`` frames
        are voiced. The frames already seen count (the newest ``start_window`` of them)."""
        if start_frames > start_window:
            raise ValueError("start_frames must not exceed start_window")
        self._start_frames = start_frames
        if self._window.maxlen != start_window:
            self._window = deque(self._window, maxlen=start_window)

    def reset(self) -> None:
        """Forget any speech in progress (mute, reconnect); warm-up is not repeated."""
        self.active = False
        self._silent_run = 0
        self._window.clear()
