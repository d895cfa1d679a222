"""The action router: the pure cores' actions to the adapters, and their inputs back.

Owns ``dispatch`` (the session's actions, in order, to the player, the cues, the outgoing
queue, the tool runner, the notifier and the observers), the cue core's actions
(``appliance.core.cues``), the two deadline timers (the session's clock and the cues', both
``appliance.deadline.DeadlineTimer``) and the translation of the audio path's events
(gate outputs, player events, device outages) into session inputs. Everything here runs on
the loop thread.

Imports: the standard library, ``appliance.core``, ``appliance.audio`` (event types),
``appliance.deadline``, ``appliance.notify``, ``appliance.app.audio``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from appliance.app.audio import AudioPath
from appliance.audio.frontend import (
    AudioChunk,
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
)
from appliance.config import Config
from appliance.core.cues import Cues, EndOfStream, Enqueue, Hold, Route
from appliance.core.listen import Control, GateMode
from appliance.core.protocol import ClientEvent
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
from appliance.deadline import DeadlineTimer
from appliance.errors import AudioDeviceError
from appliance.notify import Notifier

log = logging.getLogger(__name__)


class AfterDispatch(Protocol):
    """A part that acts once the session's actions are routed (announcements)."""

    def step(self) -> bool:
        """True when it gave the session more to dispatch."""
        ...

    def allows_follow_up(self, state: State) -> bool: ...


class Router:
    """Routes the session's and the cues' actions; ``start`` before the first input.

    ``send`` queues a client event for the connection, ``call_tool`` starts a tool run
    (owned by the connection), ``reconnect(reason, immediate)`` asks for a new connection.
    ``observers`` is kept by reference: adding to it later (GPIO) takes effect at once.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        session: Session,
        audio: AudioPath,
        earcons: Cues,
        notifier: Notifier,
        *,
        send: Callable[[ClientEvent], None],
        call_tool: Callable[[CallTool], None],
        reconnect: Callable[[str, bool], None],
        observers: list[Callable[[Action], None]],
    ) -> None:
        self._config = config
        self.session = session
        self._audio = audio
        self.earcons = earcons
        self._notifier = notifier
        self._send = send
        self._call_tool = call_tool
        self._reconnect = reconnect
        self.observers = observers
        self.status_prefix = ""
        """Shown instead of the state's words while set (the supervisor's "Reconnecting in")."""
        self.status_suffix: Callable[[], str] = lambda: ""
        """Appended after "; " when not empty (the next timer due, a ring: ``appliance.alarms``)."""
        self._status_words = ""
        self._device_errors: dict[str, str] = {"capture": "", "playback": ""}
        self._last_state = State.STARTING  # for the wake mode's follow-up window
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: DeadlineTimer | None = None
        self._cue_timer: DeadlineTimer | None = None
        self.after: AfterDispatch | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # The session's deadlines (response, renewal, idle) and the cues' (the gate's
        # release, the "error" cue), each on one loop timer: a waiting appliance sleeps.
        self._clock = DeadlineTimer(loop, self._tick)
        self._cue_timer = DeadlineTimer(loop, self._cue_tick)

    def stop_clock(self) -> None:
        """The session's clock stops with its connection (``dispatch`` starts it again)."""
        if self._clock is not None:
            self._clock.cancel()

    def close(self) -> None:
        for timer in (self._clock, self._cue_timer):
            if timer is not None:
                timer.cancel()

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # --- the session's actions ----------------------------------------------------------------

    def dispatch(self) -> None:
        for action in self.session.take():
            if isinstance(action, Send):
                self._send(action.event)
            elif isinstance(action, Play):
                self.earcons.reply_audio()
                if self._audio.player is not None:
                    self._audio.player.enqueue(action.item_id, action.pcm)
            elif isinstance(action, EndOfReply):
                self.earcons.reply_ended()
                if self._audio.player is not None:
                    self._audio.player.end_of_stream()
            elif isinstance(action, StopPlayback):
                self.earcons.reply_stopped()
                if self._audio.player is not None:
                    self._audio.player.stop()
            elif isinstance(action, TooShort):
                self.cue("too_short")
            elif isinstance(action, StateChanged):
                self.show_status(self.status_prefix or action.state.words)
                self.earcons.state_changed(action.state, self.now())
                self.apply_cues()
                self._follow_up(action.state)
            elif isinstance(action, Transcript) and self._config().logging.transcripts:
                log.info(
                    "%s: %s", action.role, action.text, extra={"TURN_ID": self.session.turn_id}
                )
            elif isinstance(action, CallTool):
                self._call_tool(action)
            elif isinstance(action, Reconnect):
                self._reconnect(action.reason, action.immediate)
            for observer in self.observers:
                observer(action)
        if self.after is not None and self.after.step():
            self.dispatch()  # what it asked of the session
            return
        if self._clock is not None:
            self._clock.schedule(self.session.next_tick())

    def _tick(self, now: float) -> None:
        self.session.tick(now)
        self.dispatch()

    def show_status(self, words: str = "") -> None:
        """STATUS=: ``words`` (or the last ones), then ``status_suffix`` if any."""
        words = self._status_words = words or self._status_words
        if words:
            suffix = self.status_suffix()
            self._notifier.status(f"{words}; {suffix}" if suffix else words)

    def _follow_up(self, state: State) -> None:
        """Wake mode: a reply just ended (speaking or thinking, then ready), so the front end
        listens without the wake word for ``[gate] follow_up_s``."""
        before, self._last_state = self._last_state, state
        if self.after is not None and not self.after.allows_follow_up(state):
            return
        if (
            state is State.READY
            and before in (State.SPEAKING, State.THINKING)
            and self._audio.gate_mode is GateMode.WAKE
        ):
            self._audio.post(Control.FOLLOW_UP)

    # --- cues ---------------------------------------------------------------------------------

    def cue(self, name: str) -> bool:
        """Play earcon ``name``; False when it is silent or skipped because the agent speaks."""
        if self._audio.player is None:
            return False
        queued = self.earcons.request(name, self.now())
        self.apply_cues()
        return queued

    def apply_cues(self) -> None:
        """Route the cue core's actions, in order, and wait for its next deadline."""
        player = self._audio.player
        for action in self.earcons.take():
            if isinstance(action, Hold):
                self._audio.hold_gate(action.on, action.at)
            elif player is None:
                continue
            elif isinstance(action, Enqueue):
                player.enqueue(action.item_id, action.pcm)
            elif isinstance(action, EndOfStream):
                player.end_of_stream()
        if self._cue_timer is not None:
            self._cue_timer.schedule(self.earcons.next_deadline())

    def _cue_tick(self, now: float) -> None:
        self.earcons.tick(now)
        self.apply_cues()

    def _cue_event(self, ev: Any) -> Any:
        """The player event for the session, or None when it was an earcon's own."""
        if isinstance(ev, PlaybackStarted):
            route = self.earcons.started(ev.item_id)
        elif isinstance(ev, PlaybackStopped):
            route = self.earcons.stopped(ev.item_id, self.now())
            if route is Route.PASS_WITHOUT_ITEM:
                ev = PlaybackStopped(None, 0)
        elif isinstance(ev, PlaybackIdle):
            route = self.earcons.idle(self.now())
        else:
            return ev
        self.apply_cues()
        return None if route is Route.SWALLOW else ev

    # --- the audio path's events (on the loop) ---------------------------------------------

    def on_gate(self, out: GateOutput) -> None:
        now = self.now()
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
                self.dispatch()  # the barge-in's StopPlayback first: the cue is not skipped
                self.cue("wake")
        self.dispatch()

    def on_player(self, ev: Any) -> None:
        ev = self._cue_event(ev)  # an earcon's own events stop here
        if ev is None:
            return
        if isinstance(ev, PlaybackStarted):
            self._audio.set_playing(True)
            self.session.playback_started(ev.item_id, self.now())
        elif isinstance(ev, PlaybackStopped):
            self._audio.set_playing(False)
            self.session.playback_stopped(ev.item_id, ev.played_ms)
        elif isinstance(ev, PlaybackIdle):
            self._audio.set_playing(False)
            self.session.playback_idle(self.now())
        elif isinstance(ev, PlaybackDeviceError):
            self._audio.set_playing(False)
            self.device_error("playback", ev.message)
        elif isinstance(ev, PlaybackDeviceRestored):
            self.device_error("playback", "")
        else:
            log.warning("playback: %s", ev)
        self.dispatch()

    def on_device_error(self, err: AudioDeviceError | None) -> None:
        self.device_error("capture", str(err) if err else "")
        self.dispatch()

    def device_error(self, which: str, message: str) -> None:
        """Each device's outage ("" when it is back); the state shows whichever are out."""
        self._device_errors[which] = message
        self.session.device_error("; ".join(m for m in self._device_errors.values() if m))

    def devices_reopened(self, *which: str) -> None:
        """Devices re-opened by a reload: each new thread reports afresh."""
        for name in which:
            self._device_errors[name] = ""
        self.session.device_error("; ".join(m for m in self._device_errors.values() if m))
