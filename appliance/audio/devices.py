"""What ALSA devices exist and what they accept, for ``appliance check`` and setup help.

Owns: listing PCM names the way ``arecord -L`` / ``aplay -L`` do, opening each one
non-blocking (so a busy or dead device answers at once instead of hanging) and recording
the sample rates and channel counts it takes, or why it could not be opened.

Rates come from pyalsaaudio's ``getrates()`` (the device's own list or range) intersected
with the rates this project can use. Channel counts are probed by opening the device with
each candidate and reading back what it set up: ``getchannels()`` walks every count
between the device's bounds, and plugins such as ``null`` or ``file`` report four billion.

Also owns alsa-lib's process-wide state seen from Python (through ctypes): its error
messages (``quiet_alsa_lib``: into the log at debug level instead of raw ``ALSA lib
pcm.c:...`` lines on stderr, i.e. in the journal on every reopen retry) and its cached
configuration (``forget_alsa_config``: a reload sees PCMs added to /etc/asound.conf, which
alsa-lib otherwise reads once per process).

Imports: alsaaudio, ``appliance.audio.alsa``, ``appliance.errors``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import sys
from collections.abc import Iterator
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
    """Every capture and playback PCM ALSA knows of, each opened once to see what it takes.

    Plugins opened on the way (jack, pulse, oss...) print to stderr from C; their noise is
    dropped (``silenced_stderr``), as is alsa-lib's own (``quiet_alsa_lib``).
    """
    quiet_alsa_lib()
    cards = _card_names()
    found: list[DeviceInfo] = []
    with silenced_stderr():
        for direction in _DIRECTIONS:
            pcm_type = alsaaudio.PCM_CAPTURE if direction == "capture" else alsaaudio.PCM_PLAYBACK
            names: list[str] = list(alsaaudio.pcms(pcm_type))
            for name in names:
                found.append(_probe(name, direction, cards))
    return found


def card_devices(devices: list[DeviceInfo]) -> list[DeviceInfo]:
    """The sound cards' own PCMs, one per card and direction: ``plughw:CARD=...`` names,
    which convert rate and channels (the daemon's fixed formats fit any card) and keep
    naming the same card when USB cards are plugged in another order."""
    return [d for d in devices if d.name.startswith("plughw:CARD=")]


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null meanwhile: for C libraries that print there.
    Only for short, single-purpose commands: in the daemon it would hide everyone's errors."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# snd_lib_error_handler_t: (file, line, function, err, fmt, ...). The variadic arguments
# cannot be read from Python, so the format is logged as it is, with where it came from.
_ErrorHandler = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_handler: object = None  # the installed callback, kept alive for alsa-lib
_libasound: ctypes.CDLL | None = None


def _asound() -> ctypes.CDLL | None:
    global _libasound
    if _libasound is None:
        name = ctypes.util.find_library("asound") or "libasound.so.2"
        try:
            _libasound = ctypes.CDLL(name)
        except OSError as exc:
            log.debug("cannot load alsa-lib: %s", exc)
            return None
    return _libasound


def _on_alsa_error(file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None) -> None:
    text = (fmt or b"").decode(errors="replace")
    where = f"{(file or b'?').decode(errors='replace')}:{line} {(function or b'').decode(errors='replace')}"
    log.debug("alsa-lib: %s (%s%s)", text, where, f", {os.strerror(-err)}" if err else "")


def quiet_alsa_lib() -> bool:
    """alsa-lib's error messages go to this module's log at debug level from now on (the
    device errors that matter reach the log through pyalsaaudio's exceptions anyway).
    False if alsa-lib could not be reached; idempotent."""
    global _handler
    if _handler is not None:
        return True
    lib = _asound()
    if lib is None:
        return False
    handler = _ErrorHandler(_on_alsa_error)
    if lib.snd_lib_error_set_handler(handler) != 0:
        return False
    _handler = handler
    return True


def forget_alsa_config() -> bool:
    """Drop alsa-lib's cached configuration: the next open re-reads alsa.conf,
    /etc/asound.conf and ~/.asoundrc (alsa-lib notices changes to its top-level files
    only, not to the files they load). Open PCMs keep working. False if not possible."""
    lib = _asound()
    if lib is None:
        return False
    return bool(lib.snd_config_update_free_global() == 0)


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
