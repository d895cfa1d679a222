"""The conversation the server holds, as turns of item ids, and the policy that prunes it.

A turn is a user message item and the items that follow it (the reply, function calls and
their outputs). ``[session_policy]``: keep at most ``max_turns`` turns; a fresh conversation
(every item deleted) after ``fresh_after_idle_s`` without a turn. This module decides which
items go; the session sends the ``conversation.item.delete`` events.
Imports the standard library only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class Conversation:
    """Item ids per turn, oldest first, for the current session."""

    def __init__(self) -> None:
        self._turns: list[list[str]] = []

    def __len__(self) -> int:
        return len(self._turns)

    def clear(self) -> None:
        self._turns.clear()

    def item_added(self, item: Mapping[str, Any]) -> None:
        item_id = item.get("id")
        if not isinstance(item_id, str) or any(item_id in turn for turn in self._turns):
            return
        if (item.get("type") == "message" and item.get("role") == "user") or not self._turns:
            self._turns.append([item_id])
        else:
            self._turns[-1].append(item_id)

    def item_deleted(self, item_id: str) -> None:
        for turn in self._turns:
            if item_id in turn:
                turn.remove(item_id)
        self._turns = [turn for turn in self._turns if turn]

    def prune(self, max_turns: int, session_id: str) -> list[str]:
        """The items of the turns beyond the newest ``max_turns`` (0: no limit), forgotten
        here and to be deleted."""
        extra = max(0, len(self._turns) - max_turns) if max_turns else 0
        if not extra:
            return []
        ids = self._take_oldest(extra)
        log.info(
            "keeping the last %d turns: %d items deleted",
            max_turns,
            len(ids),
            extra={"SESSION_ID": session_id},
        )
        return ids

    def fresh(self, idle_s: float, session_id: str) -> list[str]:
        """Every item, forgotten here and to be deleted: a fresh conversation after
        ``idle_s`` without a turn."""
        ids = self._take_oldest(len(self._turns))
        log.info(
            "fresh conversation after %.0f min without a turn: %d items deleted",
            idle_s / 60,
            len(ids),
            extra={"SESSION_ID": session_id},
        )
        return ids

    def _take_oldest(self, count: int) -> list[str]:
        ids = [item_id for turn in self._turns[:count] for item_id in turn]
        del self._turns[:count]
        return ids
