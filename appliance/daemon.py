"""The composition root: builds every part from the config, runs them, owns shutdown.

Data flow (README "Architecture"):
    capture thread ─▶ FrontEnd (resample, VAD, gate, pre-roll) ─▶ loop ─▶ Session ─▶ writer ─▶ socket
    socket ─▶ reader ─▶ Session ─▶ PlaybackThread (jitter buffer, played ms per item) ─▶ ALSA
Audio threads reach the loop only through ``call_soon_threadsafe``; the session is pure and
its actions are routed to the adapters here, in ``_dispatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from appliance.audio.aec import (
    EchoCanceller,
    ProcessingUnavailable,
    ReferenceTap,
    canceller_installed,
    load_canceller,
)
from appliance.audio.capture import CaptureThread
from appliance.audio.frontend import (
    AudioChunk,
    FrontEnd,
    GateOutput,
    SpeechStarted,
    SpeechStopped,
    WakeWindow,
)
from appliance.audio.playback import (
    PlaybackDeviceError,
    PlaybackDeviceRestored,
    PlaybackIdle,
    PlaybackStarted,
    PlaybackStopped,
    PlaybackThread,
)
from appliance.audio.vad import WebRtcVad
from appliance.config import Config, GpioSettings, listen_settings, session_settings
from appliance.controls import Levels
from appliance.core.backoff import Backoff
from appliance.core.cues import Cues, EndOfStream, Enqueue, Hold, Route
from appliance.core.listen import Control, ControlState, Detector, GateMode
from appliance.core.protocol import AppendAudio, ClientEvent, Incoming
from appliance.core.session import (
    Action,
    CallTool,
    EndOfReply,
    Play,
    Reconnect,
    Send,
    Session,
    StateChanged,
    StopPlayback,
    TooShort,
    Transcript,
)
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.deadline import DeadlineTimer
from appliance.earcons import load_earcons
from appliance.errors import AudioDeviceError, AuthenticationError, ConfigError, TransportError
from appliance.gpio import Gpio, open_gpio
from appliance.logs import set_level
from appliance.mixer import Mixer
from appliance.notify import Notifier, watchdog_interval
from appliance.persist import ControlState as SavedControls
from appliance.persist import state_dir
from appliance.reload import plan_reload
from appliance.tools import Toolbox
from appliance.transport import open_transport
from appliance.transport.base import Connection
from appliance.watchdog import audio_problem, run_watchdog

if TYPE_CHECKING:
    from appliance.audio.wake import WakeWordDetector  # imported when wake mode is used

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTGOING_FRAMES = 256  # about 10 s of 40 ms chunks; past that the socket is stuck
AUTH_RETRY_S = 60.0  # a refused key is not retried in a hot loop
HEALTHY_AFTER_S = 30.0  # a session this long resets the backoff
GIL_SWITCH_S = 0.001  # sys.setswitchinterval: how long an audio thread may wait for the GIL


def _on_loop(loop: asyncio.AbstractEventLoop, handler: Callable[[T], None]) -> Callable[[T], None]:
    """Wrap ``handler`` so an audio or GPIO thread can call it: it runs on the loop."""

    def post(arg: T) -> None:
        loop.call_soon_threadsafe(handler, arg)

    return post


class _Handoff:
    """Calls the capture thread makes during one sink call, run on the loop in one
    ``call_soon_threadsafe`` when the call ends: one loop wake-up per capture wake-up, not
    one per gate output, and the capture thread holds the GIL no longer when it comes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: list[tuple[Callable[[Any], None], Any]] = []

    def call(self, fn: Callable[[T], None], arg: T) -> None:
        """Capture thread: run ``fn(arg)`` on the loop after this sink call."""
        self._calls.append((fn, arg))

    def flush(self) -> None:
        """Capture thread, at the end of a sink call."""
        if self._calls:
            calls, self._calls = self._calls, []
            self._loop.call_soon_threadsafe(_run_calls, calls)


def _run_calls(calls: list[tuple[Callable[[Any], None], Any]]) -> None:
    for fn, arg in calls:
        fn(arg)


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
        self._observers = observers or []
        self.session = Session(session_settings(config))
        self._outq: asyncio.Queue[ClientEvent] = asyncio.Queue(OUTGOING_FRAMES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.capture: CaptureThread | None = None
        self.player: PlaybackThread | None = None
        self.frontend: FrontEnd | None = None
        # What the loop told the capture side (each change is posted to the front end).
        self.controls = ControlState()
        self._handoff: _Handoff | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._reference: ReferenceTap | None = None
        self.gpio: Gpio | None = None
        self._status_prefix = ""
        self._conn_task: asyncio.Task[None] | None = None
        self._reconnect_requested = asyncio.Event()
        self._reconnect_reason = ""
        self._reconnect_immediate = False
        self._reloading = False
        self._last_state = State.STARTING  # for the wake mode's follow-up window
        if GateMode(config.gate.mode) is GateMode.WAKE:  # a bad gate.wake_word is a config error before any audio
            wake = self._make_wake(rebuilding=False)
            if wake is not None:
                wake.close()
        # Mute and volume as the user set them (buttons or voice), kept across restarts.
        self.levels = Levels(
            SavedControls(state_dir(config.gpio.state_dir)),
            apply_muted=self._apply_muted,
            mixer=self._open_mixer,
        )
        self.toolbox = Toolbox(config.tools, _ToolHost(self), secret=key.reveal())
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._device_errors: dict[str, str] = {"capture": "", "playback": ""}
        # Cue sounds through the reply player, hidden from the session (appliance.core.cues);
        # its deadlines (the gate's release, the "error" cue) on one loop timer.
        self.earcons = Cues(load_earcons(config.earcons))
        self._cue_timer: DeadlineTimer | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down within a couple of seconds."""
        loop = self._loop = asyncio.get_running_loop()
        # A thread that wants the GIL waits until its holder blocks, or for the switch
        # interval (5 ms by default): an audio thread woken while the loop decodes a delta
        # would wait that long. 1 ms bounds it; threads seldom contend, so it costs nothing.
        sys.setswitchinterval(GIL_SWITCH_S)
        cue_timer = self._cue_timer = DeadlineTimer(loop, self._cue_tick)
        self._start_audio(loop)
        try:
            # GPIO LEDs and buttons (appliance.gpio); None when disabled or absent.
            self.gpio = open_gpio(self.config.gpio, self, loop, levels=self.levels, cue=self.cue)
            if self.gpio is not None:
                self._observers = [*self._observers, self.gpio.on_action]
            # Connecting from here on, so a mute kept from before shows as such, not offline;
            # then the mute and volume as the user left them, with or without GPIO.
            self.session.connecting()
            self.levels.start()
            async with asyncio.TaskGroup() as tg:
                self._conn_task = tg.create_task(self._connection_loop(), name="connection")
                watchdog = tg.create_task(
                    run_watchdog(self.notifier, self._audio_problem, watchdog_interval()),
                    name="watchdog",
                )
                self.notifier.ready()
                await stop.wait()
                self.notifier.stopping()
                self._conn_task.cancel()
                watchdog.cancel()
        finally:
            if self.gpio is not None:
                self.gpio.close()
            self.levels.close()
            cue_timer.cancel()
            self._stop_audio()
            log.info("stopped")

    def _start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        self._start_player(loop)
        self._make_frontend(loop)
        self._start_capture(loop)

    def _start_player(self, loop: asyncio.AbstractEventLoop) -> None:
        a = self.config.audio
        # Echo cancellation's reference, from the player to each front end's canceller.
        self._reference = (
            ReferenceTap(a.playback_rate)
            if a.processing.echo_cancellation and canceller_installed()
            else None
        )
        self.player = PlaybackThread(
            device=a.playback_device,
            rate=a.playback_rate,
            channels=a.playback_channels,
            period_frames=a.playback_period_frames,
            prefill_ms=a.prefill_ms,
            on_event=_on_loop(loop, self._on_player),
            reference=self._reference,
        )
        self.player.start()

    def _make_frontend(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new front end; the capture thread feeds whichever is current (``_to_frontend``).

        What an older front end still emits after it was replaced is dropped, so a reload
        that rebuilds it mid-turn cannot leak the dead turn's audio into the session.
        """
        a, g = self.config.audio, self.config.gate
        settings = listen_settings(g)
        old = self.frontend
        vad = None  # the micro detector is the front end's own
        if settings.uses_detector and settings.detector is Detector.WEBRTC:
            vad = WebRtcVad(g.vad_aggressiveness, g.vad_frame_ms)
        made: list[FrontEnd] = []
        if self._handoff is None:
            self._handoff = _Handoff(loop)
        handoff = self._handoff

        def on_gate(out: GateOutput) -> None:
            if made and made[0] is self.frontend:
                self._on_gate(out)

        frontend = FrontEnd(
            device_rate=a.capture_rate,
            settings=settings,
            chunk_ms=a.chunk_ms,
            vad=vad,
            emit=lambda out: handoff.call(on_gate, out),
            canceller=self._load_canceller(),
            wake=self._make_wake(rebuilding=old is not None),
        )
        made.append(frontend)
        for msg in self.controls.replay():  # the loop's view of the world carries over
            frontend.post(msg)
        if old is not None:
            self.session.wake_window(False, loop.time())  # a new front end starts asleep
        self.frontend = frontend

    def _make_wake(self, *, rebuilding: bool) -> WakeWordDetector | None:
        """The wake-word detector of ``[gate] mode = "wake"`` (None in other modes).

        A bad ``gate.wake_word`` stops the start with its config error; on a reload it is
        logged and the device runs without a detector, so it sends nothing, until fixed.
        """
        g = self.config.gate
        if self._gate_mode is not GateMode.WAKE:
            return None
        from appliance.audio.wake import WakeWordDetector

        try:
            return WakeWordDetector(
                g.wake_word, cutoff=g.wake_cutoff or None, refractory_ms=g.wake_refractory_ms
            )
        except ConfigError as exc:
            if not rebuilding:
                raise
            log.error("reload: %s; no wake word until it is fixed", exc, extra={"ERROR_CODE": "config"})
            return None

    def _load_canceller(self) -> EchoCanceller | None:
        """The ``[audio.processing]`` module, or None (off, or not installed: warned once)."""
        try:
            return load_canceller(self.config.audio.processing, self._reference)
        except ProcessingUnavailable as exc:
            log.warning("%s; barge-in relies on the echo guard alone", exc)
            return None

    def _to_frontend(self, mono: npt.NDArray[np.int16]) -> None:
        """The capture thread's sink: one attribute read, so a reload can swap front ends."""
        frontend = self.frontend
        if frontend is not None:
            frontend.process(mono)
            assert self._handoff is not None
            self._handoff.flush()

    def _frontend_wants(self) -> int:
        """The capture thread's pacing: frames the current front end needs before it can
        decide anything (so the thread sleeps until then instead of waking every period)."""
        frontend = self.frontend
        return frontend.wants() if frontend is not None else 0

    def _start_capture(self, loop: asyncio.AbstractEventLoop) -> None:
        a = self.config.audio
        self.capture = CaptureThread(
            device=a.capture_device,
            rate=a.capture_rate,
            channels=a.capture_channels,
            channel=a.channel,
            period_frames=a.capture_period_frames,
            sink=self._to_frontend,
            on_error=_on_loop(loop, self._on_device_error),
            wants=self._frontend_wants,
        )
        self.capture.start()

    def _stop_audio(self) -> None:
        self._close_parts([self.capture, self.player])

    @staticmethod
    def _close_parts(parts: list[CaptureThread | PlaybackThread | None]) -> None:
        for part in parts:
            if part is not None:
                try:
                    part.close(timeout=2.0)
                except RuntimeError as exc:
                    log.error("%s", exc)

    # --- connection ---------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            self.session.connecting()
            self._dispatch()
            reason = ""
            delay = 0.0
            planned = False
            try:
                conn = await open_transport(self.config, self._key)
            except AuthenticationError as exc:
                reason, delay = str(exc), AUTH_RETRY_S
                log.error("%s; retrying in %.0f s", exc, delay, extra={"ERROR_CODE": "auth"})
            except TransportError as exc:
                reason, delay = str(exc), backoff.next()
                log.warning("connect failed: %s", exc)
            else:
                started = loop.time()
                self._reconnect_immediate = False
                try:
                    await self._serve(conn)
                except TransportError as exc:
                    reason = str(exc)
                    if self._reconnect_immediate:
                        log.info("reconnecting: %s", exc)
                    else:
                        log.warning("connection lost: %s", exc)
                finally:
                    # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel
                    # that comes as its awaitable finishes, and a stop would be lost.
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2.0):
                            await conn.close()
                healthy = loop.time() - started >= HEALTHY_AFTER_S
                if healthy:
                    backoff.reset()
                # A renewal, a button press or a reload reconnects at once; a failure backs off.
                planned = self._reconnect_immediate
                delay = 0.0 if planned else backoff.next()
            self._status_prefix = "" if planned else f"Reconnecting in {delay:.0f} s: {reason}"
            self.session.disconnected(reason, planned=planned)
            self._dispatch()
            # A reconnect asked for while offline (a [realtime] reload) cuts the wait short.
            if delay > 0 and not self._reconnect_requested.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._reconnect_requested.wait()
            self._reconnect_requested.clear()
            self._status_prefix = ""

    async def _serve(self, conn: Connection) -> None:
        """Run one connection until it fails or a reconnect is asked for."""
        self._drop_outgoing()  # nothing from a previous connection goes to this one
        self._reconnect_requested.clear()
        self.session.connected()
        self._dispatch()
        tasks: set[asyncio.Task[Any]] = {
            asyncio.create_task(self._reader(conn), name="reader"),
            asyncio.create_task(self._writer(conn), name="writer"),
        }
        watcher = asyncio.create_task(self._reconnect_requested.wait(), name="reconnect")
        tasks.add(watcher)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                raise TransportError(self._reconnect_reason or "reconnect requested")
            for task in done:
                task.result()
        finally:
            if self._tick_timer is not None:
                self._tick_timer.cancel()
                self._tick_timer = None
            # Tool programs still running answer a session that is gone: stop them.
            for task in tasks | self._tool_tasks:
                task.cancel()
            await asyncio.gather(*tasks, *self._tool_tasks, return_exceptions=True)
            self._drop_outgoing()

    def _schedule_tick(self) -> None:
        """The session's clock (response deadline, renewal, idle policy): a timer at its
        next deadline, so a waiting appliance's loop does not wake on a clock. A deadline
        that moves later leaves the earlier timer in place: its tick does nothing and
        schedules the next."""
        due = self.session.next_tick()
        timer = self._tick_timer
        if due is None or (timer is not None and timer.when() <= due):
            return
        if timer is not None:
            timer.cancel()
        assert self._loop is not None
        self._tick_timer = self._loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        self.session.tick(self._now())
        self._dispatch()

    async def _run_tool(self, call: CallTool) -> None:
        output = await self.toolbox.call(call.name, call.arguments)
        self.session.tool_result(call.call_id, output, self._now())
        self._dispatch()

    def _drop_outgoing(self) -> None:
        """Empty the outgoing queue, saying what was lost.

        The bound on upstream audio in flight across a drop (README "Reliability"): at most
        ``OUTGOING_FRAMES`` frames wait for a live socket, and what is still queued when the
        connection ends is dropped, not replayed: a new session has no use for half a turn.
        """
        frames = appends = 0
        while not self._outq.empty():
            event = self._outq.get_nowait()
            frames += 1
            appends += isinstance(event, AppendAudio)
        if frames:
            log.warning(
                "dropped %d frames (%d of audio) queued for the previous connection",
                frames,
                appends,
            )

    async def _reader(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        events = conn.events()
        try:  # not wait_for (see _connection_loop): a stop during set-up must end this task
            async with asyncio.timeout(self.config.realtime.open_timeout_s):
                first = await anext(events)
        except TimeoutError:
            raise TransportError("no session.created from the server") from None
        self._on_event(first, loop.time())
        async for event in events:
            self._on_event(event, loop.time())
        raise TransportError("server closed the connection")

    async def _writer(self, conn: Connection) -> None:
        while True:
            await conn.send(await self._outq.get())

    def _on_event(self, event: Incoming, now: float) -> None:
        self.session.server_event(event, now)
        self._dispatch()

    # --- user inputs (buttons, tools, reload); call on the loop thread ----------------------

    def set_talking(self, held: bool) -> None:
        """Push-to-talk button state; the capture thread, woken, takes it at once.

        A press in push-to-talk mode plays the "listening" earcon first; the front end
        starts the turn once the cue has played (``Control.EARCON_RELEASE``).
        """
        if self.frontend is None:
            return
        c = self.controls
        if held and not c.talking and not c.muted and self._gate_mode is GateMode.PUSH_TO_TALK:
            self.cue("listening")
        self._post(c.talk(held))

    def cue(self, name: str) -> bool:
        """Play earcon ``name`` (``appliance.earcons``: listening, mute, unmute, error,
        too_short, wake); False when it is silent or skipped because the agent speaks."""
        if self.player is None:
            return False
        queued = self.earcons.request(name, self._now())
        self._apply_cues()
        return queued

    def set_muted(self, muted: bool) -> None:
        """The privacy switch, kept across restarts (``Daemon.levels``)."""
        self.levels.set_muted(muted)

    def _apply_muted(self, muted: bool) -> None:
        """The mute itself: nothing captured is sent while muted."""
        self._post(self.controls.mute(muted))
        self.session.set_muted(muted)
        self._dispatch()

    def reconnect(self, reason: str = "reconnect requested", *, immediate: bool = True) -> None:
        """Drop the connection now; the connection loop opens a fresh one (``immediate``: at
        once, else after the backoff delay, as for a failure)."""
        if self._conn_task is not None and not self._conn_task.done():
            if not self._reconnect_requested.is_set():
                self._reconnect_reason = reason
                self._reconnect_immediate = immediate
            self._reconnect_requested.set()

    async def reload(self, new: Config) -> None:
        """Apply a re-read, validated config (SIGHUP); see ``appliance.reload`` for the rules.

        Earcon files are read before anything changes: one that fails rejects the reload.
        """
        plan = plan_reload(self.config, new)
        sounds = None
        if plan.earcons_changed:
            try:
                sounds = load_earcons(new.earcons)
            except ConfigError as exc:
                log.error(
                    "reload: %s; keeping the running config", exc, extra={"ERROR_CODE": "config"}
                )
                return
        old_gpio = self.config.gpio
        self.notifier.reloading()
        self._reloading = True
        try:
            self.config = new
            if sounds is not None:
                self.earcons.sounds = sounds
            self.session.reconfigure(session_settings(new), plan.session_update)
            self._dispatch()
            if plan.log_level:
                set_level(plan.log_level)
            if plan.restart_audio:
                await self._restart_audio(
                    capture=plan.restart_capture,
                    playback=plan.restart_playback,
                    frontend=plan.rebuild_frontend,
                )
            if plan.reconnect:
                self.reconnect()
            if plan.gpio_changed:
                self._reopen_gpio(old_gpio)
        finally:
            self._reloading = False
            self.notifier.ready()
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
        log.info("reloaded %s: %s", new.source, "; ".join(done) or "no changes")

    async def _restart_audio(self, *, capture: bool, playback: bool, frontend: bool) -> None:
        """Re-open only the parts of the audio path whose settings changed.

        A capture restart always comes with a new front end (its resamplers follow the
        device rate); a front end alone is swapped under the running capture thread. A user
        turn in progress dies with its front end and is cancelled; a reply playing on a
        re-opened speaker is lost, and the session is told nothing plays any more.
        """
        loop = asyncio.get_running_loop()
        # A new speaker has a new echo reference, which the front end's canceller must use.
        echo_reference = playback and self._reference is not None
        frontend = frontend or capture or echo_reference
        parts = [p for p, yes in ((self.capture, capture), (self.player, playback)) if yes]
        await asyncio.to_thread(self._close_parts, parts)  # joins threads: not on the loop
        for which, yes in (("capture", capture), ("playback", playback)):
            if yes:
                self._device_errors[which] = ""  # the new thread reports afresh
        self.session.device_error("; ".join(m for m in self._device_errors.values() if m))
        if frontend and self.session.state is State.LISTENING:
            self._on_gate(SpeechStopped(0, cancelled=True))  # the turn died with the old gate
        if playback:
            self._start_player(loop)
            self.session.playback_idle(self._now())
            self._set_playing(False)
            self._dispatch()
        if frontend:
            self._make_frontend(loop)
        if capture:
            self._start_capture(loop)

    def _reopen_gpio(self, previous: GpioSettings) -> None:
        """Close the LEDs and buttons and open them with ``[gpio]`` as reloaded.

        Pins that fail to open with the new settings (a ``ConfigError`` naming the key) are
        logged and the previous settings are opened again.
        """
        assert self._loop is not None
        if self.gpio is not None:
            self._observers = [o for o in self._observers if o != self.gpio.on_action]
            self.gpio.close()
            self.gpio = None
        self.levels.close()  # the mixer opens again with the reloaded mixer_* keys
        try:
            self.gpio = open_gpio(
                self.config.gpio, self, self._loop, levels=self.levels, cue=self.cue
            )
        except ConfigError as exc:
            log.error("reload: %s; keeping the previous [gpio]", exc, extra={"ERROR_CODE": "config"})
            self.gpio = open_gpio(previous, self, self._loop, levels=self.levels, cue=self.cue)
        if self.gpio is not None:
            self._observers = [*self._observers, self.gpio.on_action]

    def _audio_problem(self) -> str | None:
        """The watchdog's health check (None: healthy); a reload in progress is healthy."""
        if self._reloading:
            return None
        return audio_problem(
            self.capture,
            self.player,
            now=time.monotonic(),
            playing=self.session.state is State.SPEAKING,
            device_outage=self.session.state is State.ERROR,
        )

    # --- audio thread callbacks (run on the loop) -------------------------------------------

    def _on_gate(self, out: GateOutput) -> None:
        now = self._now()
        if isinstance(out, AudioChunk):
            self.session.user_audio(out.pcm)
        elif isinstance(out, SpeechStarted):
            self.session.speech_started(now)
        elif isinstance(out, SpeechStopped):
            self.session.speech_stopped(
                out.sent_ms,
                now,
                cancelled=out.cancelled,
                discarded=out.discarded,
                silence_ms=out.silence_ms,
            )
        elif isinstance(out, WakeWindow):
            self.session.wake_window(out.open, now, wake_word=out.wake_word)
            if out.wake_word:
                self._dispatch()  # the barge-in's StopPlayback first: the cue is not skipped
                self.cue("wake")
        self._dispatch()

    def _on_player(self, ev: Any) -> None:
        ev = self._cue_event(ev)  # an earcon's own events stop here
        if ev is None:
            return
        if isinstance(ev, PlaybackStarted):
            self._set_playing(True)
            self.session.playback_started(ev.item_id, self._now())
        elif isinstance(ev, PlaybackStopped):
            self._set_playing(False)
            self.session.playback_stopped(ev.item_id, ev.played_ms)
        elif isinstance(ev, PlaybackIdle):
            self._set_playing(False)
            self.session.playback_idle(self._now())
        elif isinstance(ev, PlaybackDeviceError):
            self._set_playing(False)
            self._device_error("playback", ev.message)
        elif isinstance(ev, PlaybackDeviceRestored):
            self._device_error("playback", "")
        else:
            log.warning("playback: %s", ev)
        self._dispatch()

    def _hold_gate(self, hold: bool) -> None:
        """While an earcon plays no turn may start on it (``Control.EARCON_HOLD``); the
        capture thread reads every period meanwhile, so the hold covers the audio it was
        set for."""
        self._post(self.controls.hold(hold))

    def _open_mixer(self) -> Mixer:
        g = self.config.gpio
        return Mixer(g.mixer_control, g.mixer_card, g.mixer_device)

    def _cue_event(self, ev: Any) -> Any:
        """The player event for the session, or None when it was an earcon's own."""
        if isinstance(ev, PlaybackStarted):
            route = self.earcons.started(ev.item_id)
        elif isinstance(ev, PlaybackStopped):
            route = self.earcons.stopped(ev.item_id, self._now())
            if route is Route.PASS_WITHOUT_ITEM:
                ev = PlaybackStopped(None, 0)
        elif isinstance(ev, PlaybackIdle):
            route = self.earcons.idle(self._now())
        else:
            return ev
        self._apply_cues()
        return None if route is Route.SWALLOW else ev

    def _apply_cues(self) -> None:
        """Route the cue core's actions, in order, and wait for its next deadline."""
        for action in self.earcons.take():
            if isinstance(action, Hold):
                self._hold_gate(action.on)
            elif self.player is None:
                continue
            elif isinstance(action, Enqueue):
                self.player.enqueue(action.item_id, action.pcm)
            elif isinstance(action, EndOfStream):
                self.player.end_of_stream()
        if self._cue_timer is not None:
            self._cue_timer.schedule(self.earcons.next_deadline())

    def _cue_tick(self, now: float) -> None:
        self.earcons.tick(now)
        self._apply_cues()

    def _set_playing(self, playing: bool) -> None:
        """Tell the front end the speaker plays (its echo guard)."""
        self._post(self.controls.speaker(playing))

    @property
    def _gate_mode(self) -> GateMode:
        return GateMode(self.config.gate.mode)

    def _post(self, msg: Control | None) -> None:
        """A control message to the front end (None: nothing changed), then wake the
        capture thread: asleep in a block of periods, it takes the message and asks
        ``wants`` again (the speaker started: barge-in listens every period from here)."""
        if msg is None:
            return
        if self.frontend is not None:
            self.frontend.post(msg)
        if self.capture is not None:
            self.capture.wake()

    def _on_device_error(self, err: AudioDeviceError | None) -> None:
        self._device_error("capture", str(err) if err else "")
        self._dispatch()

    def _device_error(self, which: str, message: str) -> None:
        """Each device's outage ("" when it is back); the state shows whichever are out."""
        self._device_errors[which] = message
        self.session.device_error("; ".join(m for m in self._device_errors.values() if m))

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # --- routing the session's actions --------------------------------------------------------

    def _dispatch(self) -> None:
        for action in self.session.take():
            if isinstance(action, Send):
                self._queue(action.event)
            elif isinstance(action, Play):
                self.earcons.reply_audio()
                if self.player is not None:
                    self.player.enqueue(action.item_id, action.pcm)
            elif isinstance(action, EndOfReply):
                self.earcons.reply_ended()
                if self.player is not None:
                    self.player.end_of_stream()
            elif isinstance(action, StopPlayback):
                self.earcons.reply_stopped()
                if self.player is not None:
                    self.player.stop()
            elif isinstance(action, TooShort):
                self.cue("too_short")
            elif isinstance(action, StateChanged):
                self.notifier.status(self._status_prefix or action.state.words)
                self.earcons.state_changed(action.state, self._now())
                self._apply_cues()
                self._follow_up(action.state)
            elif isinstance(action, Transcript) and self.config.logging.transcripts:
                log.info(
                    "%s: %s", action.role, action.text, extra={"TURN_ID": self.session.turn_id}
                )
            elif isinstance(action, CallTool):
                task = asyncio.create_task(self._run_tool(action), name=f"tool {action.name}")
                self._tool_tasks.add(task)
                task.add_done_callback(self._tool_tasks.discard)
            elif isinstance(action, Reconnect):
                self.reconnect(action.reason, immediate=action.immediate)
            for observer in self._observers:
                observer(action)
        self._schedule_tick()

    def _follow_up(self, state: State) -> None:
        """Wake mode: a reply just ended (speaking or thinking, then ready), so the front end
        listens without the wake word for ``[gate] follow_up_s``."""
        before, self._last_state = self._last_state, state
        if (
            state is State.READY
            and before in (State.SPEAKING, State.THINKING)
            and self._gate_mode is GateMode.WAKE
        ):
            self._post(Control.FOLLOW_UP)

    def _queue(self, event: ClientEvent) -> None:
        try:
            self._outq.put_nowait(event)
        except asyncio.QueueFull:
            self.session.dropped_chunks += 1
            if self.session.dropped_chunks % 100 == 1:
                log.warning(
                    "server is not reading; dropped %d outgoing frames", self.session.dropped_chunks
                )


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
