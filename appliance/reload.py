"""What a reload (SIGHUP, ``systemctl reload appliance``) changes: a pure plan from two configs.

Owns the rules; ``Daemon.reload`` carries them out:

- ``[session]``: the difference of the two ``session.update`` objects goes to the live
  session as a partial ``session.update``. Top-level fields are sent when they changed;
  ``audio.input`` / ``audio.output`` are sent whole when anything in them changed, so the
  server gets a complete object whether it merges or replaces. A field that was *removed*
  cannot be reset to the server's default by an update, so that asks for a reconnect
  (the new session then gets the whole configured session).
- ``[audio]`` or ``[gate]``: the audio threads are restarted with the new settings.
- ``[realtime]``: reconnect.
- ``[logging]``: the level changes at once; ``transcripts`` is read per message.
- ``[gpio]``: the LEDs and buttons are closed and opened again with the new settings.

Imports only the standard library and ``appliance.config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.config import Config


@dataclass(frozen=True)
class ReloadPlan:
    """The changes between the running config and the re-read one."""

    session_update: dict[str, Any] | None
    """The partial ``session`` object for ``session.update``; None when nothing changed."""
    changed_fields: tuple[str, ...]
    """Dotted names of the session fields that changed, for the log."""
    reconnect: bool
    """``[realtime]`` changed or a session field was removed."""
    restart_audio: bool
    """``[audio]`` or ``[gate]`` changed."""
    log_level: str | None
    """The new log level, when it changed."""
    gpio_changed: bool
    """``[gpio]`` changed: the LEDs and buttons are re-opened."""

    @property
    def empty(self) -> bool:
        return not (
            self.session_update
            or self.reconnect
            or self.restart_audio
            or self.log_level
            or self.gpio_changed
        )


def session_api(config: Config) -> dict[str, Any]:
    """The ``session`` object the daemon sends for ``config``."""
    return config.session.to_api(turn_detection_null=config.gate.local_turns)


def session_diff(
    old: dict[str, Any], new: dict[str, Any]
) -> tuple[dict[str, Any] | None, tuple[str, ...], bool]:
    """(partial session, changed field names, whether a field was removed)."""
    partial: dict[str, Any] = {}
    changed: list[str] = []
    removed = False
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changed.append(name)
            removed = True
            continue
        if old.get(name) == new[name]:
            continue
        if name == "audio" and isinstance(old.get(name), dict):
            audio: dict[str, Any] = {}
            for side in sorted(set(old[name]) | set(new[name])):
                before, after = old[name].get(side, {}), new[name].get(side)
                if after is None:
                    changed.append(f"audio.{side}")
                    removed = True
                elif before != after:
                    audio[side] = after
                    keys = set(before) | set(after)
                    changed += [
                        f"audio.{side}.{k}" for k in sorted(keys) if before.get(k) != after.get(k)
                    ]
                    removed = removed or bool(set(before) - set(after))
            if audio:
                partial["audio"] = audio
        else:
            partial[name] = new[name]
            changed.append(name)
    if not partial:
        return None, tuple(changed), removed
    partial = {"type": new.get("type", "realtime"), **partial}
    return partial, tuple(changed), removed


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the running config with the re-read one."""
    update, changed, removed = session_diff(session_api(old), session_api(new))
    return ReloadPlan(
        session_update=update,
        changed_fields=changed,
        reconnect=removed or old.realtime != new.realtime,
        restart_audio=old.audio != new.audio or old.gate != new.gate,
        log_level=new.logging.level if new.logging.level != old.logging.level else None,
        gpio_changed=old.gpio != new.gpio,
    )
