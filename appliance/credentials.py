"""The API key: where it comes from, and a wrapper that never prints it.

Sources, in order: the systemd credential ``$CREDENTIALS_DIRECTORY/inworld-api-key``
(``LoadCredential=`` in the unit; empty when its file is missing, from the unit's
``SetCredential=`` fallback, which is "no API key"), then the environment variable
``INWORLD_API_KEY`` (for running by hand).
The key is the Base64 string the Inworld portal shows; it is sent as ``Basic <key>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import CredentialError

CREDENTIAL_NAME = "inworld-api-key"
ENV_NAME = "INWORLD_API_KEY"


@dataclass(frozen=True, repr=False, eq=False)
class ApiKey:
    """A secret value with the place it came from. ``str()``/``repr()`` never show it."""

    _value: str
    source: str
    """Human description of where the key was read, for error messages."""

    def reveal(self) -> str:
        return self._value

    def authorization(self) -> str:
        """The ``Authorization`` header value for the realtime WebSocket."""
        return f"Basic {self._value}"

    def __repr__(self) -> str:
        return f"ApiKey(<redacted>, source={self.source!r})"

    __str__ = __repr__


def read_credential(name: str, env: Mapping[str, str]) -> tuple[str, Path] | None:
    """The stripped text of systemd credential ``name`` and its path (None: there is no such
    file); ``CredentialError`` naming the path when it cannot be read."""
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        return None
    path = Path(cred_dir) / name
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8").strip(), path
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read credential {path}: {exc.__class__.__name__}") from None


def load_api_key(env: Mapping[str, str] | None = None) -> ApiKey:
    """Find the API key; raises ``CredentialError`` saying where it looked."""
    env = os.environ if env is None else env
    found = read_credential(CREDENTIAL_NAME, env)
    if found is not None:
        value, path = found
        if not value:
            # The unit's SetCredential= fallback: LoadCredential='s file is missing.
            raise CredentialError(
                f"no API key: the systemd credential {CREDENTIAL_NAME} is empty (the file "
                "the unit's LoadCredential= names is missing or empty); store the key "
                "with 'sudo make key' in the appliance checkout"
            )
        return ApiKey(value, f"systemd credential {path}")
    value = env.get(ENV_NAME, "").strip()
    if value:
        return ApiKey(value, f"environment variable {ENV_NAME}")
    where = f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}"
    raise CredentialError(f"no API key: set {ENV_NAME} or provide the systemd credential {where}")


def scrubbed_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without the key, for any child process."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k not in (ENV_NAME, "CREDENTIALS_DIRECTORY")}
