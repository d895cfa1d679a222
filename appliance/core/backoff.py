"""Reconnect delays, sans I/O: exponential backoff with full jitter.

The n-th delay is uniform in [0, min(cap, first * 2**n)], so the first retry comes within
``first`` seconds and a fleet of appliances does not reconnect in lockstep after an outage.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, first: float = 1.0, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        self._first = first
        self._cap = cap
        self._rand = rand
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._first * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return float(self._rand()) * ceiling

    def reset(self) -> None:
        """After a healthy session, start again from the short delays."""
        self._attempt = 0
