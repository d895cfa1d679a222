"""systemd notification adapter (sd_notify): READY, STATUS, STOPPING, WATCHDOG, RELOADING.

Owns systemd-python's ``daemon.notify``. Without ``NOTIFY_SOCKET`` every call is a no-op.
A socket that vanished is logged once, never fatal.
"""

from __future__ import annotations

import logging
import os

from systemd import daemon  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._warned = False
        self._last_status = ""

    def _send(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            daemon.notify(message)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd: %s", exc)

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")
