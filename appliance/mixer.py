"""The ALSA mixer adapter (pyalsaaudio ``Mixer``): reads and sets the speaker volume.

Owns one simple mixer control and translates ``alsaaudio.ALSAAudioError`` into
``AudioDeviceError`` naming the control and card. Calls are short ioctls, fine on the loop.
Imports: ``alsaaudio``, ``appliance.errors``.
"""

from __future__ import annotations

import alsaaudio

from appliance.errors import AudioDeviceError


class Mixer:
    """One playback volume control, in percent. ``card`` -1 is the ``default`` ctl device."""

    def __init__(self, control: str, card: int = -1) -> None:
        self.control = control
        self.card = card
        where = "the default control device" if card < 0 else f"card {card}"
        self._name = f"mixer control {control!r} on {where}"
        try:
            self._mixer = alsaaudio.Mixer(control, cardindex=card)
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(
                control,
                f"cannot open {self._name} ({exc}); `amixer scontrols` lists the controls, "
                "set [gpio] mixer_control and mixer_card",
            ) from exc

    def volume(self) -> int:
        """The current volume in percent (the mean of the channels)."""
        try:
            levels = self._mixer.getvolume()
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(self.control, f"cannot read {self._name}: {exc}") from exc
        return round(sum(levels) / len(levels)) if levels else 0

    def set_volume(self, percent: int) -> int:
        """Set every channel to ``percent`` (clamped to 0-100); returns what was set."""
        percent = max(0, min(100, percent))
        try:
            self._mixer.setvolume(percent)
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(self.control, f"cannot set {self._name}: {exc}") from exc
        return percent

    def close(self) -> None:
        self._mixer.close()
