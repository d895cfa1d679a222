"""Logging setup: structured journal entries under systemd, plain lines elsewhere; never the key.

Owns the handlers of the ``appliance`` logger tree and systemd-python's ``JournalHandler``.
Code passes structured fields as upper-case names in ``extra=`` (``STATE``, ``SESSION_ID``,
``TURN_ID``, ``EVENT_TYPE``, ``ERROR_CODE``, ``LATENCY_MS``, ``XRUNS``, ...):

- when stderr *is* the journal (``JOURNAL_STREAM`` names stderr's device and inode, as
  systemd sets it), records go to journald natively with ``SYSLOG_IDENTIFIER=appliance``,
  ``PRIORITY`` from the level and every such field as a journal field
  (``journalctl -u appliance STATE=listening``);
- otherwise they are plain lines on stderr with the fields appended as ``KEY=value``.
  ``JournalHandler`` is not used blindly: it drops records silently without journald.

A ``Redactor`` filter on every handler replaces the API key (``appliance.credentials.ApiKey``)
in messages, tracebacks and fields, should any code ever log it.
Imports the standard library, systemd-python and ``appliance.credentials``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from systemd import journal  # type: ignore[attr-defined]

from appliance.credentials import ApiKey

IDENTIFIER = "appliance"
REDACTED = "<redacted>"
_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
_PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"


def record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The structured fields a record carries: its upper-case attributes, as strings."""
    return {
        name: str(value)
        for name, value in vars(record).items()
        if _FIELD.fullmatch(name) and value is not None
    }


def stderr_is_journal(
    env: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd connected us to."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (ValueError, OSError, AttributeError):
        return False


def _key_secrets(key: ApiKey) -> list[str]:
    """The key itself and, when it is Base64 of ``id:secret``, the secret alone."""
    value = key.reveal()
    secrets = [value] if value else []
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return secrets
    _, sep, secret = decoded.partition(":")
    if sep and len(secret) >= 8:
        secrets.append(secret)
    return secrets


class Redactor(logging.Filter):
    """Replaces the API key wherever it would appear in a record; drops nothing."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for key in keys:
            self.add(key)

    def add(self, key: ApiKey) -> None:
        for secret in _key_secrets(key):
            if secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)  # the whole key before its parts

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        # Freeze the message now, so no later formatting can bring the key back.
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in record_fields(record).items():
            clean = self.redact(value)
            if clean != value:
                setattr(record, name, clean)
        return True


class FieldsFormatter(logging.Formatter):
    """Plain lines: ``LEVEL logger: message KEY=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return line
        first, nl, rest = line.partition("\n")  # fields stay on the message line
        suffix = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        return f"{first} {suffix}{nl}{rest}"


def _quote(value: str) -> str:
    if value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class JournalFieldsHandler(journal.JournalHandler):  # type: ignore[misc]
    """``JournalHandler`` that sends exactly the message, the standard fields and ours.

    The stock ``emit`` forwards every attribute of the record (``args``, ``exc_info``,
    lower-case names journald rejects); this one forwards only upper-case fields.
    ``sender_function`` (``journal.send`` by default) is the seam tests use.
    """

    def __init__(
        self,
        level: int = logging.NOTSET,
        sender_function: Callable[..., object] = journal.send,
        identifier: str = IDENTIFIER,
    ) -> None:
        super().__init__(level, sender_function=sender_function, SYSLOG_IDENTIFIER=identifier)
        self._identifier = identifier
        self._sender = sender_function

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            fields: dict[str, Any] = record_fields(record)
            fields.update(
                PRIORITY=str(self.map_priority(record.levelno)),
                SYSLOG_IDENTIFIER=self._identifier,
                LOGGER=record.name,
                THREAD_NAME=record.threadName or "",
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
            )
            self._sender(message, **fields)
        except Exception:
            self.handleError(record)


def setup_logging(
    level: str = "info",
    *,
    keys: Iterable[ApiKey] = (),
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    sender: Callable[..., object] | None = None,
) -> logging.Handler:
    """Send the ``appliance`` loggers to the journal or stderr; returns the handler.

    ``keys`` are redacted from everything logged. ``env``, ``stream`` and ``sender`` (the
    journal's send function) default to the process's own and exist for tests.
    """
    stream = sys.stderr if stream is None else stream
    handler: logging.Handler
    if stderr_is_journal(env, stream):
        handler = JournalFieldsHandler(sender_function=sender or journal.send)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(FieldsFormatter(_PLAIN_FORMAT))
    handler.addFilter(Redactor(keys))
    root = logging.getLogger("appliance")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return handler


def set_level(level: str) -> None:
    """Change the minimum level at run time (on reload)."""
    logging.getLogger("appliance").setLevel(level.upper())
