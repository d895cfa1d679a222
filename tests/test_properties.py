"""Property tests (hypothesis) on the sans-I/O core: the decoder and the session machine.

The decoder: any frame at all (arbitrary text, bytes, JSON values, valid events with
fields removed, retyped or cut short) gives a ``ServerEvent`` or a ``ProtocolError``,
never another exception.

The session: arbitrary sequences of server events (valid, reordered, duplicated, truncated
or retyped) interleaved with local inputs (gate edges, audio, a player that reports like the
real one, connection changes, mute, device errors, tool results, ticks of the clock) never
raise out of the core and never leave it in an impossible state. The invariants, checked
after every step:

I1  nothing but ``None`` comes out of an input: no exception escapes.
I2  not connected (after ``disconnected`` and before ``connected``) means the state is
    OFFLINE, CONNECTING or ERROR, and nothing is played.
I3  SPEAKING means the speaker really has something: reply audio was handed to the player
    and not yet stopped or played out.
I4  THINKING and LISTENING only on a configured connection (or, for LISTENING, a turn the
    user started while configured).
I5  a ``conversation.item.truncate`` names an item whose audio was played on this
    connection, and its ``audio_end_ms`` is within 0 and the audio received for it.
I6  no ``input_audio_buffer.append`` before ``session.updated`` on the connection.
I7  after the session sends ``response.cancel``, no audio of that response is played.
I8  every action is one of the declared action types, and states change one at a time
    (no two identical ``StateChanged`` in a row).
I9  no ``response.create`` while a response is in progress on the connection (the API
    refuses it with ``conversation_already_has_active_response``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import Config, parse_config, session_settings
from appliance.core import protocol
from appliance.core.protocol import Malformed, ServerEvent
from appliance.core.session import (
    CallTool,
    EndOfReply,
    Play,
    Reconnect,
    Send,
    Session,
    StateChanged,
    StopPlayback,
    TooShort,
    Transcript,
    TurnTimings,
)
from appliance.core.state import State
from appliance.transport import codec

EXAMPLES = 300

# --- the decoder -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def pcm_b64(samples: int) -> str:
    return base64.b64encode(b"\x10\x00" * samples).decode()


IDS = st.sampled_from(["item_a", "item_b", "item_c"])
RESPONSES = st.sampled_from(["resp_1", "resp_2", "resp_3"])


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    item, resp = draw(IDS), draw(RESPONSES)
    kind = draw(st.sampled_from([
        "session.created", "session.updated", "error", "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
        "input_audio_buffer.timeout_triggered", "conversation.item.added",
        "conversation.item.done", "conversation.item.input_audio_transcription.completed",
        "conversation.item.truncated", "conversation.item.deleted", "response.created",
        "response.output_item.added", "response.output_item.done",
        "response.output_audio.delta", "response.audio.delta", "response.output_audio.done",
        "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
        "response.output_text.delta", "response.function_call_arguments.done",
        "response.done", "rate_limits.updated", "response.hologram.delta",
    ]))
    ev: dict[str, Any] = {"type": kind, "event_id": "event_x"}
    if kind.startswith("session."):
        ev["session"] = {"id": "sess_1", "type": "realtime"}
    elif kind == "error":
        ev["error"] = {
            "type": draw(st.sampled_from(["invalid_request_error", "server_error"])),
            "code": draw(st.sampled_from([
                None, "invalid_value", "response_cancel_not_active", "session_expired",
                "conversation_already_has_active_response", "input_audio_buffer_commit_empty",
            ])),
            "param": draw(st.sampled_from([None, "session.voice", "item_id"])),
            "message": "m",
        }
    elif kind == "input_audio_buffer.speech_started":
        ev["audio_start_ms"] = draw(st.integers(0, 10_000))
        ev["item_id"] = item
    elif kind == "input_audio_buffer.speech_stopped":
        ev["audio_end_ms"] = draw(st.integers(0, 10_000))
        ev["item_id"] = item
    elif kind in ("conversation.item.added", "conversation.item.done",
                  "response.output_item.added", "response.output_item.done"):
        role = draw(st.sampled_from(["user", "assistant"]))
        ev["item"] = {"id": item, "type": "message", "role": role, "content": []}
        if kind.startswith("response."):
            ev["response_id"] = resp
    elif kind in ("response.created", "response.done"):
        ev["response"] = {"id": resp, "status": draw(st.sampled_from(
            ["in_progress", "completed", "cancelled", "failed", "incomplete"])),
            "output": []}
    elif kind in ("response.output_audio.delta", "response.audio.delta"):
        ev.update(response_id=resp, item_id=item, output_index=0, content_index=0,
                  delta=pcm_b64(draw(st.integers(0, 2400))))
    elif kind == "response.function_call_arguments.done":
        ev.update(response_id=resp, item_id=item, call_id=draw(st.sampled_from(["c1", "c2"])),
                  name=draw(st.sampled_from(["get_time", "nope"])), arguments="{}")
    elif kind == "conversation.item.truncated":
        ev.update(item_id=item, content_index=0, audio_end_ms=draw(st.integers(0, 5000)))
    elif kind == "conversation.item.input_audio_transcription.completed":
        ev.update(item_id=item, content_index=0, transcript="hello")
    else:
        ev.update(item_id=item, response_id=resp, delta="text", transcript="text")
    return ev


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """A server frame: mostly valid events, often damaged."""
    ev = draw(valid_events())
    how = draw(st.sampled_from(["valid"] * 6 + ["drop", "retype", "truncate", "junk",
                                                 "bytes", "value", "badaudio"]))
    if how == "drop" and len(ev) > 1:
        ev.pop(draw(st.sampled_from(sorted(k for k in ev if k != "event_id"))))
    elif how == "retype":
        key = draw(st.sampled_from(sorted(ev)))
        ev[key] = draw(json_values)
    elif how == "truncate":
        text = json.dumps(ev)
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif how == "junk":
        return draw(st.text(max_size=40))
    elif how == "bytes":
        return draw(st.binary(max_size=40))
    elif how == "value":
        return json.dumps(draw(json_values))
    elif how == "badaudio":
        ev.update(type="response.output_audio.delta", item_id="item_a",
                  delta=draw(st.sampled_from(["AAE=", "!!!!", "AAA", "", "AAECAw=="])))
    return json.dumps(ev)


@settings(max_examples=EXAMPLES * 3)
@given(frames())
def test_decoder_gives_an_event_or_a_protocol_error(frame: str | bytes) -> None:
    event = codec.decode(frame)
    if isinstance(event, Malformed):
        assert event.reason  # a message that says what was wrong
        return
    assert isinstance(event.type, str) and event.type
    assert event.type not in protocol.BETA_ALIASES
    if event.type == "response.output_audio.delta":
        assert len(event.audio) % 2 == 0
        assert event.audio == base64.b64decode(event.data["delta"])


@settings(max_examples=EXAMPLES)
@given(json_values)
def test_decoder_any_json_value(value: Any) -> None:
    assert isinstance(codec.decode(json.dumps(value)), ServerEvent | Malformed)


# --- the session -----------------------------------------------------------------------------


def make_config(mode: str, barge_in: str) -> Config:
    return parse_config({"gate": {"mode": mode, "barge_in": barge_in},
                         "gpio": {"enabled": False}}, "<properties>")


CONFIGS = [
    make_config("push_to_talk", "local"),
    make_config("vad", "off"),
    make_config("always", "server"),
    make_config("always", "local"),
]

Step = tuple[str, Any]


@st.composite
def reply(draw: st.DrawFn) -> list[Step]:
    """One response's frames in order, then damaged: some lost, repeated or swapped."""
    resp, item = draw(RESPONSES), draw(IDS)
    deltas = draw(st.integers(1, 6))
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": resp, "status": "in_progress"}},
        {"type": "response.output_item.added", "response_id": resp,
         "item": {"id": item, "type": "message", "role": "assistant"}},
    ]
    for _ in range(deltas):
        events.append({"type": "response.output_audio.delta", "response_id": resp,
                       "item_id": item, "delta": pcm_b64(draw(st.integers(1, 4800)))})
        if draw(st.booleans()):
            events.append({"type": "response.output_audio_transcript.delta",
                           "response_id": resp, "item_id": item, "delta": "hi "})
    if draw(st.booleans()):
        events.append({"type": "response.function_call_arguments.done", "response_id": resp,
                       "item_id": item, "call_id": "c1", "name": "get_time", "arguments": "{}"})
    events += [
        {"type": "response.output_audio.done", "response_id": resp, "item_id": item},
        {"type": "response.output_audio_transcript.done", "response_id": resp,
         "item_id": item, "transcript": "hi there"},
        {"type": "response.done", "response": {"id": resp, "status": draw(st.sampled_from(
            ["completed", "cancelled", "failed"]))}},
    ]
    out: list[Step] = [("frame", json.dumps(e)) for e in events]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(out) - 1))
        how = draw(st.sampled_from(["lose", "repeat", "swap", "local"]))
        if how == "lose":
            out.pop(i)
        elif how == "repeat":
            out.insert(i, out[i])
        elif how == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif how == "local":  # the user or the player acts mid-reply
            out[i:i] = draw(st.sampled_from([
                [("speech_started", None), ("player", 40)], [("player", 40)],
                [("player_idle", None)], [("speech_started", None)], [("disconnect", None)],
            ]))
        if not out:
            break
    return out


HANDSHAKE: list[Step] = [
    ("reconnect", None),
    ("frame", json.dumps({"type": "session.created", "session": {"id": "s"}})),
    ("frame", json.dumps({"type": "session.updated", "session": {"id": "s"}})),
]

steps = st.one_of(
    frames().map(lambda f: ("frame", f)),
    frames().map(lambda f: ("frame", f)),
    frames().map(lambda f: ("frame", f)),
    st.just(("speech_started", None)),
    st.binary(min_size=2, max_size=64).map(lambda b: ("user_audio", b[: len(b) // 2 * 2])),
    st.tuples(st.integers(0, 3000), st.booleans()).map(lambda t: ("speech_stopped", t)),
    st.integers(0, 100).map(lambda p: ("player", p)),
    st.just(("player_idle", None)),
    st.just(("disconnect", None)),
    st.just(("reconnect", None)),
    st.booleans().map(lambda m: ("mute", m)),
    st.sampled_from(["", "", "capture 'mic': gone"]).map(lambda e: ("device", e)),
    st.floats(0.0, 40.0).map(lambda dt: ("time", dt)),
    st.just(("tool_result", None)),
)
single = steps.map(lambda step: [step])
sequences = st.lists(st.one_of(single, reply(), st.just(HANDSHAKE[1:])), max_size=25).map(
    lambda parts: [step for part in parts for step in part]
)


@dataclass
class Model:
    """What the session's outside world knows: the connection, the player and the wire."""

    connected: bool = False
    configured: bool = False
    queued: dict[str, float] = field(default_factory=dict)  # item -> ms handed to the player
    received: dict[str, float] = field(default_factory=dict)  # this connection's audio
    stop_pending: bool = False
    eos: bool = False
    last_item: str | None = None
    cancelled_response: bool = False
    response_active: bool = False
    calls: list[str] = field(default_factory=list)
    now: float = 1000.0
    last_state: State | None = None


def apply(session: Session, model: Model, step: Step) -> None:
    kind, arg = step
    now = model.now
    if kind == "frame":
        if not model.connected:
            return  # frames arrive only on a live connection
        session.server_event(codec.decode(arg), now)
    elif kind == "speech_started":
        session.speech_started(now)
    elif kind == "user_audio":
        session.user_audio(arg)
    elif kind == "speech_stopped":
        session.speech_stopped(arg[0], now, cancelled=arg[1])
    elif kind == "player":
        # The player reports like the real one: a stop is answered with what was heard.
        if model.stop_pending:
            heard = model.queued.get(model.last_item or "", 0.0) * arg / 100
            session.playback_stopped(model.last_item, int(heard))
            model.stop_pending = False
            model.queued.clear()
        elif model.queued and model.last_item:
            session.playback_started(model.last_item)
    elif kind == "player_idle":
        if model.queued and model.eos and not model.stop_pending:
            session.playback_idle(now)
            model.queued.clear()
            model.eos = False
    elif kind == "disconnect":
        if model.connected:
            session.disconnected("connection lost")
            model.connected = model.configured = model.response_active = False
    elif kind == "reconnect":
        if not model.connected:
            session.connecting()
            session.connected()
            model.connected, model.configured = True, False
            model.received.clear()
    elif kind == "mute":
        session.set_muted(arg)
    elif kind == "device":
        session.device_error(arg)
    elif kind == "time":
        model.now += arg
        session.tick(model.now)
    elif kind == "tool_result" and model.calls:
        session.tool_result(model.calls.pop(0), '{"ok": true}', now)
    model.now += 0.01


def check(session: Session, model: Model, config: Config) -> None:
    for action in session.take():
        assert isinstance(action, Send | Play | EndOfReply | StopPlayback | StateChanged
                          | Transcript | TurnTimings | TooShort | CallTool | Reconnect), action
        if isinstance(action, StateChanged):
            assert action.state is not model.last_state, "a state change to the same state"
            model.last_state = action.state
        elif isinstance(action, Play):
            assert model.connected, "audio played from a connection that is gone"  # I2
            assert not model.cancelled_response, "audio of a cancelled response played"  # I7
            ms = len(action.pcm) / 48
            model.queued[action.item_id] = model.queued.get(action.item_id, 0.0) + ms
            model.received[action.item_id] = model.received.get(action.item_id, 0.0) + ms
            model.last_item = action.item_id
            model.eos = False
        elif isinstance(action, EndOfReply):
            model.eos = True
        elif isinstance(action, StopPlayback):
            if model.queued:
                model.stop_pending = True
            else:
                model.queued.clear()
        elif isinstance(action, CallTool):
            model.calls.append(action.call_id)
        elif isinstance(action, Send):
            sent = json.loads(codec.encode(action.event))
            kind = sent["type"]
            if kind == "input_audio_buffer.append":  # I6
                assert model.configured, "audio sent before session.updated"
            elif kind == "conversation.item.truncate":  # I5
                item = sent["item_id"]
                assert item in model.received, f"truncate of {item}, never played"
                assert 0 <= sent["audio_end_ms"] <= model.received[item] + 1e-6
            elif kind == "response.cancel":
                model.cancelled_response = True
            elif kind == "response.create":  # I9
                assert not model.response_active, "response.create during a response"
    state = session.state
    if not model.connected:  # I2
        assert state in (State.OFFLINE, State.CONNECTING, State.ERROR, State.STARTING), state
    if state is State.SPEAKING:  # I3
        assert model.queued or model.stop_pending, "speaking with nothing on the speaker"
    if state is State.THINKING:  # I4
        assert model.connected and model.configured, "thinking without a configured session"


def track_server(model: Model, step: Step) -> None:
    """What the model learns from a frame it let through (before the session sees it)."""
    if step[0] != "frame" or not model.connected:
        return
    event = codec.decode(step[1])
    if isinstance(event, Malformed):
        return
    if event.type == "session.updated":
        model.configured = True
    elif event.type == "response.created":
        model.cancelled_response = False
        model.response_active = True
    elif event.type == "response.done":
        model.response_active = False
    elif event.type == "error" and str(event.data["error"].get("param") or "").startswith(
        "session."
    ):
        model.configured = True  # a rejected update: the server's defaults apply


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(CONFIGS))), st.booleans(), sequences)
def test_session_survives_any_event_sequence(
    config_index: int, handshake: bool, sequence: list[Step]
) -> None:
    config = CONFIGS[config_index]
    session = Session(session_settings(config))
    model = Model()
    for step in HANDSHAKE if handshake else HANDSHAKE[:1]:
        track_server(model, step)
        apply(session, model, step)
        check(session, model, config)
    for step in sequence:
        track_server(model, step)
        apply(session, model, step)
        check(session, model, config)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(CONFIGS))), st.lists(reply(), min_size=1, max_size=3),
       st.data())
def test_reordered_and_duplicated_turns(config_index: int, replies: list[list[Step]],
                                        data: st.DataObject) -> None:
    """A configured session, a turn, then replies' frames reordered and duplicated, with
    the user barging in and the player reporting at random points."""
    config = CONFIGS[config_index]
    session = Session(session_settings(config))
    model = Model()
    turn = [("speech_started", None), ("user_audio", b"\x01\x00" * 2400),
            ("speech_stopped", (500, False))]
    mixed = [step for r in replies for step in r]
    extra = data.draw(st.lists(st.sampled_from(mixed + [("speech_started", None),
                                                        ("player", 30)]), max_size=8))
    shuffled = data.draw(st.permutations(mixed + extra))
    sequence = [*HANDSHAKE, *turn, *shuffled, ("player", 50), ("player_idle", None)]
    for step in sequence:
        track_server(model, step)
        apply(session, model, step)
        check(session, model, config)
