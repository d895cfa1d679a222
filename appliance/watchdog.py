"""The systemd watchdog: ping only while the daemon demonstrably makes progress.

Owns the health rule and the ping task. The task runs on the event loop, so a blocked loop
stops the pings by itself; on top of that every ping needs the audio threads alive and the
capture thread's ``heartbeat`` (``time.monotonic()`` of its last successful read) recent.
Playback may idle for hours, so its heartbeat is only required while a reply is playing. A
capture thread that is retrying a vanished device is not hung: during a reported device
outage its stale heartbeat is allowed, so unplugging the microphone does not get the
service restarted (and eventually stopped by the start limit).

``audio_problem`` is pure (threads are read through ``alive``/``heartbeat``, tolerated when
missing); ``run_watchdog`` is the loop. Imports only the standard library and
``appliance.notify``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.notify import Notifier

log = logging.getLogger(__name__)

CAPTURE_STALL_S = 2.0
"""A capture thread with no successful read for this long is hung (periods are 5-40 ms)."""
PLAYBACK_STALL_S = 2.0
"""While a reply plays, a playback thread that wrote nothing for this long is hung."""


def _alive(thread: object) -> bool:
    alive = getattr(thread, "alive", None)
    if alive is None:
        is_alive = getattr(thread, "is_alive", None)
        return bool(is_alive()) if callable(is_alive) else True
    return bool(alive)


def audio_problem(
    capture: object | None,
    player: object | None,
    *,
    now: float,
    playing: bool,
    device_outage: bool = False,
) -> str | None:
    """Why the audio path is not healthy, or None when it is.

    ``now`` is ``time.monotonic()``; ``playing``: a reply is being played; ``device_outage``:
    a device error has been reported and not yet cleared.
    """
    for name, thread, need_fresh, limit in (
        ("capture", capture, not device_outage, CAPTURE_STALL_S),
        ("playback", player, playing, PLAYBACK_STALL_S),
    ):
        if thread is None:
            return f"{name} thread is not running"
        if not _alive(thread):
            return f"{name} thread has stopped"
        beat = getattr(thread, "heartbeat", None)
        if need_fresh and isinstance(beat, int | float) and now - beat > limit:
            return f"{name} thread made no progress for {now - beat:.1f} s"
    return None


async def run_watchdog(
    notifier: Notifier, problem: Callable[[], str | None], interval: float | None
) -> None:
    """Send WATCHDOG=1 every ``interval`` seconds while ``problem()`` is None.

    Returns at once when systemd asked for no watchdog (``interval`` None). Each change
    between healthy and unhealthy is logged once.
    """
    if interval is None:
        return
    log.debug("watchdog: pinging every %.1f s", interval)
    reported = ""
    while True:
        trouble = problem()
        if trouble is None:
            notifier.watchdog()
            if reported:
                log.warning("watchdog: healthy again, pinging systemd")
                reported = ""
        elif trouble != reported:
            log.error(
                "watchdog: not pinging systemd: %s", trouble, extra={"ERROR_CODE": "watchdog"}
            )
            reported = trouble
        await asyncio.sleep(interval)
