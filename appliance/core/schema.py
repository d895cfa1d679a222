"""The JSON-schema subset that tool parameters use, sans I/O: check a schema, validate a value.

Function-calling schemas are small: objects of strings, numbers, booleans, enums and arrays.
A full JSON-schema library (``jsonschema`` pulls in ``rpds-py`` and ``referencing``) costs a
Pi Zero more import time and memory than the whole session, so this module supports the
keywords below and rejects any other at config load, naming the key, instead of silently
ignoring a constraint the model was promised.

Supported: ``type`` (a name or a list of names), ``properties``, ``required``,
``additionalProperties`` (true/false), ``enum``, ``const``, ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength``, ``maxLength``, ``pattern``,
``items``, ``minItems``, ``maxItems``; annotations ``description``, ``title``, ``default``,
``examples`` are allowed and ignored. Imports only the standard library.
"""

from __future__ import annotations

import math
import re
from typing import Any

TYPES = ("object", "string", "integer", "number", "boolean", "array", "null")
ANNOTATIONS = frozenset({"description", "title", "default", "examples"})
KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "items",
        "minItems",
        "maxItems",
    }
)


class SchemaError(ValueError):
    """A schema (or a value checked against one) is wrong; ``path`` locates it."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_schema(schema: Any, path: str = "") -> None:
    """Raise ``SchemaError`` (path relative to the schema) if ``schema`` is outside the subset."""
    if not isinstance(schema, dict):
        raise SchemaError(path, "a schema must be a table")
    for key in schema:
        if key not in KEYWORDS and key not in ANNOTATIONS:
            raise SchemaError(
                _join(path, key),
                "unsupported JSON-schema keyword (supported: " + ", ".join(sorted(KEYWORDS)) + ")",
            )
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not names or any(n not in TYPES for n in names):
            raise SchemaError(_join(path, "type"), "expected one of " + ", ".join(TYPES))
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise SchemaError(_join(path, "properties"), "expected a table of schemas")
        for name, sub in props.items():
            check_schema(sub, _join(_join(path, "properties"), name))
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(r, str) for r in required)
    ):
        raise SchemaError(_join(path, "required"), "expected an array of property names")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        raise SchemaError(_join(path, "additionalProperties"), "expected true or false")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise SchemaError(_join(path, "enum"), "expected a non-empty array")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not _is_number(schema[key]):
            raise SchemaError(_join(path, key), "expected a number")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        value = schema.get(key)
        if key in schema and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise SchemaError(_join(path, key), "expected a whole number >= 0")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise SchemaError(_join(path, "pattern"), f"not a regular expression: {exc}") from None
    if "items" in schema:
        check_schema(schema["items"], _join(path, "items"))


def validate(value: Any, schema: dict[str, Any], path: str = "") -> None:
    """Raise ``SchemaError`` naming the first place where ``value`` breaks ``schema``.

    ``schema`` must have passed ``check_schema``. Paths look like ``city`` or ``stops[2].name``.
    """
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_has_type(value, n) for n in names):
            raise SchemaError(path, f"expected {' or '.join(names)}, got {_describe(value)}")
    if "const" in schema and not _same(value, schema["const"]):
        raise SchemaError(path, f"expected {_describe(schema['const'])}, got {_describe(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        options = ", ".join(_describe(e) for e in schema["enum"])
        raise SchemaError(path, f"expected one of {options}, got {_describe(value)}")
    if _is_number(value):
        _check_bounds(value, schema, path)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(path, f"shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            raise SchemaError(path, f"does not match the pattern {schema['pattern']!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(path, f"fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(_join(path, name), "required property is missing")
        for name, item in value.items():
            if name in props:
                validate(item, props[name], _join(path, name))
            elif schema.get("additionalProperties") is False:
                raise SchemaError(_join(path, name), "unknown property")


def _check_bounds(value: float, schema: dict[str, Any], path: str) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(path, f"{value:g} is less than the minimum {schema['minimum']:g}")
    if "maximum" in schema and value > schema["maximum"]:
        raise SchemaError(path, f"{value:g} is more than the maximum {schema['maximum']:g}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise SchemaError(path, f"{value:g} is not more than {schema['exclusiveMinimum']:g}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        raise SchemaError(path, f"{value:g} is not less than {schema['exclusiveMaximum']:g}")


def _has_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return _is_number(value) and math.isfinite(value) and float(value).is_integer()
    if name == "number":
        return _is_number(value)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, list)
    return value is None


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
