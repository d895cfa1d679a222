"""Logging setup: plain lines on stderr (journald integration is added by the service work)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("appliance")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
