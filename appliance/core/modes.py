"""Modes of the core's decisions that the config chooses, as enums.

Owns ``BargeIn`` (``[gate] barge_in``). The config parses it once; the core compares members,
never strings. Each value is its TOML spelling, and the enum is a ``StrEnum`` so a member
still equals that spelling (code that compares or converts the text keeps working).
Imports only the standard library.
"""

from __future__ import annotations

import enum


class BargeIn(enum.StrEnum):
    """What may interrupt the agent while it speaks (``[gate] barge_in``)."""

    LOCAL = "local"
    """The local gate's speech onset or the talk button (and, with server turns, the server's
    ``speech_started``)."""
    SERVER = "server"
    """Only the server's ``input_audio_buffer.speech_started``."""
    OFF = "off"
    """Nothing: the agent always finishes speaking."""
