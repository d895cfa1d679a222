"""appliance.logs: journal fields when stderr is the journal, plain lines otherwise, no key."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.credentials import ApiKey
from appliance.logs import REDACTED, set_level, setup_logging, stderr_is_journal

# base64("key-id:super-secret-value"): the shape of a portal key.
KEY = ApiKey("a2V5LWlkOnN1cGVyLXNlY3JldC12YWx1ZQ==", "test")
SECRET = "super-secret-value"


class JournalSink:
    """Stands in for ``systemd.journal.send``: keeps what would reach journald."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("appliance")
    saved = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def journal_stream(tmp_path: Path) -> Iterator[tuple[dict[str, str], io.TextIOWrapper]]:
    """A stream and the JOURNAL_STREAM value systemd would set for it."""
    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        yield {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream


def test_stderr_is_the_journal_only_when_device_and_inode_match(
    journal_stream: tuple[dict[str, str], io.TextIOWrapper], tmp_path: Path
) -> None:
    env, stream = journal_stream
    assert stderr_is_journal(env, stream)
    with (tmp_path / "other").open("w") as other:
        assert not stderr_is_journal(env, other)
    assert not stderr_is_journal({}, stream)
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
    assert not stderr_is_journal(env, io.StringIO())  # no file descriptor at all


def test_journal_entries_carry_priority_identifier_and_structured_fields(
    journal_stream: tuple[dict[str, str], io.TextIOWrapper],
) -> None:
    env, stream = journal_stream
    sink = JournalSink()
    setup_logging("debug", env=env, stream=stream, sender=sink)
    log = logging.getLogger("appliance.test")

    log.info("state: %s", "Listening", extra={"STATE": "listening", "TURN_ID": 3})
    log.warning("slow reply", extra={"LATENCY_MS": 1234, "SESSION_ID": "sess_1"})
    log.error("server error", extra={"ERROR_CODE": "rate_limited", "EVENT_TYPE": "error"})
    log.debug("audio", extra={"XRUNS": 2})

    info, warning, error, debug = sink.entries
    assert info["MESSAGE"] == "state: Listening"
    assert info["PRIORITY"] == "6"
    assert info["SYSLOG_IDENTIFIER"] == "appliance"
    assert info["LOGGER"] == "appliance.test"
    assert (info["STATE"], info["TURN_ID"]) == ("listening", "3")
    assert (warning["PRIORITY"], warning["LATENCY_MS"], warning["SESSION_ID"]) == (
        "4",
        "1234",
        "sess_1",
    )
    assert (error["PRIORITY"], error["ERROR_CODE"], error["EVENT_TYPE"]) == (
        "3",
        "rate_limited",
        "error",
    )
    assert (debug["PRIORITY"], debug["XRUNS"]) == ("7", "2")
    # Only journal-valid (upper-case) names are sent, nothing of the record's internals.
    for entry in sink.entries:
        assert all(name.isupper() for name in entry), sorted(entry)
        assert "CODE_ARGS" not in entry and "EXCEPTION_INFO" not in entry
    assert stream.tell() == 0  # nothing written twice through stderr


def test_plain_lines_on_stderr_carry_the_fields_as_key_value() -> None:
    stream = io.StringIO()
    setup_logging("info", env={}, stream=stream)
    log = logging.getLogger("appliance.test")

    log.info("state: %s", "Listening", extra={"STATE": "listening", "TURN_ID": 3})
    log.warning("device gone", extra={"ERROR_CODE": "device lost"})
    log.debug("not shown")

    assert stream.getvalue().splitlines() == [
        "INFO appliance.test: state: Listening STATE=listening TURN_ID=3",
        'WARNING appliance.test: device gone ERROR_CODE="device lost"',
    ]


def test_set_level_changes_what_is_logged() -> None:
    stream = io.StringIO()
    setup_logging("warning", env={}, stream=stream)
    logging.getLogger("appliance.test").info("hidden")
    set_level("info")
    logging.getLogger("appliance.test").info("shown")
    assert stream.getvalue() == "INFO appliance.test: shown\n"


def test_the_key_never_reaches_stderr() -> None:
    stream = io.StringIO()
    setup_logging("debug", env={}, stream=stream, keys=[KEY])
    log = logging.getLogger("appliance.test")

    log.info("authorization: Basic %s", KEY.reveal())
    log.info("decoded secret %s", SECRET, extra={"ERROR_CODE": f"bad {KEY.reveal()}"})
    try:
        raise RuntimeError(f"handshake failed with {KEY.reveal()}")
    except RuntimeError:
        log.exception("connect failed")

    out = stream.getvalue()
    assert KEY.reveal() not in out and SECRET not in out
    assert f"authorization: Basic {REDACTED}" in out
    assert f'ERROR_CODE="bad {REDACTED}"' in out
    assert f"RuntimeError: handshake failed with {REDACTED}" in out


def test_the_key_never_reaches_the_journal(
    journal_stream: tuple[dict[str, str], io.TextIOWrapper],
) -> None:
    env, stream = journal_stream
    sink = JournalSink()
    setup_logging("info", env=env, stream=stream, sender=sink, keys=[KEY])
    log = logging.getLogger("appliance.test")

    log.info("key %s", KEY.reveal(), extra={"SESSION_ID": KEY.reveal()})
    try:
        raise ValueError(KEY.reveal())
    except ValueError:
        log.exception("oops")

    text = repr(sink.entries)
    assert KEY.reveal() not in text and SECRET not in text
    assert sink.entries[0]["MESSAGE"] == f"key {REDACTED}"
    assert sink.entries[0]["SESSION_ID"] == REDACTED
    assert f"ValueError: {REDACTED}" in sink.entries[1]["MESSAGE"]
