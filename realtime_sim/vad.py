"""The simulator's server-side voice activity detector: energy over 10 ms frames.

Owns turn detection as the simulated service performs it: it is fed the appended audio
(PCM16 at 24 kHz) and returns speech-start, speech-stop and idle-timeout events at absolute
sample positions. Time is the audio's own length; nothing here reads a clock.

A 10 ms frame is *voiced* when its RMS level is at least ``threshold_dbfs``:

- ``server_vad``: ``threshold_dbfs = -60 + 40 * threshold`` (threshold 0.5 -> -40 dBFS,
  0.0 -> -60 dBFS, 1.0 -> -20 dBFS).
- ``semantic_vad``: as server_vad with threshold 0.5 (-40 dBFS), 300 ms prefix padding and
  500 ms of silence to end a turn, whatever the eagerness.

Speech starts after :data:`SPEECH_START_MS` of consecutive voiced frames; its onset is the
first of them. It stops after ``silence_duration_ms`` of consecutive unvoiced frames.

Imports numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime_sim.codecs import INTERNAL_RATE, Samples

FRAME_SAMPLES = INTERNAL_RATE // 100
"""One 10 ms analysis frame."""
SPEECH_START_MS = 50
"""Consecutive voiced audio needed before speech_started is reported."""
SEMANTIC_SILENCE_MS = 500
SEMANTIC_PREFIX_MS = 300
SEMANTIC_THRESHOLD = 0.5


def threshold_to_dbfs(threshold: float) -> float:
    """Map the API's 0..1 ``threshold`` onto an RMS level in dBFS."""
    return -60.0 + 40.0 * threshold


def _ms_to_samples(ms: float) -> int:
    return round(ms * INTERNAL_RATE / 1000)


@dataclass(frozen=True)
class VadConfig:
    """The detector's settings, derived from a validated ``turn_detection`` object."""

    threshold_dbfs: float
    """Minimum RMS level of a voiced frame."""
    prefix_padding_ms: int
    """Audio kept before the onset; audio_start_ms = onset - prefix (clamped)."""
    silence_duration_ms: int
    """Unvoiced audio that ends a turn."""
    idle_timeout_ms: int | None
    """Audio without speech before timeout_triggered; None disables."""

    @classmethod
    def from_turn_detection(cls, td: dict[str, Any]) -> VadConfig:
        if td["type"] == "semantic_vad":
            return cls(
                threshold_to_dbfs(SEMANTIC_THRESHOLD), SEMANTIC_PREFIX_MS, SEMANTIC_SILENCE_MS, None
            )
        idle = td.get("idle_timeout_ms")
        return cls(
            threshold_to_dbfs(float(td["threshold"])),
            int(td["prefix_padding_ms"]),
            int(td["silence_duration_ms"]),
            int(idle) if idle else None,
        )


@dataclass(frozen=True)
class SpeechStarted:
    onset: int
    """Absolute sample index of the first voiced frame."""


@dataclass(frozen=True)
class SpeechStopped:
    last_voiced_end: int
    """Absolute sample index just after the last voiced frame."""
    end: int
    """Absolute sample index where the silence requirement was met."""


@dataclass(frozen=True)
class IdleTimeout:
    start: int
    end: int


VadEvent = SpeechStarted | SpeechStopped | IdleTimeout


def frame_levels_dbfs(frames: Samples) -> list[float]:
    """RMS level of each row of a (n, FRAME_SAMPLES) array, in dBFS (-inf for digital zero)."""
    x = frames.astype(np.float64)
    rms = np.sqrt(np.mean(x * x, axis=1))
    return [20.0 * math.log10(r / 32768.0) if r > 0 else -math.inf for r in rms]


class EnergyVad:
    """Frame-by-frame speech detector over the session's appended audio."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._pos = 0  # absolute sample index of _pending[0]
        self.in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._last_voiced_end = 0
        self._idle_start = 0
        self._idle_run = 0

    def reset(self, position: int) -> None:
        """Forget any speech in progress; the next sample fed is at ``position``."""
        self._pending = np.zeros(0, dtype=np.int16)
        self._pos = position
        self.in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self.reset_idle(position)

    def reset_idle(self, position: int) -> None:
        """Restart the idle timer (after a response, a commit or a clear)."""
        self._idle_start = position
        self._idle_run = 0

    def process(self, samples: Samples, config: VadConfig, *, count_idle: bool) -> list[VadEvent]:
        """Feed appended audio; return what the detector saw, in order.

        ``count_idle`` is false while a response is being generated: the idle timer measures
        silence after the model last spoke.
        """
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n_frames = data.size // FRAME_SAMPLES
        used = n_frames * FRAME_SAMPLES
        levels = frame_levels_dbfs(data[:used].reshape(n_frames, FRAME_SAMPLES)) if n_frames else []
        events: list[VadEvent] = []
        start_run = _ms_to_samples(SPEECH_START_MS)
        silence_needed = _ms_to_samples(config.silence_duration_ms)
        idle_needed = (
            _ms_to_samples(config.idle_timeout_ms) if config.idle_timeout_ms is not None else None
        )
        for index, level in enumerate(levels):
            frame_end = self._pos + (index + 1) * FRAME_SAMPLES
            voiced = level >= config.threshold_dbfs
            if not self.in_speech:
                self._voiced_run = self._voiced_run + FRAME_SAMPLES if voiced else 0
                if self._voiced_run >= start_run:
                    self.in_speech = True
                    self._silence_run = 0
                    self._last_voiced_end = frame_end
                    events.append(SpeechStarted(onset=frame_end - self._voiced_run))
                    self.reset_idle(frame_end)
                    continue
                if count_idle and idle_needed is not None:
                    if self._idle_run == 0:
                        self._idle_start = frame_end - FRAME_SAMPLES
                    self._idle_run += FRAME_SAMPLES
                    if self._idle_run >= idle_needed:
                        events.append(IdleTimeout(start=self._idle_start, end=frame_end))
                        self.reset_idle(frame_end)
                continue
            if voiced:
                self._silence_run = 0
                self._last_voiced_end = frame_end
                continue
            self._silence_run += FRAME_SAMPLES
            if self._silence_run >= silence_needed:
                self.in_speech = False
                self._voiced_run = 0
                events.append(SpeechStopped(last_voiced_end=self._last_voiced_end, end=frame_end))
                self.reset_idle(frame_end)
        self._pending = data[used:].copy()
        self._pos += used
        return events
