"""Sans-I/O core of the loopback realtime server: one :class:`SimSession` per connection.

Owns the simulated service's behaviour for one session: it takes client text frames
(:meth:`SimSession.receive`) and hands back server events (:meth:`SimSession.events_to_send`).
Responses are produced lazily by :meth:`SimSession.pump`, one audio chunk at a time, so an
adapter can pace them and a client can interrupt mid-response. No sockets, clocks, threads
or sleeps: time is the length of the audio appended.

The simulated model has no recogniser and no language model. It answers honestly:

- a user audio turn is echoed back (its own PCM) with the transcript
  "You said something 1.52 seconds long."; its input transcript is "[1.52 s of speech]";
- a text turn gets a 1 s chirp and 'You wrote: "..."';
- a :class:`~realtime_sim.script.SimScript` can make it call functions instead.

Strictness, turn detection and wire formats live in ``validate``, ``vad`` and ``codecs``;
response event sequences in ``response``. How far it departs from the protocol's letter as
the real service does (delays, tolerance, server-made responses) is its
:class:`~realtime_sim.profiles.ServerProfile`; delays are timers on a clock the adapter
feeds in (:meth:`SimSession.advance`), so the engine itself never reads the time. Imports
only the simulator's own modules.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime_sim.codecs import INTERNAL_RATE, codec_for, duration_ms
from realtime_sim.conversation import Conversation, IdFactory, ItemRecord
from realtime_sim.profiles import FAST, ServerProfile
from realtime_sim.quirks import Timers, Tolerance
from realtime_sim.response import ReplyPlan, ResponseSetup, ResponseStream
from realtime_sim.script import SimScript
from realtime_sim.vad import EnergyVad, IdleTimeout, SpeechStarted, VadConfig, VadEvent
from realtime_sim.validate import (
    SimError,
    check_tool_choice_names_a_tool,
    decode_base64_audio,
    default_session,
    expect_int,
    expect_str,
    merge_session_update,
    missing,
    validate_item,
    validate_response_options,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]

DEFAULT_REPLY_CHUNK_MS = 100
"""Audio per ``response.output_audio.delta`` unless told otherwise."""
MIN_COMMIT_MS = 100
"""``input_audio_buffer.commit`` refuses a buffer shorter than this."""
IDLE_BUFFER_LIMIT_MS = 30_000
"""With turn detection on and no speech, older buffered audio is dropped beyond this."""
TONE_MS = 1000
"""Length of the reply chirp used when there is no user audio to echo."""

# Fields of each client event besides "type" and "event_id": (allowed, required).
_CLIENT_EVENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "session.update": (("session",), ("session",)),
    "input_audio_buffer.append": (("audio",), ("audio",)),
    "input_audio_buffer.commit": ((), ()),
    "input_audio_buffer.clear": ((), ()),
    "conversation.item.create": (("item", "previous_item_id"), ("item",)),
    "conversation.item.retrieve": (("item_id",), ("item_id",)),
    "conversation.item.delete": (("item_id",), ("item_id",)),
    "conversation.item.truncate": (
        ("item_id", "content_index", "audio_end_ms"),
        ("item_id", "content_index", "audio_end_ms"),
    ),
    "response.create": (("response",), ()),
    "response.cancel": (("response_id",), ()),
}
_DELTA_TYPES = frozenset({"response.output_audio.delta", "response.output_text.delta"})


@functools.cache
def reply_tone() -> bytes:
    """A 1 s chirp (440 -> 880 Hz, -12 dBFS, 20 ms fades) as PCM16 at 24 kHz."""
    n = INTERNAL_RATE * TONE_MS // 1000
    t = np.arange(n, dtype=np.float64) / INTERNAL_RATE
    duration = TONE_MS / 1000
    phase = 2 * np.pi * (440.0 * t + (880.0 - 440.0) * t * t / (2 * duration))
    fade = np.minimum(1.0, np.minimum(t, duration - t) / 0.02)
    wave = 32768 * 10 ** (-12 / 20) * np.sin(phase) * fade
    return np.rint(wave).astype("<i2").tobytes()


def _ms(samples: int) -> int:
    return round(duration_ms(samples))


@dataclass
class _Speech:
    item_id: str
    onset: int
    audio_start: int


class SimSession:
    """The simulated service's side of one realtime session."""

    def __init__(
        self,
        script: SimScript | None = None,
        *,
        reply_chunk_ms: int = DEFAULT_REPLY_CHUNK_MS,
        session_id: str | None = None,
        profile: ServerProfile = FAST,
    ) -> None:
        if reply_chunk_ms <= 0:
            raise ValueError(f"reply_chunk_ms must be positive, got {reply_chunk_ms}")
        self.script = script or SimScript()
        self.session_id = session_id or f"sess_{secrets.token_hex(8)}"
        self.session: Json = default_session(self.session_id)
        """The current session object (what session.updated reports)."""
        self.conversation = Conversation()
        self.received: list[Json] = []
        """Every client event that parsed as a JSON object, in order."""
        self._reply_chunk_samples = INTERNAL_RATE * reply_chunk_ms // 1000
        self._ids = IdFactory(self.session_id.removeprefix("sess_")[:8])
        self._conversation_id = self._ids.new("conv")
        self._outbox: list[Json] = []
        self._buffer = bytearray()  # the input audio buffer, PCM16 at 24 kHz
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._written = 0  # samples appended in this session
        self._vad = EnergyVad()
        self._speech: _Speech | None = None
        self._active: ResponseStream | None = None
        self._response_queued = False
        self._issued_calls: dict[str, str] = {}
        self._script_calls_issued = False
        self.expired = False
        """True once the duration cap was reached (``expire``)."""
        self.profile = profile
        self.tolerance = Tolerance(profile)
        self._timers = Timers()
        self._emit({"type": "session.created", "session": copy.deepcopy(self.session)})

    # ----------------------------------------------------------------- public surface

    def receive(self, text: str) -> None:
        """Handle one client text frame."""
        try:
            event = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self._error(SimError("invalid_json", f"The event is not valid JSON: {exc}."), None)
            return
        if not isinstance(event, dict):
            self._error(SimError("invalid_event", "The event must be a JSON object, got "
                                 f"{type(event).__name__}."), None)
            return
        self.received.append(event)
        client_event_id = event.get("event_id")
        try:
            self._dispatch(event)
        except SimError as exc:
            self._error(exc, client_event_id if isinstance(client_event_id, str) else None)

    def receive_binary(self, data: bytes) -> None:
        """Handle one client binary frame: the protocol has none."""
        self._error(SimError("invalid_event", f"Binary frames are not supported ({len(data)} "
                             "bytes received); send events as JSON text frames."), None)

    def advance(self, now: float) -> None:
        """The adapter's clock (seconds, any origin): run the timers that are due by ``now``.
        Call it before :meth:`receive` too, so that delays count from the right moment."""
        self._timers.advance(now)

    @property
    def next_deadline(self) -> float | None:
        """When the next timer is due (on the :meth:`advance` clock), None without timers."""
        return self._timers.next_deadline

    @property
    def provider_data(self) -> Json:
        """``session.providerData`` as merged from the client's updates."""
        return self.tolerance.provider_data

    @property
    def schema_notes(self) -> list[str]:
        """What the GA schema would have rejected but this tolerant service accepted."""
        return self.tolerance.notes

    def events_to_send(self) -> list[Json]:
        """Server events produced so far, oldest first; drains them."""
        events, self._outbox = self._outbox, []
        return events

    @property
    def response_active(self) -> bool:
        """True while a response is in progress (pump it to make progress)."""
        return self._active is not None

    @property
    def active_response_id(self) -> str | None:
        return self._active.id if self._active is not None else None

    def pump(self, max_chunks: int | None = 1) -> float:
        """Advance the active response up to and including ``max_chunks`` audio or text
        deltas (all of it if None); the events go to :meth:`events_to_send`. Returns the ms
        of audio produced, which an adapter uses to pace the next call."""
        stream = self._active
        if stream is None:
            return 0.0
        start_ms = stream.audio_ms
        chunks = 0
        while self._active is stream:
            event = stream.next_event()
            if event is None:
                self._finish_response()
                break
            self._emit(event)
            if event["type"] == "response.done":
                self._finish_response()
            elif event["type"] in _DELTA_TYPES:
                chunks += 1
                if max_chunks is not None and chunks >= max_chunks:
                    break
        return stream.audio_ms - start_ms

    def run_until_idle(self) -> list[Json]:
        """Pump every response to its end (a queued one too); return all pending events."""
        events = self.events_to_send()
        while self._active is not None:
            self.pump(None)
            events += self.events_to_send()
        return events

    def expire(self) -> None:
        """The session reached the service's duration cap: say so; the adapter then closes
        the connection (see ``expired``)."""
        if self.expired:
            return
        self.expired = True
        cap = self.script.max_session_s or 0.0
        self._emit({"type": "error", "error": {
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": f"Your session hit the maximum duration of {cap:g} seconds.",
            "param": None,
            "event_id": None,
        }})

    def audio_sent_ms(self, item_id: str) -> float:
        """Assistant audio handed out for ``item_id``, in ms (0 for unknown items)."""
        record = self.conversation.get(item_id)
        return record.audio_sent_ms if record is not None else 0.0

    @property
    def input_buffer_ms(self) -> float:
        return duration_ms(len(self._buffer) // 2)

    # ----------------------------------------------------------------------- plumbing

    def _emit(self, event: Json) -> None:
        self._outbox.append({"type": event["type"], "event_id": self._ids.new("event"), **event})

    def _error(self, exc: SimError, client_event_id: str | None) -> None:
        log.info("simulator refused an event: %s (%s)", exc.message, exc.code)
        self._emit({"type": "error", "error": {
            "type": "invalid_request_error",
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": client_event_id,
        }})

    def _dispatch(self, event: Json) -> None:
        event_type = event.get("type")
        if "type" not in event:
            raise SimError("invalid_event", "The event has no 'type' field.", "type")
        if not isinstance(event_type, str):
            raise SimError("invalid_event", "The event's 'type' must be a string.", "type")
        spec = _CLIENT_EVENTS.get(event_type)
        if spec is None:
            raise SimError("unknown_event_type", f"Unknown event type '{event_type}'.", "type")
        allowed, required = spec
        for key in event:
            if key not in allowed and key not in ("type", "event_id"):
                raise SimError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
        for key in required:
            if key not in event:
                raise missing(key)
        if "event_id" in event:
            expect_str(event["event_id"], "event_id")
        handler = getattr(self, "_on_" + event_type.replace(".", "_"))
        handler(event)

    # ------------------------------------------------------------------------ session

    def _on_session_update(self, event: Json) -> None:
        before = self.session["audio"]["input"]["turn_detection"]
        try:
            self.session = self._checked_session(event["session"])
        except SimError as exc:
            if self.profile.param_less_errors:
                raise SimError(exc.code, exc.message, None) from None
            raise
        after = self.session["audio"]["input"]["turn_detection"]
        if (before is None) != (after is None) or (before and after
                                                   and before["type"] != after["type"]):
            self._vad.reset(self._written)
            self._speech = None
        self._emit({"type": "session.updated", "session": copy.deepcopy(self.session)})

    def _checked_session(self, value: Any) -> Json:
        merged = merge_session_update(self.session, self.tolerance.session_update(value))
        return self.tolerance.check_session(merged)

    # --------------------------------------------------------------- input audio buffer

    def _on_input_audio_buffer_append(self, event: Json) -> None:
        codec = codec_for(self.session["audio"]["input"]["format"])
        wire = decode_base64_audio(event["audio"], "audio", codec)
        pcm = codec.decode(wire)
        self._buffer += pcm.astype("<i2").tobytes()
        self._written += int(pcm.size)
        turn_detection = self.session["audio"]["input"]["turn_detection"]
        if turn_detection is None:
            return
        config = VadConfig.from_turn_detection(turn_detection)
        for vad_event in self._vad.process(pcm, config, count_idle=self._active is None):
            self._on_vad_event(vad_event, config, turn_detection)
        if self._speech is None:
            self._drop_buffer_before(self._written - INTERNAL_RATE * IDLE_BUFFER_LIMIT_MS // 1000)

    def _on_vad_event(self, vad_event: VadEvent, config: VadConfig, turn_detection: Json) -> None:
        if isinstance(vad_event, SpeechStarted):
            start = max(self._buffer_start,
                        vad_event.onset - INTERNAL_RATE * config.prefix_padding_ms // 1000)
            self._speech = _Speech(self._ids.new("item"), vad_event.onset, start)
            self._emit({"type": "input_audio_buffer.speech_started",
                        "audio_start_ms": _ms(start), "item_id": self._speech.item_id})
            if self._active is not None and turn_detection["interrupt_response"]:
                self._cancel_active("turn_detected")
            return
        if isinstance(vad_event, IdleTimeout):
            start = max(self._buffer_start, vad_event.start)
            item_id = self._ids.new("item")
            self._emit({"type": "input_audio_buffer.timeout_triggered",
                        "audio_start_ms": _ms(start), "audio_end_ms": _ms(vad_event.end),
                        "item_id": item_id})
            self._drop_buffer_before(start)
            self._commit(item_id, vad_event.end, speech_ms=0.0, no_speech=True)
        else:
            speech = self._speech
            self._speech = None
            if speech is None:  # turn detection was switched mid-utterance
                return
            self._emit({"type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": _ms(vad_event.end), "item_id": speech.item_id})
            self._drop_buffer_before(speech.audio_start)
            self._commit(speech.item_id, vad_event.end,
                         speech_ms=duration_ms(vad_event.last_voiced_end - speech.onset))
        if turn_detection["create_response"]:
            self._timers.later(self.profile.response_delay_ms, self._start_or_queue_response)

    def _start_or_queue_response(self) -> None:
        """A response the server makes itself: now, or after the active one."""
        if self._active is not None:
            self._response_queued = True
        else:
            self._start_response({})

    def _drop_buffer_before(self, sample: int) -> None:
        if sample > self._buffer_start:
            del self._buffer[: (sample - self._buffer_start) * 2]
            self._buffer_start = sample

    def _commit(self, item_id: str, end: int, *, speech_ms: float, no_speech: bool = False) -> None:
        """Move the buffer's audio up to sample ``end`` into a new user item."""
        cut = (end - self._buffer_start) * 2
        audio = bytes(self._buffer[:cut])
        del self._buffer[:cut]
        self._buffer_start = end
        item: Json = {"id": item_id, "object": "realtime.item", "type": "message",
                      "status": "completed", "role": "user",
                      "content": [{"type": "input_audio", "transcript": None}]}
        record = ItemRecord(item=item, audio=audio, speech_ms=speech_ms, no_speech=no_speech)
        previous = self.conversation.insert(record)
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                    "item_id": item_id})
        self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})
        self._vad.reset_idle(self._written)
        if self.session["audio"]["input"]["transcription"] is None:
            return
        transcript = "[no speech]" if no_speech else f"[{speech_ms / 1000:.2f} s of speech]"
        seconds = round(duration_ms(len(audio) // 2) / 1000, 3)

        def transcribed() -> None:
            # The recogniser's result comes on its own schedule, often after the reply began.
            item["content"][0]["transcript"] = transcript
            self._emit({"type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item_id, "content_index": 0, "transcript": transcript,
                        "usage": {"type": "duration", "seconds": seconds}})

        self._timers.later(self.profile.input_transcript_delay_ms, transcribed)

    def _on_input_audio_buffer_commit(self, event: Json) -> None:
        buffered = self.input_buffer_ms
        if buffered < MIN_COMMIT_MS:
            raise SimError("input_audio_buffer_commit_empty",
                           f"Error committing input audio buffer: buffer too small. Expected at "
                           f"least {MIN_COMMIT_MS}ms of audio, but buffer only has "
                           f"{buffered:.2f}ms of audio.")
        item_id = self._speech.item_id if self._speech is not None else self._ids.new("item")
        self._speech = None
        self._vad.reset(self._written)
        self._commit(item_id, self._written, speech_ms=buffered)

    def _on_input_audio_buffer_clear(self, event: Json) -> None:
        self._drop_buffer_before(self._written)
        self._speech = None
        self._vad.reset(self._written)
        self._emit({"type": "input_audio_buffer.cleared"})

    # --------------------------------------------------------------------- conversation

    def _existing(self, event: Json, param: str = "item_id") -> ItemRecord:
        item_id = expect_str(event[param], param)
        record = self.conversation.get(item_id)
        if record is None:
            raise SimError("invalid_value", f"Item with item_id '{item_id}' not found.", param)
        return record

    def _on_conversation_item_create(self, event: Json) -> None:
        new = validate_item(event["item"], codec_for(self.session["audio"]["input"]["format"]))
        after = event.get("previous_item_id")
        if after is not None:
            after = expect_str(after, "previous_item_id")
            if after != "root" and self.conversation.get(after) is None:
                raise SimError("invalid_value", f"Item with previous_item_id '{after}' not "
                               "found.", "previous_item_id")
        if new.client_id is not None and self.conversation.get(new.client_id) is not None:
            raise SimError("invalid_value", f"Item with id '{new.client_id}' already exists.",
                           "item.id")
        call_id = new.item.get("call_id")
        if call_id is not None and call_id not in self._issued_calls:
            raise SimError("invalid_value", f"No function call with call_id '{call_id}' was "
                           "issued in this session.", "item.call_id")
        item: Json = {"id": new.client_id or self._ids.new("item"), **new.item}
        record = ItemRecord(item=item, audio=new.audio, speech_ms=duration_ms(len(new.audio) // 2))
        previous = self.conversation.insert(record, after)
        self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})
        if item["type"] == "function_call_output" and self.tolerance.auto_tool_response:
            # Inworld answers a tool's output by itself unless providerData turns it off.
            self._start_or_queue_response()

    def _on_conversation_item_retrieve(self, event: Json) -> None:
        record = self._existing(event)
        self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(record.item)})

    def _on_conversation_item_delete(self, event: Json) -> None:
        record = self._existing(event)
        self.conversation.delete(record.id)
        self._emit({"type": "conversation.item.deleted", "item_id": record.id})

    def _on_conversation_item_truncate(self, event: Json) -> None:
        record = self._existing(event)
        if not (record.item["type"] == "message" and record.item["role"] == "assistant"
                and record.output_audio):
            raise SimError("invalid_value", f"Item '{record.id}' is not an assistant audio "
                           "message; only those can be truncated.", "item_id")
        content_index = expect_int(event["content_index"], "content_index", 0, 0)
        audio_end_ms = expect_int(event["audio_end_ms"], "audio_end_ms", 0)
        if audio_end_ms > record.audio_sent_ms:
            raise SimError("invalid_value", f"audio_end_ms ({audio_end_ms}) is longer than the "
                           f"{record.audio_sent_ms:.0f} ms of audio sent for item "
                           f"'{record.id}'.", "audio_end_ms")
        record.truncated_ms = audio_end_ms
        for part in record.item["content"]:
            if part.get("type") == "output_audio":
                part["transcript"] = ""  # the user never heard the rest
        self._emit({"type": "conversation.item.truncated", "item_id": record.id,
                    "content_index": content_index, "audio_end_ms": audio_end_ms})

    # ------------------------------------------------------------------------ responses

    def _on_response_create(self, event: Json) -> None:
        raw = self.tolerance.response_options(event.get("response"))
        options = validate_response_options(raw) if "response" in event else {}
        if "tool_choice" in options:
            check_tool_choice_names_a_tool(options["tool_choice"],
                                           self._option(options, "tools"),
                                           "response.tool_choice")
        if self._active is not None:
            raise SimError("conversation_already_has_active_response",
                           f"Conversation already has an active response in progress: "
                           f"{self._active.id}. Wait until the response is finished before "
                           "creating a new one.")
        self._start_response(options)

    def _on_response_cancel(self, event: Json) -> None:
        wanted = expect_str(event["response_id"], "response_id") if "response_id" in event else None
        if self._active is None or (wanted is not None and wanted != self._active.id):
            raise SimError("response_cancel_not_active",
                           "Cancellation failed: no active response found.",
                           "response_id" if wanted is not None else None)
        self._cancel_active("client_cancelled")

    def _cancel_active(self, reason: str) -> None:
        """Cancel the active response; with the profile's ``cancel_lag_ms`` the deltas
        already under way keep coming for that long, as from the service's pipeline."""
        stream = self._active
        assert stream is not None
        self._timers.later(self.profile.cancel_lag_ms, functools.partial(self._cancel, stream, reason))

    def _cancel(self, stream: ResponseStream, reason: str) -> None:
        if self._active is not stream:
            return  # it ended in the meantime (done, or an earlier cancel)
        for event in stream.cancel(reason):
            self._emit(event)
        self._finish_response()

    def _finish_response(self) -> None:
        self._active = None
        self._vad.reset_idle(self._written)
        if self._response_queued:
            self._response_queued = False
            self._start_response({})

    def _option(self, options: Json, key: str) -> Any:
        """A response setting: the response.create override, else the session's."""
        return options[key] if key in options else self.session[key]

    def _start_response(self, options: Json) -> None:
        session = self.session
        output = session["audio"]["output"]
        audio_options = options.get("audio", {}).get("output", {})
        audio_format = audio_options.get("format", output["format"])
        modalities: list[str] = self._option(options, "output_modalities")
        tools: list[Json] = self._option(options, "tools")
        tool_choice = self._option(options, "tool_choice")
        in_conversation = options.get("conversation", "auto") == "auto"
        response: Json = {
            "object": "realtime.response",
            "id": self._ids.new("resp"),
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": self._conversation_id if in_conversation else None,
            "output_modalities": list(modalities),
            "max_output_tokens": self._option(options, "max_output_tokens"),
            "audio": {"output": {"format": dict(audio_format),
                                 "voice": audio_options.get("voice", output["voice"])}},
            "usage": None,
            "metadata": options.get("metadata"),
        }
        calls = self.script.tool_calls
        names = {tool["name"] for tool in tools}
        use_calls = bool(calls) and not self._script_calls_issued and tool_choice != "none" and all(
            call.name in names for call in calls)
        if use_calls:
            self._script_calls_issued = True
        setup = ResponseSetup(
            response=response,
            audio="audio" in modalities,
            codec=codec_for(audio_format),
            chunk_samples=self._reply_chunk_samples,
            text_too=self.profile.text_and_audio and "text" in modalities,
            transcript_lockstep=self.profile.transcript_lockstep,
            in_conversation=in_conversation,
            plan=None if use_calls else self._reply_plan(options, in_conversation),
            tool_calls=calls if use_calls else (),
            input_tokens=self._context_tokens(),
            issued_calls=self._issued_calls,
        )
        self._active = ResponseStream(self._ids, self.conversation, setup)
        self._emit({"type": "response.created", "response": copy.deepcopy(response)})

    def _reply_plan(self, options: Json, in_conversation: bool) -> ReplyPlan:
        instructions = options.get("instructions", "")
        if not in_conversation and instructions.startswith(SAY_EXACTLY):
            # An out-of-band announcement: the model would say the text it was given.
            return ReplyPlan(pcm=reply_tone(), transcript=instructions[len(SAY_EXACTLY):].strip())
        records = self.conversation.records()
        user_index = next((i for i in range(len(records) - 1, -1, -1)
                           if records[i].is_user_message), None)
        tool_notes = []
        for record in records[0 if user_index is None else user_index + 1 :]:
            if record.item["type"] == "function_call_output":
                name = self._issued_calls.get(record.item["call_id"], "a tool")
                tool_notes.append(f"{name} returned {record.item['output']}.")
        if user_index is None:
            pcm, words = reply_tone(), "Hello, this is the realtime simulator."
        else:
            user = records[user_index]
            if user.no_speech:
                pcm, words = reply_tone(), "I did not hear anything. Are you still there?"
            elif user.audio:
                pcm, words = user.audio, f"You said something {user.speech_ms / 1000:.2f} seconds long."
            else:
                text = user.text()
                short = text if len(text) <= 200 else text[:197] + "..."
                pcm, words = reply_tone(), f'You wrote: "{short}".'
        return ReplyPlan(pcm=pcm, transcript=" ".join([*tool_notes, words]))

    def _context_tokens(self) -> tuple[int, int]:
        text = audio = 0
        for record in self.conversation:
            text += len(json.dumps(record.item)) // 4
            audio += round(duration_ms(len(record.audio) // 2) / 100)
        return text, audio


SAY_EXACTLY = "Say exactly:"
"""An out-of-band response whose instructions start so is spoken as the rest."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
