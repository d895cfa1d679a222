"""Mute and volume as the user set them, and what the buttons do; run on the event loop.

``Levels`` owns the privacy mute and the speaker volume wherever they are set from (the
buttons, the built-in tools ``mute`` and ``set_volume``): it keeps them across restarts
(``appliance.persist``) and re-applies them at start, whether or not GPIO is configured or
present. ``Controls`` owns the buttons' behaviour: the talk button's two modes (``hold``: talk
while held; ``toggle``: press to start and to send), the long press that reconnects, the
mute toggle and the volume steps. Neither knows GPIO: the gpiozero adapter
(``appliance.gpio``) only calls ``Controls`` through ``loop.call_soon_threadsafe``.
Imports: ``appliance.config``, ``appliance.mixer``, ``appliance.persist``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from appliance.config import GpioSettings, TalkMode
from appliance.errors import AudioDeviceError
from appliance.mixer import Mixer
from appliance.persist import SavedControls

log = logging.getLogger(__name__)


class Levels:
    """The persisted mute and volume; ``apply_muted`` is the daemon's mute itself (the front
    end and the session), ``mixer`` opens the configured mixer control (opened at first use
    and kept; ``close`` drops it, so the next use follows a reloaded config)."""

    def __init__(
        self,
        state: SavedControls,
        *,
        apply_muted: Callable[[bool], None],
        mixer: Callable[[], Mixer],
    ) -> None:
        self._state = state
        self._apply_muted = apply_muted
        self._open_mixer = mixer
        self._mixer: Mixer | None = None
        self.on_change: Callable[[], None] | None = None
        """Called after each mute or volume set (the home publishes it at once)."""

    @property
    def muted(self) -> bool:
        return self._state.muted

    @property
    def volume(self) -> int | None:
        """The volume last set here, in percent (None: never set, the mixer's own)."""
        return self._state.volume

    def start(self) -> None:
        """Re-apply the persisted mute and volume (call once the audio path exists)."""
        if self._state.muted:
            log.info("privacy mute is on (kept from before the restart)")
            self._apply_muted(True)
        if self._state.volume is not None:
            try:
                self._set_volume(self._state.volume)
            except AudioDeviceError as exc:
                log.warning("volume %d%% not restored: %s", self._state.volume, exc)

    def set_muted(self, muted: bool) -> None:
        """The privacy mute, kept across restarts."""
        if muted != self._state.muted:
            self._state.muted = muted
            self._state.save()
        log.info("privacy mute %s", "on" if muted else "off")
        self._apply_muted(muted)
        self._changed()

    def set_volume(self, percent: int) -> int:
        """Set the speaker volume (clamped to 0-100) and keep it; returns what was set.
        Raises ``AudioDeviceError`` naming the mixer control."""
        volume = self._set_volume(percent)
        self._state.save()
        return volume

    def step_volume(self, delta: int) -> int | None:
        """Move the volume by ``delta`` points from the mixer's current one; None (and a
        warning) when the mixer cannot be used."""
        try:
            current = self._mixer_now().volume()
        except AudioDeviceError as exc:
            self.close()
            log.warning("%s", exc)
            return None
        try:
            return self.set_volume(current + delta)
        except AudioDeviceError as exc:
            log.warning("%s", exc)
            return None

    def mixer_ready(self) -> bool:
        """Open the mixer now (the volume buttons check it at start); False, and a warning
        naming the control, when it cannot be."""
        try:
            self._mixer_now()
        except AudioDeviceError as exc:
            log.warning("volume buttons cannot work yet: %s", exc)
            return False
        return True

    def _set_volume(self, percent: int) -> int:
        try:
            volume = self._mixer_now().set_volume(percent)
        except AudioDeviceError:
            self.close()  # opened afresh next time: the card may come back (a USB speaker)
            raise
        self._state.volume = volume
        log.info("volume %d%%", volume)
        self._changed()
        return volume

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _mixer_now(self) -> Mixer:
        if self._mixer is None:
            self._mixer = self._open_mixer()
        return self._mixer

    def close(self) -> None:
        if self._mixer is not None:
            self._mixer.close()
            self._mixer = None


class Target(Protocol):
    """The daemon's talk inputs (``Daemon.set_talking``, ``Daemon.reconnect``); loop thread."""

    def set_talking(self, held: bool) -> None: ...

    def reconnect(self) -> None: ...


Cue = Callable[[str], object]
"""Plays an earcon by name ("mute", "unmute"; ``Daemon.cue``); optional."""


class Controls:
    def __init__(
        self,
        target: Target,
        settings: GpioSettings,
        levels: Levels,
        *,
        cue: Cue | None = None,
    ) -> None:
        self._target = target
        self._settings = settings
        self.levels = levels
        self._cue = cue
        self.talking = False
        self._long_press = False

    def start(self) -> None:
        """Check at start what the wired buttons need (the mixer, for volume buttons)."""
        if self._settings.volume_up_pin or self._settings.volume_down_pin:
            self.levels.mixer_ready()

    # --- talk ---------------------------------------------------------------------------

    def talk_pressed(self) -> None:
        self._long_press = False
        if self._settings.talk_mode is TalkMode.TOGGLE:
            self._talk(not self.talking)
        else:
            self._talk(True)

    def talk_released(self) -> None:
        if self._long_press:
            self._long_press = False  # the release that ends a long press does nothing
        elif self._settings.talk_mode is TalkMode.HOLD:
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

    # --- mute and volume -------------------------------------------------------------------

    def mute_pressed(self) -> None:
        muted = not self.levels.muted
        self.levels.set_muted(muted)
        if self._cue is not None:
            self._cue("mute" if muted else "unmute")

    def volume_up(self) -> None:
        self.levels.step_volume(+self._settings.volume_step)

    def volume_down(self) -> None:
        self.levels.step_volume(-self._settings.volume_step)
