"""One response of the simulated model, produced event by event so it can be interrupted.

Owns the GA event sequence of a response: an assistant message (audio with transcript, or
text) or a set of function calls, then ``response.done``. :class:`ResponseStream` hands out
one event per :meth:`~ResponseStream.next_event`; :meth:`~ResponseStream.cancel` closes
whatever is open (``output_audio.done``, ``content_part.done``, ``output_item.done`` with
status ``incomplete``) and ends with ``response.done`` status ``cancelled``.

State is updated *before* an event is handed out, so between two calls it describes exactly
what the client has been given (e.g. ``ItemRecord.audio_sent_samples``).

Events come without ``event_id``; the engine stamps them. Imports nothing outside the
simulator.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realtime_sim.codecs import AudioCodec, duration_ms
from realtime_sim.conversation import Conversation, IdFactory, ItemRecord
from realtime_sim.script import ToolCall

Json = dict[str, Any]

TRANSCRIPT_STRIDE = 4
"""Audio chunks per transcript delta when the transcript is not in lockstep."""


@dataclass(frozen=True)
class ReplyPlan:
    """What the simulated model will say."""

    pcm: bytes
    """Reply audio, PCM16 mono at 24 kHz (used when the response has audio)."""
    transcript: str
    """The words of the reply (audio transcript, or the text of a text-only reply)."""


@dataclass
class ResponseSetup:
    """Everything a response needs from the session, resolved by the engine."""

    response: Json
    """The response object as sent in ``response.created``."""
    audio: bool
    """True if output_modalities include audio."""
    codec: AudioCodec
    """Output audio format."""
    chunk_samples: int
    """Samples (24 kHz) per ``response.output_audio.delta``."""
    in_conversation: bool
    """False for ``conversation: "none"`` (out-of-band) responses."""
    text_too: bool = False
    """With audio: a separate output_text stream (content part 1) besides the transcript."""
    transcript_lockstep: bool = True
    """One transcript delta per audio chunk (True), or fewer, leading the audio (False)."""
    plan: ReplyPlan | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: tuple[int, int] = (0, 0)
    """(text, audio) tokens of the context, for ``usage``."""
    issued_calls: dict[str, str] = field(default_factory=dict)
    """Shared with the engine: call_id -> function name, filled as calls are issued."""


@dataclass
class _Open:
    record: ItemRecord
    output_index: int
    previous_item_id: str | None
    sent_text: str = ""
    sent_output_text: str = ""


def split_words(text: str, pieces: int) -> list[str]:
    """``text`` cut at word boundaries into ``pieces`` strings (some possibly empty) whose
    concatenation is ``text``."""
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if pieces <= 0:
        return []
    # Ceiling division puts words in the first pieces: text leads the audio, as from a TTS.
    bounds = [-(-len(words) * i // pieces) for i in range(pieces + 1)]
    return ["".join(words[bounds[i] : bounds[i + 1]]) for i in range(pieces)]


class ResponseStream:
    """Generates one response's events lazily."""

    def __init__(self, ids: IdFactory, conversation: Conversation, setup: ResponseSetup) -> None:
        self._ids = ids
        self._conversation = conversation
        self._setup = setup
        self.response = setup.response
        self.id: str = setup.response["id"]
        self.audio_ms = 0.0
        """Audio handed out so far, in ms."""
        self.done = False
        self._open: _Open | None = None
        self._outputs: list[Json] = []
        self._text_tokens = 0
        self._events = self._run()

    def next_event(self) -> Json | None:
        if self.done:
            return None
        event = next(self._events, None)
        if event is not None and event["type"] == "response.done":
            self.done = True
        return event

    def cancel(self, reason: str) -> list[Json]:
        """Stop now: close what is open and end with response.done status "cancelled"."""
        if self.done:
            return []
        self._events.close()
        events: list[Json] = []
        if self._open is not None:
            if self._open.record.item["type"] == "message":
                events.extend(self._close_message("incomplete"))
            else:
                events.extend(self._close_item("incomplete"))
        events.append(self._finish("cancelled", {"type": "cancelled", "reason": reason}))
        self.done = True
        return events

    # ------------------------------------------------------------------ generation

    def _run(self) -> Generator[Json, None, None]:
        if self._setup.tool_calls:
            for call in self._setup.tool_calls:
                yield from self._function_call(call)
        else:
            yield from self._message()
        yield self._finish("completed", None)

    def _base(self, event_type: str, **fields: Any) -> Json:
        return {"type": event_type, "response_id": self.id, **fields}

    def _add_item(self, item: Json, *, output_audio: bool = False) -> Iterator[Json]:
        record = ItemRecord(item=item, output_audio=output_audio)
        output_index = len(self._outputs)
        self._outputs.append(item)
        previous = self._conversation.insert(record) if self._setup.in_conversation else None
        self._open = _Open(record, output_index, previous)
        yield self._base("response.output_item.added", output_index=output_index,
                         item=copy.deepcopy(item))
        if self._setup.in_conversation:
            yield {"type": "conversation.item.added", "previous_item_id": previous,
                   "item": copy.deepcopy(item)}

    def _close_item(self, status: str) -> Iterator[Json]:
        opened = self._open
        assert opened is not None
        opened.record.item["status"] = status
        item = copy.deepcopy(opened.record.item)
        self._open = None
        yield self._base("response.output_item.done", output_index=opened.output_index, item=item)
        if self._setup.in_conversation:
            yield {"type": "conversation.item.done", "previous_item_id": opened.previous_item_id,
                   "item": copy.deepcopy(item)}

    def _message(self) -> Iterator[Json]:
        plan = self._setup.plan
        assert plan is not None
        item: Json = {"id": self._ids.new("item"), "object": "realtime.item", "type": "message",
                      "status": "in_progress", "role": "assistant", "content": []}
        yield from self._add_item(item, output_audio=self._setup.audio)
        opened = self._open
        assert opened is not None
        where = {"item_id": item["id"], "output_index": opened.output_index, "content_index": 0}
        part: Json = {"type": "audio", "transcript": ""} if self._setup.audio else {
            "type": "text", "text": ""}
        yield self._base("response.content_part.added", **where, part=part)
        if not self._setup.audio:
            for piece in split_words(plan.transcript, max(1, len(plan.transcript.split()) // 3)):
                opened.sent_text += piece
                yield self._base("response.output_text.delta", **where, delta=piece)
        else:
            pcm = np.frombuffer(plan.pcm, dtype="<i2")
            step = self._setup.chunk_samples
            chunks = [pcm[i : i + step] for i in range(0, pcm.size, step)]
            text_where = {**where, "content_index": 1}
            if self._setup.text_too:
                yield self._base("response.content_part.added", **text_where,
                                 part={"type": "text", "text": ""})
            # Lockstep: a transcript piece before each chunk. Otherwise the text comes from
            # the model ahead of the speech and in bigger pieces, one per STRIDE chunks.
            stride = 1 if self._setup.transcript_lockstep else TRANSCRIPT_STRIDE
            pieces = split_words(plan.transcript, -(-len(chunks) // stride))
            for index, chunk in enumerate(chunks):
                piece = pieces[index // stride] if index % stride == 0 else ""
                if piece:
                    opened.sent_text += piece
                    yield self._base("response.output_audio_transcript.delta", **where,
                                     delta=piece)
                    if self._setup.text_too:
                        opened.sent_output_text += piece
                        yield self._base("response.output_text.delta", **text_where,
                                         delta=piece)
                encoded = self._setup.codec.encode(chunk.astype(np.int16))
                opened.record.audio_sent_samples += int(chunk.size)
                self.audio_ms += duration_ms(int(chunk.size))
                yield self._base("response.output_audio.delta", **where,
                                 delta=base64.b64encode(encoded).decode("ascii"))
        yield from self._close_message("completed")

    def _close_message(self, status: str) -> Iterator[Json]:
        opened = self._open
        assert opened is not None
        item = opened.record.item
        where = {"item_id": item["id"], "output_index": opened.output_index, "content_index": 0}
        text = opened.sent_text
        self._text_tokens += len(text.split())
        if self._setup.audio:
            yield self._base("response.output_audio.done", **where)
            yield self._base("response.output_audio_transcript.done", **where, transcript=text)
            part: Json = {"type": "audio", "transcript": text}
            item["content"] = [{"type": "output_audio", "transcript": text}]
            if self._setup.text_too:
                written = opened.sent_output_text
                text_where = {**where, "content_index": 1}
                yield self._base("response.output_text.done", **text_where, text=written)
                yield self._base("response.content_part.done", **text_where,
                                 part={"type": "text", "text": written})
                item["content"].append({"type": "output_text", "text": written})
        else:
            yield self._base("response.output_text.done", **where, text=text)
            part = {"type": "text", "text": text}
            item["content"] = [{"type": "output_text", "text": text}]
        yield self._base("response.content_part.done", **where, part=part)
        yield from self._close_item(status)

    def _function_call(self, call: ToolCall) -> Iterator[Json]:
        call_id = self._ids.new("call")
        item: Json = {"id": self._ids.new("item"), "object": "realtime.item",
                      "type": "function_call", "status": "in_progress", "name": call.name,
                      "call_id": call_id, "arguments": ""}
        self._setup.issued_calls[call_id] = call.name
        yield from self._add_item(item)
        opened = self._open
        assert opened is not None
        where = {"item_id": item["id"], "output_index": opened.output_index, "call_id": call_id}
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                item["arguments"] += piece
                yield self._base("response.function_call_arguments.delta", **where, delta=piece)
        self._text_tokens += max(1, len(call.arguments) // 4)
        yield self._base("response.function_call_arguments.done", **where, name=call.name,
                         arguments=call.arguments)
        yield from self._close_item("completed")

    def _finish(self, status: str, details: Json | None) -> Json:
        text_in, audio_in = self._setup.input_tokens
        audio_out = round(self.audio_ms / 100)
        self.response.update(
            status=status,
            status_details=details,
            output=copy.deepcopy(self._outputs),
            usage={
                "total_tokens": text_in + audio_in + self._text_tokens + audio_out,
                "input_tokens": text_in + audio_in,
                "output_tokens": self._text_tokens + audio_out,
                "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in,
                                        "cached_tokens": 0},
                "output_token_details": {"text_tokens": self._text_tokens,
                                         "audio_tokens": audio_out},
            },
        )
        return {"type": "response.done", "response": copy.deepcopy(self.response)}
