"""The conversation the server holds, as turns of item ids, and the policy that prunes it.

A turn is a user message item and the items that follow it (the reply, function calls and
their outputs). ``[session_policy]``: keep at most ``max_turns`` turns; a fresh conversation
(every item deleted) after ``fresh_after_idle_s`` without a turn. This module decides which
items go; the session sends the ``conversation.item.delete`` events.
Imports the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Conversation:
    """Item ids per turn, oldest first, for the current session."""

    def __init__(self) -> None:
        self._turns: list[list[str]] = []

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def items(self) -> int:
        return sum(len(turn) for turn in self._turns)

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

    def excess(self, max_turns: int) -> int:
        """Turns beyond ``max_turns`` (0: no limit)."""
        return max(0, len(self._turns) - max_turns) if max_turns else 0

    def items_in_oldest(self, count: int) -> int:
        return sum(len(turn) for turn in self._turns[:count])

    def take_oldest(self, count: int) -> list[str]:
        """Forget the oldest ``count`` turns; their item ids, for deletion."""
        ids = [item_id for turn in self._turns[:count] for item_id in turn]
        del self._turns[:count]
        return ids
