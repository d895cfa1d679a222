"""Earcons: short cue sounds played through the reply player, never seen by the session.

Owns the sounds (the shipped WAVs in ``appliance/data/earcons/`` or the user's own, read,
checked and converted to 24 kHz mono PCM16 once, at start and at each reload) and the rules
for playing them:

- They go through the same ``PlaybackThread`` as the agent's replies, as items with a
  reserved id (``earcon:<name>:<n>``). The daemon passes every player event through
  ``EarconPlayer.player_event`` first; events of earcon items are consumed here, so the
  ``Session`` never sees them and its state is unaffected.
- An earcon never interrupts the agent: while a reply is queued or playing it is skipped
  (not mixed: a cue under the agent's voice would be lost anyway, and mixing would need a
  second stream position in the player's ledger).
- Nothing of an earcon goes upstream. From the moment it is queued until the player is idle
  again plus ``ECHO_TAIL_S``, ``hold(True)`` sets the front end's ``earcon`` flag: the VAD
  gate cannot open on the cue (so it cannot barge in either) and a push-to-talk turn starts
  streaming only after it. A turn already under way is never cut.
- "error" plays once the appliance has been offline or in error for ``ERROR_CUE_DELAY_S``
  (``state_changed``), so a quick deliberate reconnect or a renewal stays silent.
- The player has one end-of-stream mark. ``PlaybackIdle`` therefore belongs to whoever set
  it last: after an earcon's ``end_of_stream()`` the idle is the earcon's (consumed here),
  after the session's ``EndOfReply`` it is the reply's (passed on).

Runs on the event loop thread. Imports: numpy, soxr, ``appliance.audio.playback`` (event
types), ``appliance.config``, ``appliance.core.state``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr

from appliance.audio.playback import PlaybackIdle, PlaybackStarted, PlaybackStopped
from appliance.config import EARCON_NAMES, EarconSettings
from appliance.core.state import State
from appliance.errors import ConfigError

log = logging.getLogger(__name__)

RATE = 24000
"""Earcons are held as PCM16 mono at the reply rate, so the player treats them as replies."""
MAX_SECONDS = 3.0
"""Longer files are refused: an earcon is a cue, and it holds the gate while it plays."""
ITEM_PREFIX = "earcon:"
"""Reserved item id prefix (server item ids are ``item_...``)."""
ECHO_TAIL_S = 0.15
"""The gate stays held this long after the player reports the cue played out (the room's
echo and the capture path's buffering)."""
ERROR_CUE_DELAY_S = 3.0
"""Offline or in error this long before the "error" cue plays."""
WORKING = (State.READY, State.LISTENING, State.THINKING, State.SPEAKING, State.MUTED)
FALLBACK_S = 1.0
"""Beyond the cue's own length: the hold is released even if the player never reports
(a playback device in outage discards what is queued)."""


def is_earcon(item_id: str | None) -> bool:
    return item_id is not None and item_id.startswith(ITEM_PREFIX)


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


class Player(Protocol):
    """What the earcons need of ``PlaybackThread``."""

    def enqueue(self, item_id: str, pcm: bytes) -> None: ...

    def end_of_stream(self) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]


class EarconPlayer:
    """Plays earcons by name and keeps the session from seeing them (module docstring).

    ``player`` may be replaced (the daemon re-opens it on reload); ``hold`` sets the front
    end's ``earcon`` flag; ``call_later`` is ``loop.call_later``.
    """

    def __init__(
        self,
        sounds: dict[str, bytes],
        *,
        player: Player | None,
        hold: Callable[[bool], None],
        call_later: CallLater,
    ) -> None:
        self.sounds = sounds
        self.player = player
        self._hold = hold
        self._call_later = call_later
        self._count = 0
        self._reply = False  # the session's audio is queued or playing
        self._eos_is_ours = False  # the player's end-of-stream mark was set by an earcon
        self._in_flight = 0  # earcons queued and not yet reported played out or dropped
        self._release: Timer | None = None
        self._error_timer: Timer | None = None
        self._error_armed = True
        self.played: list[str] = []  # names queued, for the log and for tests

    # --- cues -----------------------------------------------------------------------------

    def play(self, name: str) -> bool:
        """Queue earcon ``name``; False when it is silent, unknown or skipped."""
        pcm = self.sounds.get(name)
        if pcm is None or self.player is None:
            return False
        if self._reply:
            log.debug("earcon %s skipped: the agent is speaking", name)
            return False
        self._count += 1
        self._in_flight += 1
        self._hold_for(len(pcm) / 2 / RATE + FALLBACK_S)
        self.player.enqueue(f"{ITEM_PREFIX}{name}:{self._count}", pcm)
        self.player.end_of_stream()
        self._eos_is_ours = True
        self.played.append(name)
        log.debug("earcon %s", name)
        return True

    # --- what the session does to the player (call before passing it on) -----------------

    def reply_audio(self) -> None:
        """A ``Play`` of the session's audio."""
        self._reply = True

    def reply_ended(self) -> None:
        """The session's ``EndOfReply``: the next idle is the reply's."""
        self._eos_is_ours = False

    def reply_stopped(self) -> None:
        """The session's ``StopPlayback``: the player drops everything queued, cues too."""
        self._reply = False

    # --- the player's events ----------------------------------------------------------------

    def player_event(self, ev: object) -> object | None:
        """The event to pass on to the session, or None when it was an earcon's."""
        if isinstance(ev, PlaybackStarted):
            return None if is_earcon(ev.item_id) else ev
        if isinstance(ev, PlaybackStopped):
            self._reply = False
            self._played_out()  # a stop drops every queued earcon with the reply
            # Every stop() is the session's, so it gets its answer; an earcon is not its item.
            return replace(ev, item_id=None, played_ms=0) if is_earcon(ev.item_id) else ev
        if isinstance(ev, PlaybackIdle):
            self._played_out()
            if self._eos_is_ours:
                return None
            self._reply = False
            return ev
        return ev

    def _played_out(self) -> None:
        if self._in_flight:
            self._in_flight = 0
            self._hold_for(ECHO_TAIL_S)

    def _hold_for(self, seconds: float) -> None:
        if self._release is not None:
            self._release.cancel()
        self._hold(True)
        self._release = self._call_later(seconds, self._let_go)

    def _let_go(self) -> None:
        self._release = None
        self._hold(False)

    # --- the error cue ---------------------------------------------------------------------

    def state_changed(self, state: State) -> None:
        """Play "error" once when the appliance has been offline or in error for
        ``ERROR_CUE_DELAY_S`` (a deliberate reconnect or a session renewal is quicker than
        that and stays silent); working again re-arms it."""
        if state in WORKING:
            self._error_armed = True
            if self._error_timer is not None:
                self._error_timer.cancel()
                self._error_timer = None
        elif (
            state in (State.OFFLINE, State.ERROR)
            and self._error_armed
            and self._error_timer is None
        ):
            self._error_timer = self._call_later(ERROR_CUE_DELAY_S, self._error_due)

    def _error_due(self) -> None:
        self._error_timer = None
        self._error_armed = False
        self.play("error")

    def close(self) -> None:
        for timer in (self._release, self._error_timer):
            if timer is not None:
                timer.cancel()
        self._release = self._error_timer = None
