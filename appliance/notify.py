"""systemd notification adapter (sd_notify): READY, STATUS, STOPPING, RELOADING, WATCHDOG.

Owns systemd-python's ``daemon.notify`` and the reading of ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID``. Without ``NOTIFY_SOCKET`` every call is a no-op; a
socket that vanished is logged once, never fatal. When to ping the watchdog is decided by
``appliance.watchdog``; this module only says how often systemd wants it.
Imports only the standard library and systemd-python.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from systemd import daemon  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked for.

    ``WATCHDOG_PID``, when set, must be this process: a child that inherited the
    environment must not ping on its parent's behalf.
    """
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wanted_pid = env.get("WATCHDOG_PID", "")
    if wanted_pid and wanted_pid != str(pid):
        return None
    return usec / 2_000_000


class Notifier:
    """Sends sd_notify messages; the daemon calls it on every life-cycle change."""

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
        """Start-up (or a reload) is complete."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """The one-line status ``systemctl status`` shows; repeats are not sent."""
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A reload has begun; ``ready()`` ends it. MONOTONIC_USEC lets systemd order them."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog(self) -> None:
        """Tell the watchdog the daemon is healthy."""
        self._send("WATCHDOG=1")
