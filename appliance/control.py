"""The local control socket: line-delimited JSON over a Unix socket, and its client.

Owns the wire format and the socket file. One request per line, one answer per line:

    {"command": "status"}                       -> {"ok": true, "status": {...}}
    {"command": "say", "text": "Dinner!"}       -> {"ok": true, "outcome": "speaking"}
    {"command": "ask", "text": "..."}           -> {"ok": true, "outcome": "queued"}
    {"command": "mute", "on": true}             -> {"ok": true, "muted": true}
    {"command": "volume", "percent": 40}        -> {"ok": true, "volume": 40}
    anything wrong                              -> {"ok": false, "error": "<one line>"}

What a command does is the ``ControlHost``'s (``appliance.home``); this module decides
nothing about the appliance. The socket is mode 0600, or 0660 with ``[control] group`` as
its group, so that group's members may use it. Imports the standard library,
``appliance.settings_home`` and ``appliance.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import ApplianceError, AudioDeviceError, ConfigError
from appliance.settings_home import ControlSettings

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
"""A request longer than this is refused (an announcement is a sentence or two)."""
MAX_TEXT = 2000
"""Characters of an announcement or a prompt."""
CLIENT_TIMEOUT_S = 10.0


class ControlHost(Protocol):
    """What the commands act on, on the event loop."""

    def status(self) -> dict[str, Any]: ...

    def announce(self, text: str, *, ask: bool) -> str: ...

    def set_muted(self, muted: bool) -> None: ...

    def set_volume(self, percent: int) -> int: ...


class NoDirectory(ApplianceError):
    """The socket's directory is missing: run by hand, not as the service."""


class BadRequest(Exception):
    """A request the socket cannot act on; its message is the client's error line."""


def handle(host: ControlHost, request: Any) -> dict[str, Any]:
    """One parsed request's answer (``BadRequest`` for a malformed one)."""
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise BadRequest('expected a JSON object with a string "command"')
    command = request["command"]
    if command == "status":
        return {"ok": True, "status": host.status()}
    if command in ("say", "ask"):
        text = request.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f'{command}: "text" must be a non-empty string')
        if len(text) > MAX_TEXT:
            raise BadRequest(f"{command}: text longer than {MAX_TEXT} characters")
        return {"ok": True, "outcome": host.announce(text.strip(), ask=command == "ask")}
    if command == "mute":
        on = request.get("on")
        if not isinstance(on, bool):
            raise BadRequest('mute: "on" must be true or false')
        host.set_muted(on)
        return {"ok": True, "muted": on}
    if command == "volume":
        percent = request.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise BadRequest('volume: "percent" must be a whole number from 0 to 100')
        try:
            return {"ok": True, "volume": host.set_volume(percent)}
        except AudioDeviceError as exc:
            raise BadRequest(f"volume: {exc}") from None
    raise BadRequest(f"unknown command {command!r} (status, say, ask, mute, volume)")


class ControlServer:
    """The socket server; ``start`` binds it, ``close`` removes the socket file."""

    def __init__(self, settings: ControlSettings, host: ControlHost) -> None:
        self._settings = settings
        self._host = host
        self._path = Path(settings.socket)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the socket; an ``ApplianceError`` naming the path when it cannot be."""
        group = self._group_id()
        if not self._path.parent.is_dir():
            raise NoDirectory(
                f"no control socket: {self._path.parent} does not exist (the service's "
                "RuntimeDirectory= makes it; by hand, set [control] socket)"
            )
        _remove_stale(self._path)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=str(self._path), limit=MAX_LINE
            )
        except OSError as exc:
            raise ApplianceError(
                f"control.socket: cannot listen on {self._path}: {exc.strerror or exc}"
            ) from None
        mode = 0o600
        if group is not None:
            try:
                os.chown(self._path, -1, group)
                mode = 0o660
            except OSError as exc:
                log.error(
                    "control.group: cannot give %s to group %r (%s); the service must be a "
                    "member (SupplementaryGroups=); only root may use the socket",
                    self._path, self._settings.group, exc.strerror,
                )
        os.chmod(self._path, mode)
        log.info("control socket %s (mode %o)", self._path, mode)

    def _group_id(self) -> int | None:
        name = self._settings.group
        if not name:
            return None
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise ConfigError("control.group", f"no such group {name!r}") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(CLIENT_TIMEOUT_S * 6):
                        line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_line({"ok": False, "error": "request too long"}))
                    break
                if not line:
                    break
                writer.write(_line(self._answer(line)))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not a JSON line"}
        try:
            return handle(self._host, request)
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control: %s failed", request.get("command") if isinstance(request, dict) else "?")
            return {"ok": False, "error": f"the daemon failed: {exc.__class__.__name__}: {exc}"}


def _remove_stale(path: Path) -> None:
    """A socket left by a daemon that died; anything else at the path is not ours."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ApplianceError(f"control.socket: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: it is stale
            return
    raise ApplianceError(f"control.socket: another daemon is listening on {path}")


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


# --- the client (the CLI) ---------------------------------------------------------------------


def request(path: str | Path, obj: dict[str, Any], timeout: float = CLIENT_TIMEOUT_S) -> Any:
    """One request to the daemon's socket and its answer; ``ApplianceError`` saying what was
    wrong in one line (not running, no permission, no answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ApplianceError(
                f"the daemon is not running (nothing listens on {path})"
            ) from None
        except PermissionError:
            raise ApplianceError(
                f"no permission to use {path}: be a member of the [control] group, or use sudo"
            ) from None
        try:
            sock.sendall(_line(obj))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ApplianceError(f"the daemon did not answer within {timeout:.0f} s") from None
        except OSError as exc:
            raise ApplianceError(f"{path}: {exc.strerror or exc}") from None
    try:
        return json.loads(data)
    except ValueError:
        raise ApplianceError("the daemon closed the control socket without an answer") from None
