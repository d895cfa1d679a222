"""``appliance devices``: help a Pi owner pick, check and configure the sound devices.

Owns the command's output (sound cards by their friendly names with the ``plughw:CARD=``
names to put in the config, then every other PCM), the speaker test (a short tone), the
microphone test (its level, printed a few times a second) and writing the chosen names
into the config file's ``[audio]`` table, keeping the rest of the file as it was.

Imports: numpy, ``appliance.audio.alsa``, ``appliance.audio.devices``, ``appliance.config``,
``appliance.errors``.
"""

from __future__ import annotations

import math
import os
import re
import time
import tomllib
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from appliance.audio.alsa import close_quietly, open_pcm
from appliance.audio.devices import (
    DeviceInfo,
    card_devices,
    list_devices,
    quiet_alsa_lib,
    silenced_stderr,
)
from appliance.config import parse_config
from appliance.errors import AudioDeviceError, ConfigError

TONE_HZ = 440.0
TONE_S = 1.0
TONE_DBFS = -12.0
SPEAKER_RATE, SPEAKER_CHANNELS = 48000, 2  # plughw converts to what the card takes
MIC_RATE, MIC_CHANNELS = 16000, 1  # what the daemon captures by default
LEVEL_EVERY_S = 0.25
SILENT_DBFS = -60.0
_BUSY_HINT = " (is the service running? sudo systemctl stop appliance, then try again)"


def print_devices(out: TextIO) -> None:
    """Sound cards first (what an owner picks from), then every other PCM."""
    devices = list_devices()
    cards = card_devices(devices)
    if cards:
        print("Sound cards (put the plughw: name in the config's [audio] table):", file=out)
        for dev in cards:
            state = "" if dev.error is None else f"  (cannot open: {dev.error})"
            label = dev.description or dev.name
            print(f"  {label:<32} {dev.direction:<8} {dev.name}{state}", file=out)
    else:
        print("No sound cards found (plug in a USB sound card, or check dtparam=audio=on).", file=out)
    others = [d for d in devices if d not in cards]
    if others:
        print("\nOther PCMs:", file=out)
    for dev in others:
        if dev.error:
            print(f"{dev.name} ({dev.direction}): cannot open: {dev.error}", file=out)
            continue
        rates = ", ".join(str(r) for r in dev.rates) or "?"
        channels = ", ".join(str(c) for c in dev.channels) or "?"
        print(f"{dev.name} ({dev.direction})\n    rates: {rates}\n    channels: {channels}", file=out)
    example = next((d.name for d in cards if d.direction == "playback"), "plughw:CARD=Device,DEV=0")
    print(
        f"\nTry one: appliance devices --test-speaker {example}\n"
        "Keep it: add --write (with --test-mic too, to set both).",
        file=out,
    )


def _open(device: str, direction: str, rate: int, channels: int) -> tuple[object, int]:
    try:
        with silenced_stderr():
            pcm, params = open_pcm(
                device,
                "playback" if direction == "playback" else "capture",
                rate=rate,
                channels=channels,
                period_frames=rate // 50,
            )
    except AudioDeviceError as exc:
        busy = "busy" in str(exc).lower()
        raise AudioDeviceError(device, str(exc).split(": ", 1)[-1] + (_BUSY_HINT if busy else "")) from None
    return pcm, params.buffer_frames


def test_speaker(device: str, out: TextIO) -> None:
    """Play a short tone on ``device``; raises ``AudioDeviceError`` naming it."""
    quiet_alsa_lib()
    pcm, buffer_frames = _open(device, "playback", SPEAKER_RATE, SPEAKER_CHANNELS)
    t = np.arange(int(SPEAKER_RATE * TONE_S)) / SPEAKER_RATE
    amplitude = 32767 * 10 ** (TONE_DBFS / 20)
    tone = amplitude * np.sin(2 * math.pi * TONE_HZ * t)
    fade = int(SPEAKER_RATE * 0.02)  # no click at either end
    tone[:fade] *= np.linspace(0, 1, fade)
    tone[-fade:] *= np.linspace(1, 0, fade)
    frames = np.repeat(tone.astype(np.int16)[:, None], SPEAKER_CHANNELS, axis=1)
    data = memoryview(frames.tobytes())
    bytes_per_frame = 2 * SPEAKER_CHANNELS
    print(f"Playing a {TONE_S:g} s tone on {device}...", file=out, flush=True)
    try:
        while data:
            written = pcm.write(data[: SPEAKER_RATE // 50 * bytes_per_frame])  # type: ignore[attr-defined]
            if written > 0:
                data = data[written * bytes_per_frame :]
            else:  # the buffer is full: it plays in real time
                time.sleep(0.01)
        time.sleep(buffer_frames / SPEAKER_RATE)  # what is still buffered plays out
    finally:
        close_quietly(pcm)  # type: ignore[arg-type]
    print("Done. Heard it? Then this is your speaker.", file=out)


def test_mic(device: str, seconds: float, out: TextIO) -> float:
    """Print the microphone's level every quarter second for ``seconds``; returns the
    loudest level in dBFS. Raises ``AudioDeviceError`` naming the device."""
    quiet_alsa_lib()
    pcm, _ = _open(device, "capture", MIC_RATE, MIC_CHANNELS)
    block = int(MIC_RATE * LEVEL_EVERY_S)
    wanted = int(MIC_RATE * seconds)
    got = 0
    pending = bytearray()
    loudest = -120.0
    print(f"Listening on {device} for {seconds:g} s: speak now.", file=out, flush=True)
    try:
        while got < wanted:
            frames, data = pcm.read()  # type: ignore[attr-defined]
            if frames < 0:
                raise AudioDeviceError(device, f"capture: read failed ({os.strerror(-frames)})")
            if frames == 0:
                time.sleep(0.01)
                continue
            pending += data
            while len(pending) >= 2 * block and got < wanted:
                samples = np.frombuffer(bytes(pending[: 2 * block]), dtype=np.int16)
                del pending[: 2 * block]
                got += block
                level = _dbfs(samples)
                loudest = max(loudest, level)
                bar = "#" * max(0, int((level + 60) / 2))
                print(f"  {level:6.1f} dBFS  {bar}", file=out, flush=True)
    finally:
        close_quietly(pcm)  # type: ignore[arg-type]
    if loudest < SILENT_DBFS:
        print(f"Heard nothing (loudest {loudest:.0f} dBFS): wrong device, or muted? Try alsamixer.", file=out)
    else:
        print(f"Loudest {loudest:.0f} dBFS: this microphone works.", file=out)
    return loudest


def _dbfs(samples: npt.NDArray[np.int16]) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


def write_devices(config: Path, *, capture: str | None, playback: str | None) -> list[str]:
    """Set ``[audio] capture_device`` / ``playback_device`` in ``config``, keeping every
    other line; the result must still load. Returns the keys set."""
    text = config.read_text(encoding="utf-8") if config.exists() else ""
    done = []
    for key, value in (("capture_device", capture), ("playback_device", playback)):
        if value is not None:
            text = _set_audio_key(text, key, value)
            done.append(f"audio.{key} = {value!r}")
    try:
        parse_config(tomllib.loads(text), str(config))  # a ConfigError names the key
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{config}: invalid TOML after the edit: {exc}") from None
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    if config.exists():
        os.chmod(tmp, config.stat().st_mode & 0o777)
    tmp.replace(config)
    return done


_TABLE_RE = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")


def _set_audio_key(text: str, key: str, value: str) -> str:
    line = f"{key} = {_toml_string(value)}"
    lines = text.splitlines()
    table = None
    audio_at = None
    for i, raw in enumerate(lines):
        m = _TABLE_RE.match(raw)
        if m:
            table = m.group(1).strip()
            if table == "audio":
                audio_at = i
            continue
        if table == "audio" and re.match(rf"^\s*{key}\s*=", raw):
            lines[i] = line
            return "\n".join(lines) + "\n"
    if audio_at is None:
        lines += ["", "[audio]", line]
    else:
        lines.insert(audio_at + 1, line)
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ConfigError("", f"device name {value!r} has control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = ["DeviceInfo", "print_devices", "test_mic", "test_speaker", "write_devices"]
