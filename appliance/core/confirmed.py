"""What the service confirmed it does, and how the session adapts: one answer per turn.

The daemon trusts nothing it has not seen confirmed. Per connection (``Terms``) it reads each
``session.updated`` and works from what the service actually configured, and it handles a
refused ``session.update`` by what the error refers to (``error.event_id``), not by the shape
of ``param``:

- Turn detection. With local turns the daemon sends ``turn_detection: null`` and commits and
  creates each response itself. A service that keeps its own detection anyway would end the
  turn (and answer it) during the local hang-over, and the daemon's commit + create would
  answer it twice. So the echo is checked: if detection is still on and would act
  (``create_response`` or ``interrupt_response``), the daemon asks once for a detector that
  does nothing (``QUIET_TURN_DETECTION``: no response, no interruption, no turn end before the
  local one) and counts the session as configured only when that is echoed back. If that is
  ignored too, it hands turns to the service: it no longer commits or creates (the service's
  ``speech_stopped`` and its response are the turn), and says so in the log.
- Tool outputs. Inworld creates the next response by itself after a ``function_call_output``
  unless ``session.providerData.auto_tool_response`` is false. With tools configured (or
  ``[session.providerData]`` set) the daemon sets that key explicitly (false unless the user
  set it in ``[session.providerData]``) and so knows who
  creates the response after tools. A service that refuses ``providerData`` gets the session
  without it; one that answers tool outputs anyway shows it by refusing the daemon's
  ``response.create`` (``conversation_already_has_active_response``): the daemon drops that
  create and leaves tool answers to the service from then on (``Provider``, per run).
- A refused update of the whole session is logged once with the server's message and the
  config key when it can be told (from ``param``, or a value of the update the message
  quotes). A key the user set is then left out and the rest sent again (the service's
  default applies for it: the device keeps working, and the state's detail, STATUS=, says
  what was refused until a reload sends the whole session again). When no key can be
  told, the session is refused as a whole: the ERROR state, and the same session is sent
  again after 5 s, 10 s, ... up to 5 min, and at once after a reload. A refused partial
  update (a reload) leaves the session as it was, logged.

Imports the standard library and ``appliance.core``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("appliance.core.session")

AUTO_TOOL_RESPONSE = "auto_tool_response"
"""The ``session.providerData`` key that makes Inworld answer tool outputs by itself."""
QUIET_TURN_DETECTION: Mapping[str, Any] = {
    "type": "server_vad",
    "create_response": False,
    "interrupt_response": False,
    # Longer than any pause the local gate lets through (its hang-over ends the turn first),
    # so the service never commits part of a turn before the daemon's commit.
    "silence_duration_ms": 10_000,
    "idle_timeout_ms": None,
}
"""Asked for when ``turn_detection: null`` was not honoured: a detector that does nothing."""
RETRY_FIRST_S = 5.0
RETRY_CAP_S = 300.0


@dataclass(frozen=True, slots=True)
class TurnTerms:
    """Who ends turns and makes responses on this connection, as the service confirmed it."""

    server_turns: bool = False
    """The service ends turns; the daemon's gate does not commit or create."""
    server_creates: bool = False
    """The service creates the response when it ends a turn."""
    server_interrupts: bool = False
    """The service cancels its response when it hears speech."""


class Terms:
    """One connection's confirmed configuration and the update it is waiting on."""

    def __init__(self) -> None:
        self.turns = TurnTerms()
        self.quiet_asked = False
        """The quieting update went out on this connection (asked once)."""
        self.quiet_event_id = ""
        self.whole_ids: set[str] = set()
        """Event ids of the updates that carried the whole session."""
        self.degraded = ""
        """A refused key left out of the session (shown with the state until a reload)."""
        self.rejected = ""
        """The server's message while the whole session is refused ("" otherwise)."""
        self.retry_at: float | None = None
        self.retries = 0

    def retry_delay(self) -> float:
        delay = min(RETRY_CAP_S, RETRY_FIRST_S * 2.0**self.retries)
        self.retries = min(self.retries + 1, 16)
        return delay


class Habits:
    """What the daemon sends because of how this service behaves, and what the run learnt
    about it (kept across reconnects: the next connection is the same service)."""

    def __init__(self) -> None:
        self.provider_data_refused = False
        """The service refused ``providerData``: it is not sent again in this run."""
        self.server_answers_tools = False
        """The service creates the response after tool outputs (set, or observed)."""
        self.ignores_null_turn_detection = False
        """``turn_detection: null`` was not honoured: ``QUIET_TURN_DETECTION`` goes instead."""

    def apply(self, session: dict[str, Any], *, whole: bool) -> tuple[dict[str, Any], bool]:
        """``session`` as it is sent (a copy where changed), and whether it asks for the
        quiet detector. Provider data: the keys the daemon depends on are set on the whole
        session when it has tools, on any update that carries ``providerData``."""
        if self.provider_data_refused:
            session.pop("providerData", None)
            self.server_answers_tools = False
        elif (whole and session.get("tools")) or "providerData" in session:
            # Only a session with tools depends on it: a service that refuses the extension
            # is not sent one it does not need.
            provider = copy.deepcopy(dict(session.get("providerData") or {}))
            provider.setdefault(AUTO_TOOL_RESPONSE, False)
            session["providerData"] = provider
            self.server_answers_tools = provider[AUTO_TOOL_RESPONSE] is True
        reported, value = turn_detection_of(session)
        if not (self.ignores_null_turn_detection and reported and value is None):
            return session, False
        session = copy.deepcopy(session)
        session["audio"]["input"]["turn_detection"] = dict(QUIET_TURN_DETECTION)
        return session, True


def turn_detection_of(session: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """(reported, value) of ``audio.input.turn_detection`` in an echoed session."""
    audio = session.get("audio")
    audio_in = audio.get("input") if isinstance(audio, Mapping) else None
    if not isinstance(audio_in, Mapping) or "turn_detection" not in audio_in:
        return False, None
    value = audio_in["turn_detection"]
    return True, value if isinstance(value, Mapping) else None


def leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    else:
        yield path, value


def without(session: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """A copy of ``session`` without the key at ``path`` ("session.a.b"); None when it has
    no such key."""
    names = path.split(".")[1:]
    copied = copy.deepcopy(dict(session))
    node: Any = copied
    for name in names[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not names or not isinstance(node, dict) or names[-1] not in node:
        return None
    del node[names[-1]]
    return copied


def quoted_key(session: Mapping[str, Any], message: str) -> str:
    """The ``session.*`` path of a value of ``session`` that ``message`` quotes ("" if none):
    the key a param-less refusal ("Unknown voice 'Nope'.") is about."""
    for path, value in leaves(session, "session"):
        if isinstance(value, str) and len(value) > 1 and (
            f"'{value}'" in message or f'"{value}"' in message
        ):
            return path
    return ""
