"""The reload applier: carries out the plan ``appliance.reload.plan_reload`` makes.

Owns the order of a reload (read the earcons first, so a bad file rejects the reload before
anything changed; then the session, the log level, the audio parts, the connection, GPIO),
re-opening only the audio parts whose settings changed, and the one log line saying what
was done. The rules (what a changed key means) are ``appliance.reload``'s.

Imports: the standard library, ``appliance.config``, ``appliance.core``, ``appliance.audio``
(event types), ``appliance.earcons``, ``appliance.errors``, ``appliance.logs``,
``appliance.notify``, ``appliance.reload``, ``appliance.app.audio``, ``appliance.app.router``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.app.audio import AudioPath, close_parts
from appliance.app.router import Router
from appliance.audio.frontend import SpeechStopped
from appliance.config import Config, GpioSettings, session_settings
from appliance.core.session import Session
from appliance.core.state import State
from appliance.earcons import load_earcons
from appliance.errors import ConfigError
from appliance.logs import set_level
from appliance.notify import Notifier
from appliance.reload import ReloadPlan, plan_reload

log = logging.getLogger(__name__)


class ReloadApplier:
    """``apply(new)`` reloads; ``reloading`` is True meanwhile (the watchdog's grace).

    ``set_config`` makes ``new`` the running config (every part reads it from there),
    ``reconnect`` asks for a new connection, ``reopen_gpio(previous)`` re-opens the LEDs
    and buttons with the running ``[gpio]`` (``previous`` when that fails).
    """

    def __init__(
        self,
        config: Callable[[], Config],
        session: Session,
        router: Router,
        audio: AudioPath,
        notifier: Notifier,
        *,
        set_config: Callable[[Config], None],
        reconnect: Callable[[], None],
        reopen_gpio: Callable[[GpioSettings], None],
    ) -> None:
        self._config = config
        self._session = session
        self._router = router
        self._audio = audio
        self._notifier = notifier
        self._set_config = set_config
        self._reconnect = reconnect
        self._reopen_gpio = reopen_gpio
        self.reloading = False

    async def apply(self, new: Config) -> None:
        """Apply a re-read, validated config (SIGHUP); see ``appliance.reload`` for the rules.

        Earcon files are read before anything changes: one that fails rejects the reload.
        """
        old = self._config()
        plan = plan_reload(old, new)
        sounds = None
        if plan.earcons_changed:
            try:
                sounds = load_earcons(new.earcons)
            except ConfigError as exc:
                log.error(
                    "reload: %s; keeping the running config", exc, extra={"ERROR_CODE": "config"}
                )
                return
        self._notifier.reloading()
        self.reloading = True
        try:
            self._set_config(new)
            if sounds is not None:
                self._router.earcons.sounds = sounds
            self._session.reconfigure(session_settings(new), plan.session_update)
            self._router.dispatch()
            if plan.log_level:
                set_level(plan.log_level)
            if plan.restart_audio:
                await self._restart_audio(
                    capture=plan.restart_capture,
                    playback=plan.restart_playback,
                    frontend=plan.rebuild_frontend,
                )
            if plan.reconnect:
                self._reconnect()
            if plan.gpio_changed:
                self._reopen_gpio(old.gpio)
        finally:
            self.reloading = False
            self._notifier.ready()
        log.info("reloaded %s: %s", new.source, "; ".join(_done(plan)) or "no changes")

    async def _restart_audio(self, *, capture: bool, playback: bool, frontend: bool) -> None:
        """Re-open only the parts of the audio path whose settings changed.

        A capture restart always comes with a new front end (its resamplers follow the
        device rate); a front end alone is swapped under the running capture thread. A user
        turn in progress dies with its front end and is cancelled; a reply playing on a
        re-opened speaker is lost, and the session is told nothing plays any more.
        """
        audio, router = self._audio, self._router
        # A new speaker has a new echo reference, which the front end's canceller must use.
        frontend = frontend or capture or (playback and audio.echo_reference)
        parts = [p for p, yes in ((audio.capture, capture), (audio.player, playback)) if yes]
        await asyncio.to_thread(close_parts, parts)  # joins threads: not on the loop
        router.devices_reopened(*(w for w, yes in (("capture", capture), ("playback", playback)) if yes))
        if frontend and self._session.state is State.LISTENING:
            router.on_gate(SpeechStopped(0, cancelled=True))  # the turn died with the old gate
        if playback:
            audio.start_player()
            self._session.playback_idle(router.now())
            audio.set_playing(False)
            router.dispatch()
        if frontend:
            audio.make_frontend()
            self._session.wake_window(False, router.now())  # a new front end starts asleep
        if capture:
            audio.start_capture()


def _done(plan: ReloadPlan) -> list[str]:
    """What a reload did, for its log line."""
    reopened = [
        what
        for what, yes in (
            ("capture", plan.restart_capture),
            ("playback", plan.restart_playback),
            ("front end", plan.rebuild_frontend and not plan.restart_capture),
        )
        if yes
    ]
    done = [f"session {', '.join(plan.changed_fields)}"] if plan.changed_fields else []
    done += [f"{', '.join(plan.audio_keys)} changed"] if plan.audio_keys else []
    done += [f"re-opened {', '.join(reopened)}"] if reopened else []
    done += ["reconnecting"] if plan.reconnect else []
    done += [f"log level {plan.log_level}"] if plan.log_level else []
    done += ["gpio re-opened"] if plan.gpio_changed else []
    done += ["earcons re-read"] if plan.earcons_changed else []
    return done
