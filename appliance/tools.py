"""Local tools the model may call: argument validation, subprocess runs, built-ins.

Owns ``Toolbox``: given a call (name, JSON arguments) it returns the text for the
``function_call_output`` item, and never raises. Unknown tools, arguments that are not
JSON or break the declared schema, a program that cannot start, fails, hangs past its
timeout or prints more than its cap: each becomes an output saying so (``{"error": ...}``),
so the model can tell the user, and a warning in the journal.

A ``[[tools]]`` command runs with ``asyncio`` subprocesses: an argv list, never a shell,
the arguments as JSON on stdin, in its own process group (killed whole at the timeout), with
an environment that holds neither the API key nor where it came from. Built-ins
(``get_time``, ``set_volume``, ``mute``: their schemas are in ``appliance.builtin_tools``)
run in the daemon through a ``ToolHost``; the timer and alarm ones (``appliance.timer_tools``)
through its ``TimerTools``.

Imports: ``appliance.builtin_tools``, ``appliance.config``, ``appliance.core.schema``,
``appliance.core.timers``, ``appliance.credentials``, ``appliance.errors``,
``appliance.timer_tools``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from appliance.builtin_tools import Builtin
from appliance.config import ToolSettings
from appliance.core.schema import SchemaError, validate
from appliance.core.timers import TimerError
from appliance.credentials import scrubbed_environ
from appliance.errors import ApplianceError
from appliance.timer_tools import TIMER_TOOLS, TimerTools

log = logging.getLogger(__name__)

STDERR_CAP = 4096  # bytes of a failing tool's stderr kept for the error message
KILL_WAIT_S = 2.0


class ToolHost(Protocol):
    """What the built-ins act on: the daemon (loop thread only)."""

    def set_muted(self, muted: bool) -> None: ...

    def set_volume(self, percent: int) -> int:
        """Set the speaker volume; returns what was set; raises ``ApplianceError``."""
        ...


class ToolFailure(Exception):
    """A tool call that cannot be answered with a result; the message goes to the model."""


class Toolbox:
    def __init__(
        self,
        tools: Sequence[ToolSettings],
        host: ToolHost | None = None,
        *,
        env: Mapping[str, str] | None = None,
        secret: str = "",
        timers: TimerTools | None = None,
    ) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._timers = timers
        self._index = {tool.name: i for i, tool in enumerate(tools)}
        self._host = host
        # Children get the daemon's environment minus the key, under any variable name.
        self._env = {k: v for k, v in scrubbed_environ(env).items() if not (secret and secret in v)}

    @property
    def env(self) -> dict[str, str]:
        """The environment every tool program gets (a copy)."""
        return dict(self._env)

    async def call(self, name: str, arguments: str) -> str:
        """Run one call; returns the ``function_call_output`` text. Never raises (except
        ``CancelledError``, after killing the program)."""
        started = time.monotonic()
        try:
            output = await self._call(name, arguments)
        except ToolFailure as exc:
            log.warning("tool %s: %s", name, exc, extra={"ERROR_CODE": "tool"})
            return json.dumps({"error": str(exc)})
        log.info(
            "tool %s answered in %d ms (%d bytes)",
            name,
            round((time.monotonic() - started) * 1000),
            len(output),
        )
        return output

    async def _call(self, name: str, arguments: str) -> str:
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            raise ToolFailure(f"unknown tool {name!r} (this device has: {known})")
        try:
            args = json.loads(arguments or "{}")
        except ValueError as exc:
            raise ToolFailure(f"the arguments are not valid JSON ({exc})") from None
        try:
            validate(args, dict(tool.parameters))
        except SchemaError as exc:
            where = f"argument {exc.path}" if exc.path else "the arguments"
            raise ToolFailure(f"invalid arguments: {where}: {exc.message}") from None
        if tool.builtin:
            return self._builtin(tool.name, args)
        return await self._run(tool, json.dumps(args).encode())

    # --- built-ins ------------------------------------------------------------------------

    def _builtin(self, name: str, args: dict[str, Any]) -> str:
        if name == Builtin.GET_TIME:
            now = datetime.datetime.now().astimezone()
            return json.dumps(
                {
                    "local_time": now.isoformat(timespec="seconds"),
                    "weekday": now.strftime("%A"),
                    "timezone": now.tzname() or "",
                }
            )
        if name in TIMER_TOOLS:
            if self._timers is None:
                raise ToolFailure(f"{name} is not available on this device")
            try:
                return self._timers.call(name, args)
            except TimerError as exc:
                raise ToolFailure(str(exc)) from None
        if self._host is None:
            raise ToolFailure(f"{name} is not available on this device")
        try:
            if name == Builtin.SET_VOLUME:
                return json.dumps({"volume_percent": self._host.set_volume(args["percent"])})
            if name == Builtin.MUTE:
                self._host.set_muted(args["muted"])
                return json.dumps({"muted": args["muted"]})
        except ApplianceError as exc:
            raise ToolFailure(str(exc)) from None
        raise ToolFailure(f"unknown built-in {name!r}")

    # --- programs -------------------------------------------------------------------------

    async def _run(self, tool: ToolSettings, stdin: bytes) -> str:
        key = f"tools[{self._index[tool.name]}].command"
        try:
            proc = await asyncio.create_subprocess_exec(
                *tool.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,  # its own process group: killed whole
                close_fds=True,
            )
        except OSError as exc:
            raise ToolFailure(
                f"cannot run {tool.command[0]!r} ({key}): {exc.strerror or exc}"
            ) from None
        try:
            async with asyncio.timeout(tool.timeout_s):
                out, err = await asyncio.gather(
                    _feed_and_read(proc, stdin, tool.max_output_bytes),
                    _read_capped(proc.stderr, STDERR_CAP),
                )
                code = await proc.wait()
        except TimeoutError:
            await _kill(proc)
            raise ToolFailure(f"timed out after {tool.timeout_s:g} s and was stopped") from None
        except _TooMuch:
            await _kill(proc)
            raise ToolFailure(
                f"printed more than {tool.max_output_bytes} bytes and was stopped"
            ) from None
        finally:
            if proc.returncode is None:  # cancelled: the daemon is stopping or reconnecting
                await _kill(proc)
        if code != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            detail = f": {lines[-1][:300]}" if lines else ""
            what = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
            raise ToolFailure(f"{what}{detail}")
        text = out.decode("utf-8", "replace").strip()
        return text or json.dumps({"ok": True})


class _TooMuch(Exception):
    pass


async def _feed_and_read(proc: asyncio.subprocess.Process, data: bytes, cap: int) -> bytes:
    assert proc.stdin is not None
    # A program that ignores its stdin (and exits) is fine.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    proc.stdin.close()
    out = await _read_capped(proc.stdout, cap, strict=True)
    return out


async def _read_capped(
    stream: asyncio.StreamReader | None, cap: int, *, strict: bool = False
) -> bytes:
    """Read to EOF keeping at most ``cap`` bytes; ``strict``: more is ``_TooMuch``."""
    assert stream is not None
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) + len(chunk) > cap:
            if strict:
                raise _TooMuch
            kept += chunk[: max(0, cap - len(kept))]
        else:
            kept += chunk
    return bytes(kept)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_WAIT_S):
            await proc.wait()
