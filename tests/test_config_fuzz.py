"""Config fuzzing: random mutations of config/appliance.toml never give a traceback.

In-process (for volume): hypothesis mutates the parsed reference file (a value replaced by
any TOML value, a key renamed, an unknown key added, a key removed) and the raw text (bytes
overwritten, inserted, cut), then runs the real loader. Each mutation either still makes a
valid config or raises ``ConfigError``: one line, naming a key path that is the mutated key,
a key inside it, a table around it or a key beside it (a cross-field rule such as
``start_frames`` <= ``start_window`` names its partner), or, for broken TOML, the line and
column. Anything else escaping the loader fails the test.

Then a few subprocess runs of ``appliance check`` on mutated files: exit 78 and exactly one
line on stderr naming the key, no traceback.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import load_config, parse_config
from appliance.errors import ConfigError

REFERENCE = Path(__file__).resolve().parent.parent / "config" / "appliance.toml"
REFERENCE_TEXT = REFERENCE.read_text()
REFERENCE_DATA = tomllib.loads(REFERENCE_TEXT)
VALUE_EXAMPLES = 1000
TEXT_EXAMPLES = 300

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    """A key path as the config's errors write it (non-bare keys quoted as TOML does)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
        out += f".{name}" if out else name
    return out


def key_paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key path in the document, tables and leaves, array-of-tables elements too."""
    paths: list[Path_] = []
    if isinstance(node, dict):
        for key, value in node.items():
            paths.append((*prefix, key))
            paths += key_paths(value, (*prefix, key))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, value in enumerate(node):
            paths += key_paths(value, (*prefix, i))
    return paths


def table_paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    paths: list[Path_] = [prefix] if isinstance(node, dict) else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += table_paths(value, (*prefix, key))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, value in enumerate(node):
            paths += table_paths(value, (*prefix, i))
    return paths


KEYS = key_paths(REFERENCE_DATA)
TABLES = table_paths(REFERENCE_DATA)

toml_scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "default", "GPIO999", "wss://x", "ws://h:1/p?q", "vad", "always",
                     "none", "pwm", "inf", "semantic_vad", "auto", "x" * 300]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 2, 7, 8000, 16000, 24000, 48000, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1)),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3),
    max_leaves=6,
)


def get_parent(doc: Any, path: Path_) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], Path_, str]:
    doc = copy.deepcopy(REFERENCE_DATA)
    how = draw(st.sampled_from(["replace", "replace", "replace", "unknown", "rename", "remove"]))
    if how == "unknown":
        table = draw(st.sampled_from(TABLES))
        name = draw(st.text(min_size=1, max_size=10))
        parent: Any = doc
        for part in table:
            parent = parent[part]
        if name in parent:
            name += "_x"
        parent[name] = draw(toml_values)
        return doc, (*table, name), how
    path = draw(st.sampled_from(KEYS))
    parent = get_parent(doc, path)
    if how == "replace":
        parent[path[-1]] = draw(toml_values)
        return doc, path, how
    value = parent.pop(path[-1])
    if how == "rename":
        new = f"{path[-1]}{draw(st.sampled_from(['s', '_', 'x', '2']))}"
        parent[new] = value
        return doc, (*path[:-1], new), how
    return doc, path, how


def related(error_key: str, path: Path_) -> bool:
    """The error names the mutated key, something inside it, a table around it or a key
    beside it."""
    mutated_key = dotted(path)
    parent = dotted(path[:-1])
    return (
        error_key == mutated_key
        or error_key.startswith((mutated_key + ".", mutated_key + "["))
        or mutated_key.startswith((error_key + ".", error_key + "["))
        or (bool(parent) and error_key.startswith((parent + ".", parent + "[")))
        or (not parent and "." not in error_key and "[" not in error_key)
    )


@settings(max_examples=VALUE_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_value_mutations_name_the_key(case: tuple[dict[str, Any], Path_, str]) -> None:
    doc, path, how = case
    try:
        parse_config(doc, "<fuzz>")
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text, text
        assert exc.key, f"no key path in {text!r} ({how} {dotted(path)})"
        assert text.startswith(exc.key + ": ")
        assert related(exc.key, path), f"{how} {dotted(path)} gave {text!r}"


@st.composite
def damaged_text(draw: st.DrawFn) -> bytes:
    data = bytearray(REFERENCE_TEXT.encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        chunk = draw(st.sampled_from([b"=", b"[", b"]", b'"', b"\n", b"#", b"\xff", b"x = 1\n",
                                      b"[gate]\n", b"{", b"'''", b"0x", b"\x00"])
                     | st.binary(min_size=1, max_size=4))
        if how == "overwrite":
            data[at : at + len(chunk)] = chunk
        elif how == "insert":
            data[at:at] = chunk
        else:
            del data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=TEXT_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_text())
def test_damaged_text_is_one_line_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        f.write(data)
    try:
        load_config(f.name)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text, text
        assert "Traceback" not in text
    finally:
        os.unlink(f.name)


# --- the CLI path: a handful of real `appliance check` processes ----------------------------

CLI_CASES = [
    ("speed = 1.0", 'speed = "fast"', "session.audio.output.speed"),
    ("capture_rate = 16000", "capture_rate = -5", "audio.capture_rate"),
    ('mode = "vad"', 'mode = "telepathy"', "gate.mode"),
    ("[gpio]\n", "[gpio]\nled_colour = 1\n", "gpio.led_colour"),
    ("ping_interval_s = 20.0", "ping_interval_s = nan", "realtime.ping_interval_s"),
    ('name = "get_time"', "name = []", "tools[0].name"),
    ('chunk_ms = "auto"', 'chunk_ms = "auto"\nchunk_ms = 20', "line"),  # duplicate key: TOML error
]


@pytest.mark.parametrize(("old", "new", "key"), CLI_CASES)
def test_check_exits_78_naming_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert REFERENCE_TEXT.count(old) >= 1, old
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(REFERENCE_TEXT.replace(old, new, 1))
    env = {**os.environ, "INWORLD_API_KEY": "dGVzdDpmdXp6"}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check", "--config", str(cfg)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("appliance: ") and key in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "dGVzdDpmdXp6" not in proc.stderr + proc.stdout


def test_reference_file_is_valid() -> None:
    """The mutations start from a valid document (else every test above is vacuous)."""
    config = parse_config(REFERENCE_DATA, str(REFERENCE))
    assert config.audio.chunk_ms is None  # "auto"
    assert not math.isnan(config.realtime.ping_interval_s)
    assert len(KEYS) > 80
