"""The ALSA mixer adapter (pyalsaaudio ``Mixer``): reads and sets the speaker volume.

Owns one simple mixer control and translates ``alsaaudio.ALSAAudioError`` into
``AudioDeviceError`` naming the control and card. Calls are short ioctls, fine on the loop.
Imports: ``alsaaudio``, ``appliance.errors``.
"""

from __future__ import annotations

import alsaaudio

from appliance.errors import AudioDeviceError


class Mixer:
    """One playback volume control, in percent: on card ``card``, or when that is -1 on the
    ALSA control device ``device`` ("default", "hw:CARD=Headphones", "pulse")."""

    def __init__(self, control: str, card: int = -1, device: str = "default") -> None:
        self.control = control
        self.card = card
        where = f"control device {device!r}" if card < 0 else f"card {card}"
        self._name = f"mixer control {control!r} on {where}"
        try:
            if card < 0:
                self._mixer = alsaaudio.Mixer(control, device=device)
            else:
                self._mixer = alsaaudio.Mixer(control, cardindex=card)
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(
                control,
                f"cannot open {self._name} ({exc}); `amixer scontrols` lists the controls, "
                "set [gpio] mixer_control and mixer_card or mixer_device",
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
