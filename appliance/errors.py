"""The project's exception tree. Adapters translate library errors into these.

    ApplianceError
    ├── ConfigError            a config file or value is wrong (exit 78, EX_CONFIG)
    ├── CredentialError        the API key is missing or unreadable (exit 78)
    ├── AudioDeviceError       an ALSA device cannot be opened or has failed
    ├── ProtocolError          a server event is malformed (logged, survived)
    └── TransportError         the connection failed or was lost
        └── AuthenticationError  the server refused the credential (401/403)

Messages name what was wrong (key path, device name, event type) and never carry the API key.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(ApplianceError):
    """A config file or one of its values is invalid. ``key`` is the dotted key path."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class CredentialError(ApplianceError):
    """The API key could not be found or read."""


class AudioDeviceError(ApplianceError):
    """An ALSA device failed to open, or failed while running."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"ALSA device {device!r}: {message}")


class ProtocolError(ApplianceError):
    """A server event could not be decoded or lacks a required field."""

    def __init__(self, message: str, event_type: str | None = None) -> None:
        self.event_type = event_type
        super().__init__(f"{event_type}: {message}" if event_type else message)


class TransportError(ApplianceError):
    """Connecting failed or the connection was lost. ``retryable`` says whether to retry."""

    retryable = True


class AuthenticationError(TransportError):
    """The server refused the credential at the handshake (HTTP 401 or 403)."""
