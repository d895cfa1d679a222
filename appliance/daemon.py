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
from collections.abc import Callable
from typing import Any

from appliance.audio.capture import CaptureThread
from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStarted, SpeechStopped
from appliance.audio.playback import PlaybackIdle, PlaybackStarted, PlaybackStopped, PlaybackThread
from appliance.audio.vad import WebRtcVad
from appliance.config import Config
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
from appliance.credentials import ApiKey
from appliance.errors import AudioDeviceError, AuthenticationError, TransportError
from appliance.notify import Notifier
from appliance.transport.websocket import RealtimeConnection, open_connection

log = logging.getLogger(__name__)

OUTGOING_FRAMES = 256  # about 10 s of 40 ms chunks; past that the socket is stuck
AUTH_RETRY_S = 60.0  # a refused key is not retried in a hot loop
HEALTHY_AFTER_S = 30.0  # a session this long resets the backoff


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
        self._status_prefix = ""

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down within a couple of seconds."""
        loop = self._loop = asyncio.get_running_loop()
        self._start_audio(loop)
        try:
            async with asyncio.TaskGroup() as tg:
                conn_task = tg.create_task(self._connection_loop(), name="connection")
                self.notifier.ready()
                await stop.wait()
                self.notifier.stopping()
                conn_task.cancel()
        finally:
            self._stop_audio()
            log.info("stopped")

    def _start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        a, g = self.config.audio, self.config.gate
        post = loop.call_soon_threadsafe
        self.player = PlaybackThread(
            device=a.playback_device,
            rate=a.playback_rate,
            channels=a.playback_channels,
            period_frames=a.playback_period_frames,
            prefill_ms=a.prefill_ms,
            on_event=lambda ev: post(self._on_player, ev),
        )
        vad = WebRtcVad(g.vad_aggressiveness, g.vad_frame_ms) if g.mode == "vad" else None
        self.frontend = FrontEnd(
            device_rate=a.capture_rate,
            gate=g,
            chunk_ms=a.chunk_ms,
            vad=vad,
            emit=lambda out: post(self._on_gate, out),
        )
        self.capture = CaptureThread(
            device=a.capture_device,
            rate=a.capture_rate,
            channels=a.capture_channels,
            channel=a.channel,
            period_frames=a.capture_period_frames,
            sink=self.frontend.process,
            on_error=lambda err: post(self._on_device_error, err),
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
        loop = asyncio.get_running_loop()
        while not self._outq.empty():
            self._outq.get_nowait()  # nothing from a previous connection goes to this one
        self.session.connected()
        self._dispatch()
        writer = asyncio.create_task(self._writer(conn), name="writer")
        try:
            frames = conn.frames()
            first = await asyncio.wait_for(anext(frames), self.config.realtime.open_timeout_s)
            self._on_frame(first, loop.time())
            async for frame in frames:
                self._on_frame(frame, loop.time())
                if writer.done():
                    writer.result()
        except TimeoutError:
            raise TransportError("no session.created from the server") from None
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _writer(self, conn: RealtimeConnection) -> None:
        while True:
            await conn.send(await self._outq.get())

    def _on_frame(self, frame: str | bytes, now: float) -> None:
        self.session.server_frame(frame, now)
        self._dispatch()

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
