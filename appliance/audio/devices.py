"""What ALSA devices exist and what they accept, for ``appliance check`` and setup help.

Owns: listing PCM names the way ``arecord -L`` / ``aplay -L`` do, opening each one
non-blocking (so a busy or dead device answers at once instead of hanging) and recording
the sample rates and channel counts it takes, or why it could not be opened.

Rates come from pyalsaaudio's ``getrates()`` (the device's own list or range) intersected
with the rates this project can use. Channel counts are probed by opening the device with
each candidate and reading back what it set up: ``getchannels()`` walks every count
between the device's bounds, and plugins such as ``null`` or ``file`` report four billion.

Imports: alsaaudio, ``appliance.audio.alsa``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import alsaaudio

from appliance.audio.alsa import AlsaError, Direction, Pcm, close_quietly, open_pcm
from appliance.errors import AudioDeviceError

log = logging.getLogger(__name__)

CANDIDATE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
CANDIDATE_CHANNELS = (1, 2, 4, 6, 8)
_DIRECTIONS: tuple[Direction, ...] = ("capture", "playback")
_CARD_RE = re.compile(r"CARD=([^,]+)")


@dataclass(frozen=True)
class DeviceInfo:
    """One PCM name in one direction, and what it accepts."""

    name: str
    """The ALSA PCM name, as used in the config (``audio.capture_device`` ...)."""
    direction: Direction
    """``"capture"`` or ``"playback"``."""
    rates: tuple[int, ...] = ()
    """The candidate rates (``CANDIDATE_RATES``) the device accepts."""
    channels: tuple[int, ...] = ()
    """The candidate channel counts (``CANDIDATE_CHANNELS``) the device accepts."""
    description: str = ""
    """The sound card's long name, when the PCM names one (``CARD=...``)."""
    error: str | None = None
    """Why the device could not be opened; None if it opened."""

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.rates) and bool(self.channels)


def list_devices() -> list[DeviceInfo]:
    """Every capture and playback PCM ALSA knows of, each opened once to see what it takes."""
    cards = _card_names()
    found: list[DeviceInfo] = []
    for direction in _DIRECTIONS:
        pcm_type = alsaaudio.PCM_CAPTURE if direction == "capture" else alsaaudio.PCM_PLAYBACK
        names: list[str] = list(alsaaudio.pcms(pcm_type))
        for name in names:
            found.append(_probe(name, direction, cards))
    return found


def check_device(name: str, direction: Direction, rate: int, channels: int) -> str | None:
    """None if ``name`` opens for ``direction`` with exactly ``rate`` and ``channels``;
    otherwise a sentence saying what went wrong."""
    try:
        pcm, _ = open_pcm(name, direction, rate=rate, channels=channels, period_frames=1024)
    except AudioDeviceError as err:
        return str(err)
    close_quietly(pcm)
    return None


def _probe(name: str, direction: Direction, cards: dict[str, str]) -> DeviceInfo:
    pcm_type = alsaaudio.PCM_CAPTURE if direction == "capture" else alsaaudio.PCM_PLAYBACK
    match = _CARD_RE.search(name)
    description = cards.get(match.group(1), "") if match else ""
    try:
        pcm: Pcm = alsaaudio.PCM(type=pcm_type, mode=alsaaudio.PCM_NONBLOCK, device=name)
    except AlsaError as exc:
        log.debug("%s %r cannot be opened: %s", direction, name, exc)
        return DeviceInfo(name, direction, description=description, error=str(exc))
    try:
        rates = _rates(pcm)
    finally:
        close_quietly(pcm)
    channels = tuple(c for c in CANDIDATE_CHANNELS if _takes_channels(name, direction, c, rates))
    return DeviceInfo(name, direction, rates, channels, description)


def _rates(pcm: Pcm) -> tuple[int, ...]:
    try:
        offered = pcm.getrates()
    except AlsaError:
        return ()
    if isinstance(offered, int):
        return (offered,) if offered in CANDIDATE_RATES else ()
    if isinstance(offered, tuple):
        low, high = offered
        return tuple(r for r in CANDIDATE_RATES if low <= r <= high)
    return tuple(r for r in CANDIDATE_RATES if r in offered)


def _takes_channels(name: str, direction: Direction, channels: int, rates: tuple[int, ...]) -> bool:
    # Probe at a rate the device takes, so that only the channel count can be refused.
    rate = 48000 if not rates or 48000 in rates else rates[-1]
    try:
        pcm, _ = open_pcm(name, direction, rate=rate, channels=channels, period_frames=1024)
    except AudioDeviceError:
        return False
    close_quietly(pcm)
    return True


def _card_names() -> dict[str, str]:
    """Card id (as in ``CARD=id``) to its long name."""
    names: dict[str, str] = {}
    try:
        for index, card_id in zip(alsaaudio.card_indexes(), alsaaudio.cards(), strict=False):
            names[str(card_id)] = str(alsaaudio.card_name(index)[1])
    except AlsaError as exc:
        log.debug("cannot list sound cards: %s", exc)
    return names
