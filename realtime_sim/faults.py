"""Switchable faults for the loopback simulator: a hostile server on demand.

Owns :class:`Fault` (one fault, parsed from the ``appliance simulate --fault`` syntax), the
catalogue of malformed frames and error events, and :class:`ConnectionFaults`, which the
server's writer hands every outgoing event to. The server calls only three things:
``FaultPlan.refusal(attempt)`` in its handshake check, ``FaultPlan.for_connection(attempt)``
when a connection opens, and ``ConnectionFaults.send(websocket, event)`` instead of
``websocket.send``. Everything a fault does happens here.

Syntax: ``NAME[:ARG][@N]``. ``N`` is how many handshake attempts, counted from the first,
the fault affects (default 1, so the client's reconnect finds a healthy server; ``@0`` = all
of them).

    refuse:STATUS        handshake answered with HTTP STATUS (401, 403, 500, ...)
    no-session-created   connection accepted, then not one event is sent
    drop[:DELTAS]        after DELTAS audio deltas (default 2): TCP FIN, no closing handshake
    reset[:DELTAS]       after DELTAS audio deltas: TCP RST (SO_LINGER 0, abort)
    close[:CODE]         after 2 audio deltas: a clean close frame with CODE (default 1011)
    stop-reading[:S]     once configured, the server reads nothing for S seconds (default 10);
                         the client's sends pile up and its pings go unanswered
    silent               from the first response on, the server sends no events (pings are
                         still answered, as a hung model behind a live proxy would)
    drip[:MS]            every audio delta is held back MS ms (default 250): a slow drip
    malformed[:KIND]     before the connection's first audio delta, the malformed frame
                         KIND (default: the next kind in ``MALFORMED`` per connection);
                         several ``malformed`` faults send several frames
    error[:TYPE/CODE]    before the connection's first audio delta, an error event
                         (default: every one in ``ERROR_EVENTS``)

Injected frames come once per connection: an error event repeated on every response would
make a client that re-requests a refused response loop, which tests nothing useful.

Imports websockets' server connection type and the simulator's ``Json`` alias only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

Json = dict[str, Any]
Frame = str | bytes

HUGE_DELTA_BYTES = 20 * 1024 * 1024
"""Size of the base64 text of the ``huge-delta`` frame (20 MiB)."""

# Error events the realtime service documents (GA OpenAI vocabulary plus what the seeds
# name): (type, code, param). Every code the simulator itself emits is here too.
ERROR_EVENTS: tuple[tuple[str, str | None, str | None], ...] = (
    ("invalid_request_error", "invalid_value", "session.audio.input.transcription.model"),
    ("invalid_request_error", "invalid_value", None),
    ("invalid_request_error", "invalid_json", None),
    ("invalid_request_error", "invalid_event", None),
    ("invalid_request_error", "unknown_event_type", None),
    ("invalid_request_error", "unknown_parameter", "session.bogus"),
    ("invalid_request_error", "missing_required_parameter", "item_id"),
    ("invalid_request_error", "input_audio_buffer_commit_empty", None),
    ("invalid_request_error", "conversation_already_has_active_response", None),
    ("invalid_request_error", "response_cancel_not_active", None),
    ("invalid_request_error", "session_expired", None),
    ("invalid_request_error", "rate_limit_exceeded", None),
    ("server_error", None, None),
    ("server_error", "server_error", None),
)


def _malformed_frame(kind: str, item_id: str) -> Frame:
    """One frame of the malformed ``kind`` for a reply item (built only when sent: the
    huge one is 20 MiB)."""
    audio_delta = {"type": "response.output_audio.delta", "item_id": item_id,
                   "output_index": 0, "content_index": 0}
    frames: dict[str, Callable[[], Frame]] = {
        "invalid-json": lambda: '{"type": "response.output_audio.delta", "delta": ',
        "binary": lambda: b"\x00\x01\x02\xff" * 64,
        "not-object": lambda: '["response.output_audio.delta", 1, 2]',
        "no-type": lambda: '{"item_id": "x"}',
        "missing-field": lambda: json.dumps(
            {"type": "response.output_audio.delta", "item_id": item_id}
        ),
        "wrong-type": lambda: json.dumps({**audio_delta, "delta": 12345}),
        "wrong-type-response": lambda: json.dumps({"type": "response.created", "response": "r"}),
        "unknown-event": lambda: json.dumps({"type": "response.hologram.delta", "delta": "?"}),
        "bad-base64": lambda: json.dumps({**audio_delta, "delta": "not base64 at all!!"}),
        "odd-pcm": lambda: json.dumps(
            {**audio_delta, "delta": base64.b64encode(b"\x01\x02\x03").decode()}
        ),
        "huge-delta": lambda: json.dumps({**audio_delta, "delta": "A" * HUGE_DELTA_BYTES}),
    }
    return frames[kind]()


MALFORMED: tuple[str, ...] = (
    "invalid-json", "binary", "not-object", "no-type", "missing-field", "wrong-type",
    "wrong-type-response", "unknown-event", "bad-base64", "odd-pcm", "huge-delta",
)
"""The malformed frame kinds (``malformed:KIND``)."""

_DEFAULT_ARGS = {"drop": "2", "reset": "2", "close": "1011", "stop-reading": "10", "drip": "250"}
_NEEDS_ARG = ("refuse",)
_NAMES = ("refuse", "no-session-created", "drop", "reset", "close", "stop-reading", "silent",
          "drip", "malformed", "error")


class FaultSpecError(ValueError):
    """A ``--fault`` value that does not parse; the message names what is wrong."""


@dataclass(frozen=True)
class Fault:
    """One switchable fault; see the module docstring for the names and arguments."""

    name: str
    """One of the fault names."""
    arg: str = ""
    """The fault's argument (status, delta count, code, seconds, ms or kind)."""
    attempts: int = 1
    """Handshake attempts affected, from the first; 0 = every one."""

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise FaultSpecError(f"unknown fault {self.name!r} (one of: {', '.join(_NAMES)})")
        if self.attempts < 0:
            raise FaultSpecError(f"fault {self.name}: @N must be >= 0, got {self.attempts}")
        if self.name in _NEEDS_ARG and not self.arg:
            raise FaultSpecError(f"fault {self.name} needs an argument ({self.name}:STATUS)")
        if self.name in ("refuse", "drop", "reset", "close", "drip", "stop-reading"):
            value = self.number
            if self.name == "refuse" and not 400 <= value <= 599:
                raise FaultSpecError(f"fault refuse: status must be 400-599, got {self.arg}")
            if self.name == "close" and not 1000 <= value <= 4999:
                raise FaultSpecError(f"fault close: code must be 1000-4999, got {self.arg}")
        if self.name == "malformed" and self.arg and self.arg not in MALFORMED:
            raise FaultSpecError(
                f"fault malformed: unknown kind {self.arg!r} (one of: {', '.join(MALFORMED)})"
            )
        if self.name == "error" and self.arg and self.arg.count("/") != 1:
            raise FaultSpecError(f"fault error: expected TYPE/CODE, got {self.arg!r}")

    @property
    def number(self) -> float:
        """The argument (or its default) as a number."""
        text = self.arg or _DEFAULT_ARGS.get(self.name, "0")
        try:
            value = float(text)
        except ValueError:
            raise FaultSpecError(f"fault {self.name}: expected a number, got {text!r}") from None
        if value < 0:
            raise FaultSpecError(f"fault {self.name}: expected a number >= 0, got {text!r}")
        return value

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``NAME[:ARG][@N]`` to a ``Fault``; raises ``FaultSpecError``."""
        text, _, count = spec.strip().partition("@")
        name, _, arg = text.partition(":")
        attempts = 1
        if count:
            try:
                attempts = int(count)
            except ValueError:
                raise FaultSpecError(f"fault {spec!r}: @N must be a whole number") from None
        return cls(name, arg, attempts)

    def applies_to(self, attempt: int) -> bool:
        return self.attempts == 0 or attempt < self.attempts


@dataclass
class FaultPlan:
    """The simulator's faults; shared by every connection, read-only."""

    faults: Sequence[Fault] = ()

    def refusal(self, attempt: int) -> int | None:
        """The HTTP status to refuse handshake ``attempt`` (0-based) with, or None."""
        for fault in self.faults:
            if fault.name == "refuse" and fault.applies_to(attempt):
                return int(fault.number)
        return None

    def for_connection(self, attempt: int) -> ConnectionFaults:
        return ConnectionFaults([f for f in self.faults if f.applies_to(attempt)], _attempt=attempt)


@dataclass(eq=False)  # one per connection, kept in a set by the server
class ConnectionFaults:
    """The faults of one accepted connection, with their progress."""

    faults: list[Fault]
    deltas_sent: int = 0
    tripped: list[str] = field(default_factory=list)
    """Names of the faults that have acted on this connection, in order."""
    _injected: bool = False
    _silent: bool = False
    _attempt: int = 0
    _resume: asyncio.TimerHandle | None = None
    _paused: asyncio.Transport | None = None

    def _get(self, name: str) -> Fault | None:
        return next((f for f in self.faults if f.name == name), None)

    async def send(self, websocket: ServerConnection, event: Json) -> bool:
        """Send ``event`` as the faults dictate; False: the connection is finished."""
        kind = event.get("type")
        if self._silent or self._get("no-session-created") is not None:
            self._trip("silent" if self._silent else "no-session-created")
            return True
        if kind == "response.created" and self._get("silent") is not None:
            self._silent = True
            self._trip("silent")
            return True
        if kind == "response.output_audio.delta":
            if not self._injected:
                self._injected = True
                for frame in self._injections(str(event.get("item_id", ""))):
                    await websocket.send(frame)
            drip = self._get("drip")
            if drip is not None:
                self._trip("drip")
                await asyncio.sleep(drip.number / 1000)
        await websocket.send(json.dumps(event))
        stall = self._get("stop-reading") if kind == "session.updated" else None
        if stall is not None and "stop-reading" not in self.tripped:
            self._stop_reading(websocket, stall.number)
        if kind == "response.output_audio.delta":
            self.deltas_sent += 1
            return await self._maybe_cut(websocket)
        return True

    def _trip(self, name: str) -> None:
        if name not in self.tripped:
            self.tripped.append(name)

    def _injections(self, item_id: str) -> list[Frame]:
        frames: list[Frame] = []
        for bad in (f for f in self.faults if f.name == "malformed"):
            self._trip("malformed")
            frames.append(_malformed_frame(bad.arg or MALFORMED[self._attempt % len(MALFORMED)],
                                           item_id))
        if (err := self._get("error")) is not None:
            self._trip("error")
            chosen: list[tuple[str, str | None, str | None]] = list(ERROR_EVENTS)
            if err.arg:
                name, _, code_text = err.arg.partition("/")
                chosen = [(name, code_text or None, None)]
            for etype, code, param in chosen:
                frames.append(json.dumps({"type": "error", "event_id": "event_fault", "error": {
                    "type": etype, "code": code, "param": param,
                    "message": f"simulated fault: {etype}/{code}", "event_id": None}}))
        return frames

    async def _maybe_cut(self, websocket: ServerConnection) -> bool:
        for fault in self.faults:
            if fault.name in ("drop", "reset") and self.deltas_sent >= fault.number:
                self._trip(fault.name)
                transport = websocket.transport
                if fault.name == "reset":
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    transport.abort()
                else:
                    transport.close()
                return False
            if fault.name == "close" and self.deltas_sent >= 2:
                self._trip("close")
                await websocket.close(int(fault.number), "simulated fault")
                return False
        return True

    def _stop_reading(self, websocket: ServerConnection, seconds: float) -> None:
        self._trip("stop-reading")
        transport = websocket.transport
        transport.pause_reading()
        self._resume = asyncio.get_running_loop().call_later(seconds, self.release)
        self._paused = transport

    def release(self) -> None:
        """End a ``stop-reading`` stall now (the server is closing: let the connection
        see its peer's close instead of waiting for the stall to run out)."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._paused is not None and not self._paused.is_closing():
            self._paused.resume_reading()
        self._paused = None


def parse_faults(specs: Sequence[str]) -> FaultPlan:
    """The ``--fault`` values to a plan; raises ``FaultSpecError`` naming the bad one."""
    return FaultPlan(tuple(Fault.parse(spec) for spec in specs))
