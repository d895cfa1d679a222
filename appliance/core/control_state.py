"""The loop thread's side of the capture controls: what it told the front end so far.

``ControlState`` turns each change (the talk button, mute, the speaker, an earcon's hold) into
one ``Control`` message for ``Listener.control``, and replays the whole state to a new front
end. Imports ``appliance.core.listen`` only.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.core.listen import Control


class ControlState:
    """The loop thread's view of what it told the capture side: each change becomes one
    ``Control`` message, and a new front end gets the whole state (``replay``)."""

    def __init__(self) -> None:
        self.talking = False
        self.muted = False
        self.playing = False
        self.earcon = False

    def talk(self, held: bool) -> Control | None:
        if held == self.talking:
            return None
        self.talking = held
        return Control.TALK_PRESSED if held else Control.TALK_RELEASED

    def mute(self, on: bool) -> Control | None:
        if on == self.muted:
            return None
        self.muted = on
        return Control.MUTE_ON if on else Control.MUTE_OFF

    def speaker(self, playing: bool) -> Control | None:
        if playing == self.playing:
            return None
        self.playing = playing
        return Control.SPEAKER_PLAYING if playing else Control.SPEAKER_IDLE

    def hold(self, on: bool) -> Control | None:
        if on == self.earcon:
            return None
        self.earcon = on
        return Control.EARCON_HOLD if on else Control.EARCON_RELEASE

    def replay(self) -> Iterable[Control]:
        """The messages that bring a fresh ``Listener`` to this state."""
        if self.talking:
            yield Control.TALK_PRESSED
        if self.muted:
            yield Control.MUTE_ON
        if self.playing:
            yield Control.SPEAKER_PLAYING
        if self.earcon:
            yield Control.EARCON_HOLD
