"""The simulated conversation: ordered items, what the simulator knows about each, and ids.

Owns :class:`Conversation` (insert after / at root, delete, look up) and :class:`ItemRecord`,
which pairs an item's wire form with simulator-only facts: the user audio it carries, how
much speech the VAD measured, and how much assistant audio was actually sent (the bound for
``conversation.item.truncate``). Also :class:`IdFactory`, the source of every id.

Imports nothing outside the simulator.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from realtime_sim.codecs import duration_ms

Json = dict[str, Any]


class IdFactory:
    """Unique ids per session: ``<prefix>_<session token><counter>``, deterministic."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._token}{next(self._counter):05d}"


@dataclass
class ItemRecord:
    """One conversation item and the simulator's notes about it."""

    item: Json
    """The wire form (``id``, ``type``, ``role``, ``content``...), without audio bytes."""
    audio: bytes = b""
    """User input audio as PCM16 mono at 24 kHz (what a reply echoes)."""
    speech_ms: float = 0.0
    """Speech the VAD measured (or the whole committed audio without VAD)."""
    no_speech: bool = False
    """True for the silent segment committed by an idle timeout."""
    audio_sent_samples: int = 0
    """Assistant audio emitted for this item so far, in 24 kHz samples."""
    output_audio: bool = False
    """True for an assistant message whose content is (or is becoming) audio."""
    truncated_ms: int | None = None
    """Set by conversation.item.truncate."""

    @property
    def id(self) -> str:
        return str(self.item["id"])

    @property
    def audio_sent_ms(self) -> float:
        return duration_ms(self.audio_sent_samples)

    @property
    def is_user_message(self) -> bool:
        return bool(self.item["type"] == "message" and self.item["role"] == "user")

    def text(self) -> str:
        """The item's text content parts, joined."""
        parts = self.item.get("content", [])
        return " ".join(p["text"] for p in parts if p.get("type") in ("input_text", "output_text"))


class Conversation:
    """The ordered item list of one session."""

    def __init__(self) -> None:
        self._items: list[ItemRecord] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ItemRecord]:
        return iter(list(self._items))

    def get(self, item_id: str) -> ItemRecord | None:
        for record in self._items:
            if record.id == item_id:
                return record
        return None

    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def insert(self, record: ItemRecord, after: str | None = None) -> str | None:
        """Insert after item ``after`` (append if None, first if "root"); return the id of the
        item now preceding it. The caller has checked that ``after`` exists."""
        if after is None:
            previous = self.last_id()
            self._items.append(record)
            return previous
        if after == "root":
            self._items.insert(0, record)
            return None
        index = next(i for i, r in enumerate(self._items) if r.id == after)
        self._items.insert(index + 1, record)
        return after

    def delete(self, item_id: str) -> None:
        self._items = [r for r in self._items if r.id != item_id]

    def records(self) -> list[ItemRecord]:
        return list(self._items)
