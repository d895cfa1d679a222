"""The TOML reader's checks: one table at a time, every error naming its dotted key path.

Owns ``Table`` (types, bounds, choices and enums, unknown keys) and ``describe`` (how a bad
value is quoted in an error: always one line). ``appliance.config`` builds the settings with
it. Imports only the standard library and ``appliance.errors``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from appliance.errors import ConfigError

E = TypeVar("E", bound=enum.Enum)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def describe(value: object) -> str:
    """A value as an error message quotes it (strings JSON-escaped: the error stays one line)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class Table:
    """Reads one TOML table, checking types and bounds; ``done()`` rejects unknown keys."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"expected a table, got {describe(data)}")
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in this table, as errors show it."""
        if not _BARE_KEY.fullmatch(name):
            name = json.dumps(name)  # as TOML quotes it: a key with a newline stays one line
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._data

    def peek(self, name: str) -> Any:
        """The raw value, without marking the key as read."""
        return self._data.get(name)

    def raw(self, name: str) -> Any:
        """The raw value, marking the key as read (the caller checks it)."""
        self._seen.add(name)
        return self._data.get(name)

    def table(self, name: str) -> Table:
        value = self.raw(name)
        return Table({} if value is None else value, self.key(name))

    def text(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {describe(value)}")
        if choices and value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise ConfigError(self.key(name), f"expected one of {options}, got {describe(value)}")
        return value

    def choice(self, name: str, default: E) -> E:
        """One member of ``default``'s enum, spelled as its value (the allowed values are
        listed in the enum's order when it is anything else)."""
        kind = type(default)
        value = self.text(name, None, tuple(str(m.value) for m in kind))
        return default if value is None else kind(value)

    def flag(self, name: str, default: bool | None = None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {describe(value)}")
        return value

    def number(
        self, name: str, default: float | None = None, lo: float = -math.inf, hi: float = math.inf
    ) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(self.key(name), f"expected a number, got {describe(value)}")
        if not lo <= value <= hi:
            raise ConfigError(
                self.key(name), f"expected a number from {lo:g} to {hi:g}, got {value:g}"
            )
        return float(value)

    def whole(
        self,
        name: str,
        default: int | None = None,
        lo: int | None = None,
        hi: int | None = None,
        choices: tuple[int, ...] = (),
    ) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"expected a whole number, got {describe(value)}")
        if choices and value not in choices:
            raise ConfigError(
                self.key(name), f"expected one of {', '.join(map(str, choices))}, got {value}"
            )
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(
                self.key(name), f"expected a whole number from {lo} to {hi}, got {value}"
            )
        return value

    def texts(self, name: str, choices: tuple[str, ...] = ()) -> tuple[str, ...] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ConfigError(self.key(name), f"expected a non-empty array, got {describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or (choices and item not in choices):
                allowed = " or ".join(f'"{c}"' for c in choices) or "a string"
                raise ConfigError(
                    f"{self.key(name)}[{i}]", f"expected {allowed}, got {describe(item)}"
                )
        return tuple(value)

    def done(self) -> None:
        """Every key must have been read: the first unknown one (sorted) is the error."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")
