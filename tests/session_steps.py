"""Driving the sans-I/O ``Session`` in tests: a configured session, server events in, the
client events it sent out. Synchronous (time is an input); ``from session_steps import ...``
(pytest puts this directory on ``sys.path``).

Events go through the transports' JSON codec both ways, so the tests read like the wire:
``feed`` takes the server event's JSON object, ``sent`` gives the client events' objects."""

from __future__ import annotations

import json
from typing import Any

from appliance.config import parse_config, session_settings
from appliance.core.session import Send, Session
from appliance.transport import codec


def new_session(config: dict[str, Any] | None = None) -> Session:
    """A fresh session for the config given as a TOML-like dict."""
    return Session(session_settings(parse_config(config or {})))


def ready_session(config: dict[str, Any] | None = None, now: float = 0.0,
                  drain: bool = True) -> Session:
    """A session on a configured connection (``session.created`` and ``session.updated`` fed
    at ``now``); ``drain`` drops the actions that took (the ``session.update``, READY)."""
    s = new_session(config)
    s.connecting()
    s.connected()
    feed(s, {"type": "session.created", "session": {"id": "sess_1"}}, now)
    feed(s, {"type": "session.updated", "session": {}}, now)
    if drain:
        s.take()
    return s


def feed(s: Session, event: dict[str, Any], now: float = 0.0) -> None:
    """One server event, as a text frame through the codec, at ``now``."""
    feed_frame(s, json.dumps(event), now)


def feed_frame(s: Session, frame: str | bytes, now: float = 0.0) -> None:
    """One raw frame (malformed ones too) through the codec, at ``now``."""
    s.server_event(codec.decode(frame), now)


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    """The client events among ``actions``, as their JSON objects without ``event_id``
    (``test_session.py`` checks the ids on their own)."""
    out = []
    for a in actions:
        if isinstance(a, Send):
            event = json.loads(codec.encode(a.event))
            event.pop("event_id", None)
            out.append(event)
    return out


def sent_types(actions: list[Any]) -> list[str]:
    return [a.event.type for a in actions if isinstance(a, Send)]
