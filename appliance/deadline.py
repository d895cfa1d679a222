"""One event-loop timer at a pure core's next deadline.

A core with time as an input says when it next has something to do (``next_deadline()``)
and does it in ``tick(now)``; this adapter is the only thing that waits. It decides
nothing: it fires at the time it was given and hands the loop's clock to the callback, which
ticks the core, routes its actions and schedules again. So a waiting appliance's loop does
not wake on a clock. Imports: asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    """``schedule(due)`` keeps one ``loop.call_at`` pending at the earliest deadline asked.

    A deadline that moves later (or goes away) leaves the earlier timer in place: it fires,
    the core finds nothing due, and the callback schedules the next one. That is one
    spurious wake-up at most, instead of a cancel and a new timer at every input.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[float], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self, due: float | None) -> None:
        timer = self._timer
        if due is None or (timer is not None and timer.when() <= due):
            return
        if timer is not None:
            timer.cancel()
        self._timer = self._loop.call_at(due, self._due)

    def _due(self) -> None:
        self._timer = None
        self._fire(self._loop.time())

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
