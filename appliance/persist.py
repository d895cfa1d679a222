"""Small settings that survive restarts and reconnects: the privacy mute and the volume.

They are the daemon's (``appliance.controls.Levels``), whether set by a button or by voice
and whether or not GPIO is configured; only their directory's key lives under ``[gpio]``.

Owns where they live (``[gpio] state_dir``, else ``$STATE_DIRECTORY`` from systemd's
``StateDirectory=``, else ``$XDG_STATE_HOME/appliance`` or ``~/.local/state/appliance``) and
how they are written (a JSON file replaced atomically, so a power cut leaves the old or the
new file, never half of one). Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "controls.json"


def state_dir(configured: str = "") -> Path:
    """The directory persistent state goes to (see the module docstring for the order)."""
    if configured:
        return Path(configured).expanduser()
    systemd = os.environ.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])  # several StateDirectory= entries are ':'-joined
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "appliance"


class SavedControls:
    """``muted`` and ``volume`` (percent, None until first changed), kept in one file.

    A missing or unreadable file gives the defaults; a failed write is logged, never raised:
    a read-only state directory must not stop the appliance from working.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self.muted = False
        self.volume: int | None = None
        data = self._read()
        if isinstance(data.get("muted"), bool):
            self.muted = data["muted"]
        volume = data.get("volume")
        if isinstance(volume, int) and not isinstance(volume, bool) and 0 <= volume <= 100:
            self.volume = volume

    def _read(self) -> dict[str, Any]:
        return read_json(self.path)

    def save(self) -> None:
        """Write the current values atomically (temp file, fsync, rename)."""
        try:
            write_atomically(self.path, json.dumps({"muted": self.muted, "volume": self.volume}))
        except OSError as exc:
            log.warning("cannot save %s: %s", self.path, exc)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object saved at ``path``; ``{}`` when there is none or it cannot be read
    (logged: a damaged state file costs the saved state, never the start)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temp file, fsync, rename, so a power cut leaves the old
    or the new file, never half of one; raises ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
