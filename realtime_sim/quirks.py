"""Where the simulated service departs from the GA schema's letter, as the real one does.

Owns the pieces of a :class:`~realtime_sim.profiles.ServerProfile` that act on events:
tolerance (Inworld's ``session.providerData`` and the beta ``modalities`` alias taken out
of an update and noted, unless the profile is strict), the stricter checks of some variants
(a known-voice list, ``turn_detection: null`` ignored) and :class:`Timers`, the delays the
engine schedules on the clock its adapter feeds in. No clock reads, no I/O.

Imports only the standard library and the simulator's profiles and validate.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from realtime_sim.profiles import ServerProfile
from realtime_sim.validate import KNOWN_VOICES, SERVER_VAD_DEFAULTS, SimError

log = logging.getLogger("realtime_sim.engine")

Json = dict[str, Any]


class Timers:
    """Actions due at times on an outside clock (seconds, any origin)."""

    def __init__(self) -> None:
        self.now = 0.0
        """The clock as last told by :meth:`advance`."""
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # equal deadlines run in the order they were set

    def later(self, delay_ms: int, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay_ms`` from now; at once when the delay is not positive."""
        if delay_ms <= 0:
            action()
            return
        heapq.heappush(self._heap, (self.now + delay_ms / 1000, next(self._seq), action))

    def advance(self, now: float) -> None:
        """Move the clock to ``now`` and run what is due, in deadline order."""
        self.now = max(self.now, now)
        while self._heap and self._heap[0][0] <= self.now:
            _, _, action = heapq.heappop(self._heap)
            action()

    @property
    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None


class Tolerance:
    """What one session accepted beyond the GA schema, and Inworld's provider data."""

    def __init__(self, profile: ServerProfile) -> None:
        self.profile = profile
        self.provider_data: Json = {}
        """``session.providerData`` as merged from the client's updates."""
        self.notes: list[str] = []
        """What the GA schema would have rejected, in order."""

    def note(self, what: str) -> None:
        log.warning("simulator accepted what the GA schema would reject: %s", what)
        self.notes.append(what)

    def session_update(self, value: Any) -> Any:
        """``session`` of a session.update with the extension and the beta alias taken out,
        as the service takes them (a strict profile leaves them for the validator)."""
        if self.profile.strict_schema or not isinstance(value, dict):
            return value
        value = dict(value)
        if "providerData" in value:
            provider = value.pop("providerData")
            self.note("session.providerData (Inworld extension)")
            if isinstance(provider, dict):
                self.provider_data.update(copy.deepcopy(provider))
        if "modalities" in value:
            modalities = value.pop("modalities")
            self.note("session.modalities (beta alias of output_modalities)")
            value.setdefault("output_modalities", modalities)
        return value

    def response_options(self, value: Any) -> Any:
        """``response`` of a response.create with the beta ``modalities`` alias renamed."""
        if self.profile.strict_schema or not isinstance(value, dict) or "modalities" not in value:
            return value
        self.note("response.modalities (beta alias of output_modalities)")
        return {("output_modalities" if key == "modalities" else key): item
                for key, item in value.items()
                if not (key == "modalities" and "output_modalities" in value)}

    def check_session(self, merged: Json) -> Json:
        """The variants' own rules on a merged session (may adjust it); raises SimError."""
        voice = merged["audio"]["output"]["voice"]
        if self.profile.param_less_errors and voice not in KNOWN_VOICES:
            raise SimError("invalid_value", f"Unknown voice '{voice}'.",
                           "session.audio.output.voice")
        audio_input = merged["audio"]["input"]
        if self.profile.keeps_turn_detection and audio_input["turn_detection"] is None:
            # The variant of the service that does not honour a null: its own VAD stays on.
            log.info("simulator profile keeps-turn-detection: ignoring turn_detection null")
            audio_input["turn_detection"] = dict(SERVER_VAD_DEFAULTS)
        return merged

    @property
    def auto_tool_response(self) -> bool:
        """Whether a function_call_output item gets a response without response.create."""
        return (self.profile.auto_tool_response
                and self.provider_data.get("auto_tool_response", True) is not False)
