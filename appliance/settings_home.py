"""The settings of the home-facing features: the earcons (``[earcons]``), the local control
socket and announcements (``[control]``) and Home Assistant over MQTT (``[mqtt]``).

Frozen dataclasses like the rest of ``appliance.settings`` (which holds them in ``Config``);
their readers are ``appliance.config`` (earcons) and ``appliance.config_home``.
Imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

EARCON_NAMES = ("listening", "mute", "unmute", "error", "too_short", "wake", "alarm")


@dataclass(frozen=True)
class EarconSettings:
    """Short sounds for the user's cues (``appliance.earcons``). Each is "default" (the
    shipped sound), "" (silent) or the absolute path of a WAV file (PCM16, mono or stereo,
    any rate, at most ``earcons.MAX_SECONDS``)."""

    enabled: bool = True
    """Play earcons at all."""
    listening: str = "default"
    """Push-to-talk: the talk button was pressed, speak now."""
    mute: str = "default"
    """The privacy mute went on."""
    unmute: str = "default"
    """The privacy mute went off."""
    error: str = "default"
    """The connection was lost or an audio device failed (once until ready again)."""
    too_short: str = "default"
    """A push-to-talk press held too little audio to send."""
    wake: str = "default"
    """The wake word was heard (gate mode "wake")."""
    alarm: str = "default"
    """A timer or alarm rings (repeated); plays even when ``enabled`` is false."""

    def sound(self, name: str) -> str:
        """The configured value for one earcon name ("" when earcons are off, except the
        alarm: turning cues off must not silence a timer)."""
        value: str = getattr(self, name)
        return value if self.enabled or name == "alarm" else ""


DEFAULT_CONTROL_SOCKET = "/run/appliance/control.sock"


@dataclass(frozen=True)
class ControlSettings:
    """The local control socket (``appliance.control``) and announcements."""

    enabled: bool = True
    """Serve the control socket (``appliance status``, ``say``, ``ask``, ``mute``, ...)."""
    socket: str = DEFAULT_CONTROL_SOCKET
    """Its path; the unit's ``RuntimeDirectory=appliance`` makes ``/run/appliance``."""
    group: str = ""
    """Members of this group may use it (mode 0660); "" = the service and root only (0600).
    The service must be a member of the group (the unit's ``SupplementaryGroups=``)."""
    announce_earcon: str = "wake"
    """The earcon played before an announcement (one of the earcon names; "" = none)."""
    announce_wait_s: float = 120.0
    """An announcement waiting longer than this for a quiet moment is dropped (logged)."""


@dataclass(frozen=True)
class MqttSettings:
    """Home Assistant through an MQTT broker (``appliance.mqtt``); off by default."""

    enabled: bool = False
    """Connect to the broker and publish the device by MQTT discovery."""
    host: str = "localhost"
    """The broker's host name or address."""
    port: int = 1883
    """The broker's port (8883 is the usual one with TLS)."""
    tls: bool = False
    """Connect with TLS (the system's CA certificates)."""
    username: str = ""
    """"" = connect without credentials; the password is the systemd credential
    ``mqtt-password`` (``LoadCredential=``), never in this file."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery prefix."""
    device_name: str = "Voice appliance"
    """The device's name in Home Assistant."""
    node_id: str = "appliance"
    """The device's id in topics and unique ids (letters, digits, ``_`` and ``-``)."""
    keepalive_s: int = 30
    """MQTT keep-alive; the broker publishes "offline" (the last will) after 1.5 times this."""
