"""Earcons: the cue sounds, read, checked and converted (the rules live in ``appliance.core.cues``).

Owns the sounds: the shipped WAVs in ``appliance/data/earcons/`` or the user's own, read,
checked and converted to 24 kHz mono PCM16 once, at start and at each reload. A file that
cannot be used is a ``ConfigError`` naming its ``earcons.<name>`` key.

Imports: numpy, soxr, ``appliance.config``, ``appliance.core.cues``, ``appliance.errors``.
"""

from __future__ import annotations

import wave
from importlib import resources
from pathlib import Path

import numpy as np
import soxr

from appliance.config import EARCON_NAMES, EarconSettings
from appliance.core.cues import RATE
from appliance.errors import ConfigError

__all__ = ["MAX_SECONDS", "RATE", "load_earcons", "read_wav", "shipped"]

MAX_SECONDS = 3.0
"""Longer files are refused: an earcon is a cue, and it holds the gate while it plays."""


def shipped(name: str) -> Path:
    """The path of a shipped earcon."""
    return Path(str(resources.files("appliance") / "data" / "earcons" / f"{name}.wav"))


def read_wav(path: Path, key: str) -> bytes:
    """A WAV file as PCM16 mono 24 kHz; a ``ConfigError`` naming ``key`` when it cannot be."""
    try:
        with wave.open(str(path.expanduser()), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.getnframes()
            if width != 2:
                raise ConfigError(key, f"{path}: expected 16-bit PCM, got {8 * width}-bit")
            if channels not in (1, 2):
                raise ConfigError(key, f"{path}: expected mono or stereo, got {channels} channels")
            if frames == 0:
                raise ConfigError(key, f"{path}: holds no audio")
            if frames > MAX_SECONDS * rate:
                raise ConfigError(
                    key, f"{path}: {frames / rate:.1f} s long; an earcon may last {MAX_SECONDS:g} s"
                )
            data = w.readframes(frames)
    except FileNotFoundError:
        raise ConfigError(key, f"{path}: no such file") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(key, f"{path}: not a readable WAV file ({exc})") from None
    samples = np.frombuffer(data, dtype="<i2")
    if channels == 2:
        samples = (samples.reshape(-1, 2).astype(np.int32).sum(axis=1) // 2).astype(np.int16)
    if rate != RATE:
        samples = soxr.resample(samples, rate, RATE)
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


def load_earcons(settings: EarconSettings) -> dict[str, bytes]:
    """Every configured earcon, by name (silent ones left out); raises ``ConfigError``."""
    sounds: dict[str, bytes] = {}
    for name in EARCON_NAMES:
        value = settings.sound(name)
        if value:
            path = shipped(name) if value == "default" else Path(value)
            sounds[name] = read_wav(path, f"earcons.{name}")
    return sounds
