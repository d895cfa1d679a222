"""The composition root: builds every part from the config, runs them, owns shutdown.

Data flow (docs, "Architecture"):
    capture thread ─▶ FrontEnd (resample, VAD, gate, pre-roll) ─▶ loop ─▶ Session ─▶ writer ─▶ socket
    socket ─▶ reader ─▶ Session ─▶ PlaybackThread (jitter buffer, played ms per item) ─▶ ALSA
Audio threads reach the loop only through ``call_soon_threadsafe``; the session is pure.

``Daemon`` builds the parts of ``appliance.app`` and wires them: the audio path
(``app.audio``), the action router (``app.router``), the connection (``app.link``) and its
supervisor (``app.supervisor``), the reload applier (``app.reloader``), the announcements
(``app.announcements``), plus GPIO, the persisted levels, the tools, the watchdog and the
home's parts (``appliance.home``: the control socket, Home Assistant). ``run`` runs the
supervisor, the watchdog and the home's parts under one ``asyncio.TaskGroup`` and stops them within ``STOP_TASKS_S`` when asked. Its
public methods are the inputs other parts use (buttons, tools, SIGHUP, tests).

Imports: anything in ``appliance``; nothing imports it but the entry points (cli, demo).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.alarms import AlarmClock
from appliance.app.announcements import Announcements
from appliance.app.audio import AudioPath
from appliance.app.link import OUTGOING_FRAMES, Link
from appliance.app.reloader import ReloadApplier
from appliance.app.router import Router
from appliance.app.supervisor import AUTH_RETRY_S, HEALTHY_AFTER_S, Down, RetryPolicy, Supervisor
from appliance.audio.capture import CaptureThread
from appliance.audio.frontend import FrontEnd, GateOutput, SpeechStarted, SpeechStopped, WakeWindow
from appliance.audio.playback import PlaybackThread
from appliance.config import Config, GpioSettings, session_settings
from appliance.controls import Levels
from appliance.core.announce import Outcome
from appliance.core.control_state import ControlState
from appliance.core.cues import RATE as CUE_RATE
from appliance.core.cues import Cues
from appliance.core.listen import GateMode
from appliance.core.protocol import ClientEvent, Incoming
from appliance.core.session import Action, CallTool, Session
from appliance.core.state import State
from appliance.core.timers import TimerSettings
from appliance.credentials import ApiKey
from appliance.earcons import load_earcons
from appliance.errors import AudioDeviceError, ConfigError
from appliance.home import Facts, run_home, timer_facts
from appliance.mixer import Mixer
from appliance.notify import Notifier, watchdog_interval
from appliance.persist import SavedControls, state_dir
from appliance.timer_tools import TimerTools
from appliance.tools import Toolbox
from appliance.transport import open_transport
from appliance.transport.base import Connection
from appliance.watchdog import audio_problem, run_watchdog

if TYPE_CHECKING:
    from appliance.gpio import Gpio

__all__ = ["AUTH_RETRY_S", "HEALTHY_AFTER_S", "OUTGOING_FRAMES", "VOICE_BARGE_IN_OFF", "Daemon"]

log = logging.getLogger(__name__)

VOICE_BARGE_IN_OFF = "voice barge-in off: the voice cannot be told from the echo"
"""STATUS= suffix while the echo canceller cannot tell the user's voice from the echo."""


GIL_SWITCH_S = 0.001  # sys.setswitchinterval: how long an audio thread may wait for the GIL
STOP_TASKS_S = 3.0
"""Shutdown: how long the connection (with its tool runs) and the watchdog have to end once
cancelled; past it the laggard is named in the log."""


class Daemon:
    def __init__(
        self,
        config: Config,
        key: ApiKey,
        *,
        notifier: Notifier | None = None,
        observers: list[Callable[[Action], None]] | None = None,
    ) -> None:
        self.config = config
        self._key = key
        self.notifier = notifier or Notifier()
        self.session = Session(session_settings(config))
        self._loop: asyncio.AbstractEventLoop | None = None
        self.gpio: Gpio | None = None
        self._conn_task: asyncio.Task[None] | None = None
        self._supervisor: Supervisor[Connection] | None = None
        # The audio path; its events go to the router (through methods: it is built later).
        self._audio = AudioPath(
            self._get_config,
            on_gate=self._on_gate,
            on_player=self._on_player,
            on_device_error=self._on_device_error,
            on_voice_barge_in=self._on_voice_barge_in,
        )
        self._voice_barge_in = True  # the echo canceller's verdict (see _on_voice_barge_in)
        # Mute and volume as the user set them (buttons or voice), kept across restarts.
        self.levels = Levels(
            SavedControls(state_dir(config.gpio.state_dir)),
            apply_muted=self._apply_muted,
            mixer=self._open_mixer,
        )
        # Cue sounds through the reply player, hidden from the session (appliance.core.cues).
        self.earcons = Cues(load_earcons(config.earcons))
        # Timers and alarms (appliance.alarms): they ring through the cues, offline too.
        self.alarms = AlarmClock(
            self._timer_settings(),
            state_dir(config.gpio.state_dir),
            chime=lambda: self.cue("alarm"),
            show_ringing=self._show_ringing,
            status_changed=self._timers_changed,
        )
        self._swallow_turn = False  # the speech that stopped a ring is not a turn
        self._swallow_talk = False  # nor the talk button press
        self.toolbox = Toolbox(
            config.tools, _ToolHost(self), secret=key.reveal(), timers=TimerTools(self.alarms)
        )
        self._link = Link(
            self.session,
            self.toolbox,
            dispatch=self._dispatch,
            on_event=self._on_event,
            stop_clock=self._stop_clock,
            open_timeout=lambda: self.config.realtime.open_timeout_s,
        )
        self._router = Router(
            self._get_config,
            self.session,
            self._audio,
            self.earcons,
            self.notifier,
            send=self._link.send,
            call_tool=self._call_tool,
            reconnect=lambda reason, immediate: self.reconnect(reason, immediate=immediate),
            observers=list(observers or []),
        )
        self._router.status_suffix = self._status_suffix
        # What the control socket and Home Assistant see (appliance.home), and the
        # announcements they ask for, spoken at the router's quiet moments.
        self.facts = Facts(transcripts=config.logging.transcripts)
        self._observers.append(self.facts)
        self.levels.on_change = lambda: self.facts.update(
            muted=self.levels.muted, volume=self.levels.volume
        )
        self.announcements = Announcements(
            config, self.session, cue=self._router.cue, dispatch=self._dispatch
        )
        self._router.after = self.announcements
        self._reloader = ReloadApplier(
            self._get_config,
            self.session,
            self._router,
            self._audio,
            self.notifier,
            set_config=self._set_config,
            reconnect=self.reconnect,
            reopen_gpio=self._reopen_gpio,
        )

    def _get_config(self) -> Config:
        return self.config

    def _set_config(self, config: Config) -> None:
        self.config = config

    # --- the parts, for the inputs and the tests ------------------------------------------------

    @property
    def capture(self) -> CaptureThread | None:
        return self._audio.capture

    @property
    def player(self) -> PlaybackThread | None:
        return self._audio.player

    @property
    def frontend(self) -> FrontEnd | None:
        return self._audio.frontend

    @property
    def controls(self) -> ControlState:
        """What the loop told the capture side (each change is posted to the front end)."""
        return self._audio.controls

    @property
    def _observers(self) -> list[Callable[[Action], None]]:
        return self._router.observers

    @property
    def _outq(self) -> asyncio.Queue[ClientEvent]:
        return self._link.outq

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down within a couple of seconds."""
        loop = self._loop = asyncio.get_running_loop()
        # A thread that wants the GIL waits until its holder blocks, or for the switch
        # interval (5 ms by default): an audio thread woken while the loop decodes a delta
        # would wait that long. 1 ms bounds it; threads seldom contend, so it costs nothing.
        sys.setswitchinterval(GIL_SWITCH_S)
        self._router.start(loop)
        self.announcements.start(loop)
        self._audio.start(loop)
        try:
            # GPIO LEDs and buttons (appliance.gpio); None when disabled or absent.
            self._open_gpio(self.config.gpio)
            # Connecting from here on, so a mute kept from before shows as such, not offline;
            # then the mute and volume as the user left them, with or without GPIO.
            self.session.connecting()
            self.levels.start()
            self.alarms.start(loop)  # what fell due while the daemon was down rings now
            async with asyncio.TaskGroup() as tg:
                self._supervisor = self._make_supervisor()
                self._conn_task = tg.create_task(self._supervisor.run(), name="connection")
                watchdog = tg.create_task(
                    run_watchdog(self.notifier, self._audio_problem, watchdog_interval()),
                    name="watchdog",
                )
                home = tg.create_task(run_home(self, self.facts), name="home")
                self.notifier.ready()
                await stop.wait()
                self.notifier.stopping()
                await _stop_within([self._conn_task, watchdog, home], STOP_TASKS_S)
        finally:
            self.alarms.close()
            if self.gpio is not None:
                self.gpio.close()
            self.levels.close()
            self._router.close()
            self.announcements.close()
            self._audio.stop()
            log.info("stopped")

    def _make_supervisor(self) -> Supervisor[Connection]:
        # The policy is read from this module when the daemon starts (tests shorten it).
        policy = RetryPolicy(auth_retry_s=AUTH_RETRY_S, healthy_after_s=HEALTHY_AFTER_S)
        return Supervisor(
            lambda: open_transport(self.config, self._key),
            self._link.serve,
            connecting=self._connecting,
            down=self._down,
            waited=self._waited,
            policy=policy,
        )

    def _connecting(self) -> None:
        self.session.connecting()
        self._dispatch()

    def _down(self, down: Down) -> None:
        self._router.status_prefix = (
            "" if down.planned else f"Reconnecting in {down.delay:.0f} s: {down.reason}"
        )
        self.session.disconnected(down.reason, planned=down.planned)
        self._dispatch()

    def _waited(self) -> None:
        self._router.status_prefix = ""

    def _open_gpio(self, settings: GpioSettings) -> None:
        assert self._loop is not None
        if not settings.enabled:
            self.gpio = None
            return
        # Imported only when enabled: gpiozero and its pin factories are 2.4 MB of a process
        # whose budget is 50 MB, and a machine without GPIO never needs them.
        from appliance.gpio import open_gpio

        self.gpio = open_gpio(settings, self, self._loop, levels=self.levels, cue=self.cue)
        if self.gpio is not None:
            self._observers.append(self.gpio.on_action)
            self.gpio.show_ringing(self.alarms.is_ringing)

    def _reopen_gpio(self, previous: GpioSettings) -> None:
        """Close the LEDs and buttons and open them with ``[gpio]`` as reloaded.

        Pins that fail to open with the new settings (a ``ConfigError`` naming the key) are
        logged and the previous settings are opened again.
        """
        if self.gpio is not None:
            self._observers.remove(self.gpio.on_action)
            self.gpio.close()
            self.gpio = None
        self.levels.close()  # the mixer opens again with the reloaded mixer_* keys
        try:
            self._open_gpio(self.config.gpio)
        except ConfigError as exc:
            log.error("reload: %s; keeping the previous [gpio]", exc, extra={"ERROR_CODE": "config"})
            self._open_gpio(previous)

    def _audio_problem(self) -> str | None:
        """The watchdog's health check (None: healthy); a reload in progress is healthy."""
        if self._reloader.reloading:
            return None
        return audio_problem(
            self.capture,
            self.player,
            now=time.monotonic(),
            playing=self.session.state is State.SPEAKING,
            device_outage=self.session.state is State.ERROR,
        )

    def _open_mixer(self) -> Mixer:
        g = self.config.gpio
        return Mixer(g.mixer_control, g.mixer_card, g.mixer_device)

    # --- the router's and the connection's hooks ----------------------------------------------

    def _dispatch(self) -> None:
        self._router.dispatch()

    def _on_gate(self, out: GateOutput) -> None:
        """A gate output, as the capture side posts it (the soak bench drives this)."""
        if not self._ring_stopped_by(out):
            self._router.on_gate(out)

    # --- timers and alarms (appliance.alarms) ---------------------------------------------------

    def _ring_stopped_by(self, out: GateOutput) -> bool:
        """A ring stops at the user's voice (a turn starting, the wake word); that turn is
        not sent. The chime holds the gate while it plays (``Cues``), so its own echo cannot
        start a turn: the user is heard in the pauses between chimes."""
        if self._swallow_turn:
            if isinstance(out, SpeechStopped):
                self._swallow_turn = False
            return not isinstance(out, WakeWindow)
        if isinstance(out, SpeechStarted) and self.alarms.stop_ringing("the user's voice"):
            self._swallow_turn = True
            return True
        if isinstance(out, WakeWindow) and out.wake_word:
            # The wake word stops it, and the request that may follow goes through.
            self.alarms.stop_ringing("the wake word")
        return False

    def _timer_settings(self) -> TimerSettings:
        """``[timers]``, the chimes at least the alarm sound plus a second apart: the pause
        is where the user's voice (not the chime's echo) can stop the ring."""
        t = self.config.timers
        sound_s = len(self.earcons.sounds.get("alarm", b"")) / 2 / CUE_RATE
        return TimerSettings(t.max_ring_s, max(t.ring_interval_s, sound_s + 1.0))

    def _status_suffix(self) -> str:
        """After the state in STATUS=: the next timer (``appliance.alarms``), and that the
        voice cannot interrupt replies while the echo canceller says so."""
        parts = (self.alarms.status(), "" if self._voice_barge_in else VOICE_BARGE_IN_OFF)
        return "; ".join(part for part in parts if part)

    def _on_voice_barge_in(self, ok: bool) -> None:
        """The echo canceller turned voice barge-in off (it cannot tell the user's voice from
        the speaker's echo: ``EchoCanceller.voice_barge_in``) or back on: STATUS= says so."""
        if ok != self._voice_barge_in:
            self._voice_barge_in = ok
            self._router.show_status()

    def _timers_changed(self) -> None:
        """STATUS= again with the next timer due (the router is built after the alarms), and
        the home's view (``appliance.home``)."""
        self._router.show_status()
        self.facts.update(**timer_facts(self.alarms))

    def _show_ringing(self, ringing: bool) -> None:
        if self.gpio is not None:
            self.gpio.show_ringing(ringing)

    def _on_player(self, ev: Any) -> None:
        self._router.on_player(ev)

    def _on_device_error(self, err: AudioDeviceError | None) -> None:
        self._router.on_device_error(err)

    def _stop_clock(self) -> None:
        self._router.stop_clock()

    def _on_event(self, event: Incoming, now: float) -> None:
        self.session.server_event(event, now)
        self._dispatch()

    def _call_tool(self, call: CallTool) -> None:
        self._link.call_tool(call)

    # --- user inputs (buttons, tools, reload); call on the loop thread ----------------------

    def set_talking(self, held: bool) -> None:
        """Push-to-talk button state; the capture thread, woken, takes it at once.

        A press in push-to-talk mode plays the "listening" earcon first; the front end
        starts the turn once the cue has played (``Control.EARCON_RELEASE``).
        """
        if self.frontend is None:
            return
        if held and self.alarms.stop_ringing("the talk button"):
            self._swallow_talk = True  # this press stopped a ring: no turn, nor at release
            return
        if not held and self._swallow_talk:
            self._swallow_talk = False
            return
        c = self.controls
        if held and not c.talking and not c.muted and self._audio.gate_mode is GateMode.PUSH_TO_TALK:
            self.cue("listening")
        self._audio.post(c.talk(held))

    def cue(self, name: str) -> bool:
        """Play earcon ``name`` (``appliance.earcons``: listening, mute, unmute, error,
        too_short, wake); False when it is silent or skipped because the agent speaks."""
        return self._router.cue(name)

    def announce(self, text: str, *, ask: bool = False) -> Outcome:
        """Speak ``text`` at the next quiet moment, after the announcement earcon (``ask``:
        as a prompt the agent answers in the conversation); see ``app.announcements``."""
        outcome = self.announcements.request(text, ask=ask)
        self._dispatch()
        return outcome

    def set_muted(self, muted: bool) -> None:
        """The privacy switch, kept across restarts (``Daemon.levels``)."""
        self.levels.set_muted(muted)

    def _apply_muted(self, muted: bool) -> None:
        """The mute itself: nothing captured is sent while muted."""
        self._audio.post(self.controls.mute(muted))
        self.session.set_muted(muted)
        self._dispatch()

    def reconnect(self, reason: str = "reconnect requested", *, immediate: bool = True) -> None:
        """Drop the connection now; the supervisor opens a fresh one (``immediate``: at
        once, else after the backoff delay, as for a failure). Offline, the backoff wait
        ends at once (a ``[realtime]`` reload takes effect without waiting it out)."""
        if not self._link.request(reason, planned=immediate) and self._supervisor is not None:
            self._supervisor.wake()

    async def reload(self, new: Config) -> None:
        """Apply a re-read, validated config (SIGHUP); see ``appliance.reload`` for the rules."""
        old = self.config
        await self._reloader.apply(new)
        self.alarms.reconfigure(self._timer_settings())
        self.announcements.reload(old, self.config)


async def _stop_within(tasks: list[asyncio.Task[Any]], deadline: float) -> None:
    """Cancel ``tasks`` and wait up to ``deadline`` for them; one still running is named
    in the log and cancelled again (its owner's TaskGroup still waits for it)."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        log.error("%s did not stop within %g s of shutdown", task.get_name(), deadline)
        task.cancel()


class _ToolHost:
    """What the built-in tools act on (``appliance.tools.ToolHost``), on the loop thread:
    the same persisted mute and volume as the buttons (``Daemon.levels``)."""

    def __init__(self, daemon: Daemon) -> None:
        self._levels = daemon.levels

    def set_muted(self, muted: bool) -> None:
        self._levels.set_muted(muted)

    def set_volume(self, percent: int) -> int:
        volume = self._levels.set_volume(percent)
        log.info("volume %d%% (asked by the model)", volume)
        return volume
