"""The simulator's own minimal reading of client frames: the event type of a JSON text.

The simulator stands in for the real service, so it decodes what clients send itself
instead of borrowing the daemon's protocol module (which may change shape at any time).
Imports only the standard library.
"""

from __future__ import annotations

import json


def event_type(text: str) -> str | None:
    """The ``type`` of a client event, or None when ``text`` is not a JSON object with a
    string ``type`` (the engine reports those properly)."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    return kind if isinstance(kind, str) else None
