"""What a reload (SIGHUP, ``systemctl reload appliance``) changes: a pure plan from two configs.

Owns the rules; ``appliance.app.reloader.ReloadApplier`` carries them out:

- ``[session]``: the difference of the two ``session.update`` objects goes to the live
  session as a partial ``session.update``. Top-level fields are sent when they changed;
  ``audio.input`` / ``audio.output`` are sent whole when anything in them changed, so the
  server gets a complete object whether it merges or replaces. A field that was *removed*
  cannot be reset to the server's default by an update, so that asks for a reconnect
  (the new session then gets the whole configured session).
- ``[audio]`` and ``[gate]``: only what a changed key belongs to is re-opened. Capture
  device keys (``CAPTURE_KEYS``) re-open the microphone (and rebuild the front end, whose
  resamplers follow its rate); playback keys (``PLAYBACK_KEYS``) re-open the speaker;
  ``chunk_ms`` and the gate's VAD keys rebuild the front end on the running capture thread,
  so no device is re-opened. ``[gate] barge_in`` is read by the session alone: nothing is
  re-opened. ``period_ms`` belongs to both devices. A key this module does not know (a new
  one) re-opens both devices and rebuilds the front end: slower, never wrong.
- ``[earcons]``: the sounds are read again (a file that fails rejects the whole reload).
- ``[realtime]``: reconnect.
- ``[logging]``: the level changes at once; ``transcripts`` is read per message.
- ``[gpio]``: the LEDs and buttons are closed and opened again with the new settings.

Imports only the standard library and ``appliance.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
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
    restart_capture: bool
    """A capture device key changed: the microphone is re-opened."""
    restart_playback: bool
    """A playback device key changed: the speaker is re-opened."""
    rebuild_frontend: bool
    """The front end (resampling, VAD, gate, chunking) is rebuilt; implied by a capture
    restart, and alone when only ``chunk_ms`` or gate keys changed."""
    log_level: str | None
    """The new log level, when it changed."""
    gpio_changed: bool
    """``[gpio]`` changed: the LEDs and buttons are re-opened."""
    earcons_changed: bool = False
    """``[earcons]`` changed: the sounds are read again."""
    audio_keys: tuple[str, ...] = ()
    """Dotted names of the ``[audio]``/``[gate]`` keys that changed, for the log."""

    @property
    def restart_audio(self) -> bool:
        """Anything on the audio path is re-opened or rebuilt."""
        return self.restart_capture or self.restart_playback or self.rebuild_frontend

    @property
    def empty(self) -> bool:
        return not (
            self.session_update
            or self.reconnect
            or self.restart_audio
            or self.log_level
            or self.gpio_changed
            or self.earcons_changed
            or self.audio_keys
        )


def session_api(config: Config) -> dict[str, Any]:
    """The ``session`` object the daemon sends for ``config`` (``[[tools]]`` included, as
    ``Session._full_session`` sends it)."""
    session = config.session.to_api(turn_detection_null=config.gate.local_turns)
    if config.tools:
        session["tools"] = [tool.to_api() for tool in config.tools]
    return session


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


CAPTURE_KEYS = frozenset(
    {"capture_device", "capture_rate", "capture_channels", "channel", "period_ms"}
)
"""``[audio]`` keys of the microphone."""
PLAYBACK_KEYS = frozenset(
    {"playback_device", "playback_rate", "playback_channels", "period_ms", "prefill_ms"}
)
"""``[audio]`` keys of the speaker."""
FRONTEND_AUDIO_KEYS = frozenset({"chunk_ms"})
"""``[audio]`` keys of the front end alone."""
SESSION_GATE_KEYS = frozenset({"barge_in"})
"""``[gate]`` keys only the session reads (``Session.reconfigure`` applies them)."""


def _changed(old: Any, new: Any) -> list[str]:
    """Names of the fields of two settings dataclasses that differ."""
    return [f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def audio_plan(old: Config, new: Config) -> tuple[bool, bool, bool, tuple[str, ...]]:
    """(restart capture, restart playback, rebuild front end, changed keys)."""
    audio = _changed(old.audio, new.audio)
    gate = [k for k in _changed(old.gate, new.gate) if k not in SESSION_GATE_KEYS]
    known = CAPTURE_KEYS | PLAYBACK_KEYS | FRONTEND_AUDIO_KEYS
    unknown = any(k not in known for k in audio)
    capture = unknown or any(k in CAPTURE_KEYS for k in audio)
    playback = unknown or any(k in PLAYBACK_KEYS for k in audio)
    frontend = capture or bool(gate) or any(k in FRONTEND_AUDIO_KEYS for k in audio)
    keys = (*(f"audio.{k}" for k in audio), *(f"gate.{k}" for k in _changed(old.gate, new.gate)))
    return capture, playback, frontend, keys


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the running config with the re-read one."""
    update, changed, removed = session_diff(session_api(old), session_api(new))
    capture, playback, frontend, audio_keys = audio_plan(old, new)
    return ReloadPlan(
        session_update=update,
        changed_fields=changed,
        reconnect=removed
        or old.realtime != new.realtime
        or old.audio.wire_format != new.audio.wire_format,  # G.711 is set up at connect
        restart_capture=capture,
        restart_playback=playback,
        rebuild_frontend=frontend,
        log_level=new.logging.level if new.logging.level != old.logging.level else None,
        gpio_changed=old.gpio != new.gpio,
        earcons_changed=old.earcons != new.earcons,
        audio_keys=audio_keys,
    )
