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
import time
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.audio.capture import CaptureThread
from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStarted, SpeechStopped
from appliance.audio.playback import PlaybackIdle, PlaybackStarted, PlaybackStopped, PlaybackThread
from appliance.audio.vad import WebRtcVad
from appliance.config import Config, GpioSettings
from appliance.core.backoff import Backoff
from appliance.core.session import (
    Action,
    EndOfReply,
    Play,
    Send,
    Session,
    StateChanged,
    StopPlayback,
    Transcript,
)
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.errors import AudioDeviceError, AuthenticationError, ConfigError, TransportError
from appliance.gpio import Gpio, open_gpio
from appliance.logs import set_level
from appliance.notify import Notifier, watchdog_interval
from appliance.reload import plan_reload
from appliance.transport.websocket import RealtimeConnection, open_connection
from appliance.watchdog import audio_problem, run_watchdog

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTGOING_FRAMES = 256  # about 10 s of 40 ms chunks; past that the socket is stuck
AUTH_RETRY_S = 60.0  # a refused key is not retried in a hot loop
HEALTHY_AFTER_S = 30.0  # a session this long resets the backoff


def _on_loop(loop: asyncio.AbstractEventLoop, handler: Callable[[T], None]) -> Callable[[T], None]:
    """Wrap ``handler`` so an audio or GPIO thread can call it: it runs on the loop."""

    def post(arg: T) -> None:
        loop.call_soon_threadsafe(handler, arg)

    return post


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
        self.session = Session(config)
        self._outq: asyncio.Queue[str] = asyncio.Queue(OUTGOING_FRAMES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.capture: CaptureThread | None = None
        self.player: PlaybackThread | None = None
        self.frontend: FrontEnd | None = None
        self.gpio: Gpio | None = None
        self._status_prefix = ""
        self._conn_task: asyncio.Task[None] | None = None
        self._reconnect_requested = asyncio.Event()
        self._reloading = False

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down within a couple of seconds."""
        loop = self._loop = asyncio.get_running_loop()
        self._start_audio(loop)
        try:
            # GPIO LEDs and buttons (appliance.gpio); None when disabled or absent.
            self.gpio = open_gpio(self.config.gpio, self, loop)
            if self.gpio is not None:
                self._observers = [*self._observers, self.gpio.on_action]
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
            self._stop_audio()
            log.info("stopped")

    def _start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        a, g = self.config.audio, self.config.gate
        self.player = PlaybackThread(
            device=a.playback_device,
            rate=a.playback_rate,
            channels=a.playback_channels,
            period_frames=a.playback_period_frames,
            prefill_ms=a.prefill_ms,
            on_event=_on_loop(loop, self._on_player),
        )
        vad = WebRtcVad(g.vad_aggressiveness, g.vad_frame_ms) if g.mode == "vad" else None
        self.frontend = FrontEnd(
            device_rate=a.capture_rate,
            gate=g,
            chunk_ms=a.chunk_ms,
            vad=vad,
            emit=_on_loop(loop, self._on_gate),
        )
        self.capture = CaptureThread(
            device=a.capture_device,
            rate=a.capture_rate,
            channels=a.capture_channels,
            channel=a.channel,
            period_frames=a.capture_period_frames,
            sink=self.frontend.process,
            on_error=_on_loop(loop, self._on_device_error),
        )
        self.player.start()
        self.capture.start()

    def _stop_audio(self) -> None:
        for part in (self.capture, self.player):
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
            try:
                conn = await open_connection(self.config.realtime, self._key)
            except AuthenticationError as exc:
                reason, delay = str(exc), AUTH_RETRY_S
                log.error("%s; retrying in %.0f s", exc, delay, extra={"ERROR_CODE": "auth"})
            except TransportError as exc:
                reason, delay = str(exc), backoff.next()
                log.warning("connect failed: %s", exc)
            else:
                started = loop.time()
                try:
                    await self._serve(conn)
                except TransportError as exc:
                    reason = str(exc)
                    log.warning("connection lost: %s", exc)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
                healthy = loop.time() - started >= HEALTHY_AFTER_S
                if healthy:
                    backoff.reset()
                delay = backoff.next()
            self._status_prefix = f"Reconnecting in {delay:.0f} s: {reason}"
            self.session.disconnected(reason)
            self._dispatch()
            await asyncio.sleep(delay)
            self._status_prefix = ""

    async def _serve(self, conn: RealtimeConnection) -> None:
        """Run one connection until it fails or a reconnect is asked for."""
        while not self._outq.empty():
            self._outq.get_nowait()  # nothing from a previous connection goes to this one
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
                raise TransportError("reconnect requested")
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reader(self, conn: RealtimeConnection) -> None:
        loop = asyncio.get_running_loop()
        frames = conn.frames()
        try:
            first = await asyncio.wait_for(anext(frames), self.config.realtime.open_timeout_s)
        except TimeoutError:
            raise TransportError("no session.created from the server") from None
        self._on_frame(first, loop.time())
        async for frame in frames:
            self._on_frame(frame, loop.time())
        raise TransportError("server closed the connection")

    async def _writer(self, conn: RealtimeConnection) -> None:
        while True:
            await conn.send(await self._outq.get())

    def _on_frame(self, frame: str | bytes, now: float) -> None:
        self.session.server_frame(frame, now)
        self._dispatch()

    # --- user inputs (buttons, tools, reload); call on the loop thread ----------------------

    def set_talking(self, held: bool) -> None:
        """Push-to-talk button state; the capture thread reads it at its next period."""
        if self.frontend is not None:
            self.frontend.talking = held

    def set_muted(self, muted: bool) -> None:
        """The privacy switch: nothing captured is sent while muted."""
        if self.frontend is not None:
            self.frontend.muted = muted
        self.session.set_muted(muted)
        self._dispatch()

    def reconnect(self) -> None:
        """Drop the connection now; the connection loop opens a fresh one."""
        if self._conn_task is not None and not self._conn_task.done():
            self._reconnect_requested.set()

    async def reload(self, new: Config) -> None:
        """Apply a re-read, validated config (SIGHUP); see ``appliance.reload`` for the rules."""
        plan = plan_reload(self.config, new)
        old_gpio = self.config.gpio
        self.notifier.reloading()
        self._reloading = True
        try:
            self.config = new
            self.session.reconfigure(new, plan.session_update)
            self._dispatch()
            if plan.log_level:
                set_level(plan.log_level)
            if plan.restart_audio:
                await self._restart_audio()
            if plan.reconnect:
                self.reconnect()
            if plan.gpio_changed:
                self._reopen_gpio(old_gpio)
        finally:
            self._reloading = False
            self.notifier.ready()
        done = [f"session {', '.join(plan.changed_fields)}"] if plan.changed_fields else []
        done += ["audio restarted"] if plan.restart_audio else []
        done += ["reconnecting"] if plan.reconnect else []
        done += [f"log level {plan.log_level}"] if plan.log_level else []
        done += ["gpio re-opened"] if plan.gpio_changed else []
        log.info("reloaded %s: %s", new.source, "; ".join(done) or "no changes")

    async def _restart_audio(self) -> None:
        """Re-open the audio devices with the new ``[audio]``/``[gate]`` settings."""
        muted = self.frontend.muted if self.frontend is not None else False
        talking = self.frontend.talking if self.frontend is not None else False
        await asyncio.to_thread(self._stop_audio)  # joins threads: not on the loop
        if self.session.state is State.LISTENING:
            self._on_gate(SpeechStopped(0, cancelled=True))  # the turn died with the old gate
        self._start_audio(asyncio.get_running_loop())
        if self.frontend is not None:
            self.frontend.muted, self.frontend.talking = muted, talking

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
        try:
            self.gpio = open_gpio(self.config.gpio, self, self._loop)
        except ConfigError as exc:
            log.error("reload: %s; keeping the previous [gpio]", exc, extra={"ERROR_CODE": "config"})
            self.gpio = open_gpio(previous, self, self._loop)
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
            self.session.speech_stopped(out.sent_ms, now, cancelled=out.cancelled)
        self._dispatch()

    def _on_player(self, ev: Any) -> None:
        if isinstance(ev, PlaybackStarted):
            self.session.playback_started(ev.item_id)
        elif isinstance(ev, PlaybackStopped):
            self.session.playback_stopped(ev.item_id, ev.played_ms)
        elif isinstance(ev, PlaybackIdle):
            self.session.playback_idle()
        else:
            log.warning("playback: %s", ev)
        self._dispatch()

    def _on_device_error(self, err: AudioDeviceError | None) -> None:
        self.session.device_error(str(err) if err else "")
        self._dispatch()

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # --- routing the session's actions --------------------------------------------------------

    def _dispatch(self) -> None:
        for action in self.session.take():
            if isinstance(action, Send):
                self._queue(action.text)
            elif isinstance(action, Play):
                if self.player is not None:
                    self.player.enqueue(action.item_id, action.pcm)
            elif isinstance(action, EndOfReply):
                if self.player is not None:
                    self.player.end_of_stream()
            elif isinstance(action, StopPlayback):
                if self.player is not None:
                    self.player.stop()
            elif isinstance(action, StateChanged):
                self.notifier.status(self._status_prefix or action.state.words)
            elif isinstance(action, Transcript) and self.config.logging.transcripts:
                log.info(
                    "%s: %s", action.role, action.text, extra={"TURN_ID": self.session.turn_id}
                )
            for observer in self._observers:
                observer(action)

    def _queue(self, text: str) -> None:
        try:
            self._outq.put_nowait(text)
        except asyncio.QueueFull:
            self.session.dropped_chunks += 1
            if self.session.dropped_chunks % 100 == 1:
                log.warning(
                    "server is not reading; dropped %d outgoing frames", self.session.dropped_chunks
                )
