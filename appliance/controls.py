"""What the buttons do, run on the event loop thread.

Owns the talk button's two modes (``hold``: talk while held; ``toggle``: press to start and
to send), the long press that reconnects, the privacy-mute toggle and the volume steps, and
keeps mute and volume across restarts (``appliance.persist``). It knows no GPIO: the
gpiozero adapter (``appliance.gpio``) only calls these methods through
``loop.call_soon_threadsafe``. Imports: ``appliance.config``, ``appliance.mixer``,
``appliance.persist``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from appliance.config import GpioSettings
from appliance.errors import AudioDeviceError
from appliance.mixer import Mixer
from appliance.persist import ControlState

log = logging.getLogger(__name__)


class Target(Protocol):
    """The daemon's user inputs (``Daemon.set_talking`` and friends); loop thread only."""

    def set_talking(self, held: bool) -> None: ...

    def set_muted(self, muted: bool) -> None: ...

    def reconnect(self) -> None: ...


Cue = Callable[[str], object]
"""Plays an earcon by name ("mute", "unmute"; ``Daemon.cue``); optional."""


class Controls:
    def __init__(
        self,
        target: Target,
        settings: GpioSettings,
        state: ControlState,
        *,
        mixer: Callable[[], Mixer] | None = None,
        cue: Cue | None = None,
    ) -> None:
        self._target = target
        self._settings = settings
        self.state = state
        self._open_mixer = mixer
        self._mixer: Mixer | None = None
        self._cue = cue
        self.talking = False
        self._long_press = False

    def start(self) -> None:
        """Re-apply the persisted mute and volume."""
        if self.state.muted:
            log.info("privacy mute is on (kept from before the restart)")
            self._target.set_muted(True)
        if self._open_mixer is not None:
            try:
                self._mixer = self._open_mixer()
            except AudioDeviceError as exc:
                log.warning("volume buttons disabled: %s", exc)
                return
            if self.state.volume is not None:
                self._set_volume(self.state.volume)

    def close(self) -> None:
        if self._mixer is not None:
            self._mixer.close()
            self._mixer = None

    # --- talk ---------------------------------------------------------------------------

    def talk_pressed(self) -> None:
        self._long_press = False
        if self._settings.talk_mode == "toggle":
            self._talk(not self.talking)
        else:
            self._talk(True)

    def talk_released(self) -> None:
        if self._long_press:
            self._long_press = False  # the release that ends a long press does nothing
        elif self._settings.talk_mode == "hold":
            self._talk(False)

    def talk_held(self) -> None:
        """A long press: drop what was said and reconnect."""
        self._long_press = True
        self._talk(False)
        log.info("talk button held %.0f s: reconnecting", self._settings.hold_time)
        self._target.reconnect()

    def _talk(self, on: bool) -> None:
        if on != self.talking:
            self.talking = on
            self._target.set_talking(on)

    # --- mute -----------------------------------------------------------------------------

    def mute_pressed(self) -> None:
        muted = not self.state.muted
        self.state.muted = muted
        self.state.save()
        log.info("privacy mute %s", "on" if muted else "off")
        self._target.set_muted(muted)
        if self._cue is not None:
            self._cue("mute" if muted else "unmute")

    # --- volume ---------------------------------------------------------------------------

    def volume_up(self) -> None:
        self._step(+self._settings.volume_step)

    def volume_down(self) -> None:
        self._step(-self._settings.volume_step)

    def _step(self, delta: int) -> None:
        if self._mixer is None:
            return
        try:
            current = self._mixer.volume()
        except AudioDeviceError as exc:
            log.warning("%s", exc)
            return
        if self._set_volume(current + delta):
            self.state.save()

    def _set_volume(self, percent: int) -> bool:
        assert self._mixer is not None
        try:
            self.state.volume = self._mixer.set_volume(percent)
        except AudioDeviceError as exc:
            log.warning("%s", exc)
            return False
        log.info("volume %d%%", self.state.volume)
        return True
