"""The audio path's adapters: the capture thread, the front end it feeds, the playback thread.

Owns building them from ``[audio]``/``[gate]``, swapping the front end under a running
capture thread, closing them (joins with a timeout) and the control messages the loop posts
to the capture side (``ControlState``). Audio threads reach the loop only through
``call_soon_threadsafe``: the capture side's gate outputs are batched per sink call
(``_Handoff``), the player's events posted one by one. It decides nothing about the session:
the handlers it is given (``appliance.app.router``) do.

Imports: the standard library, numpy, ``appliance.audio``, ``appliance.config``,
``appliance.core.listen``, ``appliance.errors``.
"""

from __future__ import annotations

import asyncio
import logging
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
from appliance.audio.frontend import FrontEnd, GateOutput
from appliance.audio.playback import PlaybackThread
from appliance.audio.vad import WebRtcVad
from appliance.config import Config, listen_settings, upstream_chunk_ms
from appliance.core.control_state import ControlState
from appliance.core.listen import Control, Detector, GateMode
from appliance.errors import AudioDeviceError, ConfigError

if TYPE_CHECKING:
    from appliance.audio.wake import WakeWordDetector  # imported when wake mode is used

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOSE_TIMEOUT_S = 2.0
"""How long an audio thread has to stop before its ``close`` raises."""


def on_loop(loop: asyncio.AbstractEventLoop, handler: Callable[[T], None]) -> Callable[[T], None]:
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


class AudioPath:
    """The capture thread, the current front end and the playback thread.

    ``config`` is read at each (re)build, so a reload that replaced it is followed. The
    handlers run on the loop: ``on_gate`` for the current front end's outputs (an older one's
    are dropped), ``on_player`` for the player's events, ``on_device_error`` for the capture
    thread's device outages, ``on_voice_barge_in`` when the current front end's echo canceller
    turns voice barge-in off (False) or back on (True; also when a new front end replaces
    one, since its canceller starts afresh).
    """

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        on_gate: Callable[[GateOutput], None],
        on_player: Callable[[Any], None],
        on_device_error: Callable[[AudioDeviceError | None], None],
        on_voice_barge_in: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self._config = config
        self._on_gate = on_gate
        self._on_voice_barge_in = on_voice_barge_in
        self._on_player = on_player
        self._on_device_error = on_device_error
        self.capture: CaptureThread | None = None
        self.player: PlaybackThread | None = None
        self.frontend: FrontEnd | None = None
        # What the loop told the capture side (each change is posted to the front end).
        self.controls = ControlState()
        self._handoff: _Handoff | None = None
        self._reference: ReferenceTap | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.gate_mode is GateMode.WAKE:  # a bad gate.wake_word is a config error before any audio
            wake = self._make_wake(rebuilding=False)
            if wake is not None:
                wake.close()

    @property
    def gate_mode(self) -> GateMode:
        return GateMode(self._config().gate.mode)

    @property
    def echo_reference(self) -> bool:
        """The player feeds the front end's echo canceller a reference."""
        return self._reference is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.start_player()
        self.make_frontend()
        self.start_capture()

    def start_player(self) -> None:
        assert self._loop is not None
        a = self._config().audio
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
            on_event=on_loop(self._loop, self._on_player),
            reference=self._reference,
        )
        self.player.start()

    def make_frontend(self) -> None:
        """A new front end; the capture thread feeds whichever is current (``_to_frontend``).

        What an older front end still emits after it was replaced is dropped, so a reload
        that rebuilds it mid-turn cannot leak the dead turn's audio into the session.
        """
        assert self._loop is not None
        config = self._config()
        a, g = config.audio, config.gate
        settings = listen_settings(g)
        old = self.frontend
        vad = None  # the micro detector is the front end's own
        if settings.uses_detector and settings.detector is Detector.WEBRTC:
            vad = WebRtcVad(g.vad_aggressiveness, g.vad_frame_ms)
        made: list[FrontEnd] = []
        if self._handoff is None:
            self._handoff = _Handoff(self._loop)
        handoff = self._handoff

        def on_gate(out: GateOutput) -> None:
            if made and made[0] is self.frontend:
                self._on_gate(out)

        def on_voice_barge_in(ok: bool) -> None:
            if made and made[0] is self.frontend:
                self._on_voice_barge_in(ok)

        frontend = FrontEnd(
            device_rate=a.capture_rate,
            settings=settings,
            chunk_ms=upstream_chunk_ms(config),
            vad=vad,
            emit=lambda out: handoff.call(on_gate, out),
            clock=time.monotonic,
            canceller=self._load_canceller(lambda ok: handoff.call(on_voice_barge_in, ok)),
            wake=self._make_wake(rebuilding=old is not None),
        )
        made.append(frontend)
        if old is not None:
            self._on_voice_barge_in(True)  # the new canceller has judged no reply yet
        for msg in self.controls.replay():  # the loop's view of the world carries over
            frontend.post(msg)
        self.frontend = frontend

    def _make_wake(self, *, rebuilding: bool) -> WakeWordDetector | None:
        """The wake-word detector of ``[gate] mode = "wake"`` (None in other modes).

        A bad ``gate.wake_word`` stops the start with its config error; on a reload it is
        logged and the device runs without a detector, so it sends nothing, until fixed.
        """
        g = self._config().gate
        if self.gate_mode is not GateMode.WAKE:
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

    def _load_canceller(self, on_voice_barge_in: Callable[[bool], None]) -> EchoCanceller | None:
        """The ``[audio.processing]`` module, or None (off, or not installed: warned once).
        ``on_voice_barge_in`` runs on the capture thread: it hands the change to the loop."""
        try:
            return load_canceller(
                self._config().audio.processing,
                self._reference,
                on_voice_barge_in=on_voice_barge_in,
            )
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

    def start_capture(self) -> None:
        assert self._loop is not None
        a = self._config().audio
        self.capture = CaptureThread(
            device=a.capture_device,
            rate=a.capture_rate,
            channels=a.capture_channels,
            channel=a.channel,
            period_frames=a.capture_period_frames,
            sink=self._to_frontend,
            on_error=on_loop(self._loop, self._on_device_error),
            wants=self._frontend_wants,
        )
        self.capture.start()

    def stop(self) -> None:
        close_parts([self.capture, self.player])

    # --- the loop's messages to the capture side ------------------------------------------

    def post(self, msg: Control | None, at: float | None = None) -> None:
        """A control message to the front end (None: nothing changed), for the audio
        captured from ``at`` on (``FrontEnd.post``), then wake the capture thread: asleep
        in a block of periods, it takes the message and asks ``wants`` again (the speaker
        started: barge-in listens every period from here)."""
        if msg is None:
            return
        if self.frontend is not None:
            self.frontend.post(msg, at)
        if self.capture is not None:
            self.capture.wake()

    def set_playing(self, playing: bool) -> None:
        """Tell the front end the speaker plays (its echo guard)."""
        self.post(self.controls.speaker(playing))

    def hold_gate(self, hold: bool, at: float | None = None) -> None:
        """While an earcon plays no turn may start on it (``Control.EARCON_HOLD``); the
        capture thread reads every period meanwhile, and a release holds for the audio
        captured before ``at`` (``cues.Hold``), so the hold covers the audio it was set
        for."""
        self.post(self.controls.hold(hold), at)


def close_parts(parts: list[CaptureThread | PlaybackThread | None]) -> None:
    """Stop and join audio threads (blocking: off the loop when the loop must keep going)."""
    for part in parts:
        if part is not None:
            try:
                part.close(timeout=CLOSE_TIMEOUT_S)
            except RuntimeError as exc:
                log.error("%s", exc)
