"""Driving the sans-I/O ``Session`` in tests: a configured session, server events in, the
client events it sent out. Synchronous (time is an input); ``from session_steps import ...``
(pytest puts this directory on ``sys.path``)."""

from __future__ import annotations

import json
from typing import Any

from appliance.config import parse_config
from appliance.core.session import Send, Session


def ready_session(config: dict[str, Any] | None = None, now: float = 0.0,
                  drain: bool = True) -> Session:
    """A session on a configured connection (``session.created`` and ``session.updated`` fed
    at ``now``); ``drain`` drops the actions that took (the ``session.update``, READY)."""
    s = Session(parse_config(config or {}))
    s.connecting()
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_1"}}, now)
    feed(s, {"type": "session.updated", "session": {}}, now)
    if drain:
        s.take()
    return s


def feed(s: Session, event: dict[str, Any], now: float = 0.0) -> None:
    """One server event, as a text frame, at ``now``."""
    s.server_frame(json.dumps(event), now)


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    """The client events among ``actions``, parsed."""
    return [json.loads(a.text) for a in actions if isinstance(a, Send)]


def sent_types(actions: list[Any]) -> list[str]:
    return [e["type"] for e in sent(actions)]
