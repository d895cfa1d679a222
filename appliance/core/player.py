"""The playback policy, sans I/O: the jitter buffer's phases and what was heard of each item.

Owns the rules the speaker thread follows, with stream positions, frame counts and "now" as
inputs and typed events out:

- the loop side (``Intake``): which reply audio is admitted (not late deltas of an item a
  barge-in cut off) and when an item starts in the stream; what crosses to the player
  thread are the messages ``Queued``, ``EndOfStream`` and ``Stop``;
- the player side (``Player``): the phases (``Phase``) of a jitter buffer: nothing plays
  until the prefill is queued or the reply has ended; an empty queue mid-reply is an
  underrun (wait for the prefill again), at the reply's end it drains; ``next_step()``
  tells the adapter what to do next (``Step``);
- the ledger: which item each stream position belongs to, so that device progress
  ("frames written", "frames the device still holds") becomes "started item X", "heard
  N ms of item X" and, at a barge-in, which item was cut off and how much of it was heard.

Stream positions count source samples (reply audio at ``source_rate``) since the player was
made; device frames scale to them by the rate ratio (the resampler's output is aligned with
its input). Imports only the standard library.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

UNDERRUN_LOG_S = 60.0  # after the first, at most one underrun log line this often
_MAX_ITEMS_KEPT = 256  # played-ms history kept per player
CANCELLED_KEPT = 64  # interrupted item ids remembered to ignore their late audio

# --- events (player -> owner) --------------------------------------------------------------


@dataclass(frozen=True)
class PlaybackStarted:
    """The first sample of ``item_id`` was handed to the device."""

    item_id: str


@dataclass(frozen=True)
class PlaybackStopped:
    """After ``stop()``: the item being heard (None if none) and how much of it was heard.

    Every ``stop()`` gets one; calls that arrive before the player handled the previous one
    share it.
    """

    item_id: str | None
    played_ms: int


@dataclass(frozen=True)
class PlaybackIdle:
    """Everything queued before ``end_of_stream()`` has been heard (the device drained)."""


@dataclass(frozen=True)
class PlaybackDeviceError:
    """The device failed; audio queued meanwhile is discarded until it is back."""

    message: str


@dataclass(frozen=True)
class PlaybackDeviceRestored:
    """The device reopened after a ``PlaybackDeviceError``."""


PlayerEvent = (
    PlaybackStarted | PlaybackStopped | PlaybackIdle | PlaybackDeviceError | PlaybackDeviceRestored
)

# --- messages (loop -> player thread) ------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """``item_id``'s samples start at stream position ``start`` (sent before the samples)."""

    start: int
    item_id: str


@dataclass(frozen=True)
class EndOfStream:
    """The reply ends at stream position ``pos``: play out what is queued up to it."""

    pos: int


@dataclass(frozen=True)
class Stop:
    """Barge-in: everything before stream position ``pos`` is to be dropped."""

    pos: int


Message = Queued | EndOfStream | Stop


class Admit(enum.Enum):
    """What ``Intake.admit`` says of a piece of reply audio."""

    NEW_ITEM = "new item"  # queue it, after a ``Queued`` for its item
    SAME_ITEM = "same item"  # queue it: it continues the item queued last
    CANCELLED = "cancelled"  # drop it: a late delta of an item that stop() cut off


class Intake:
    """The loop side's rules: items that start, and items a barge-in cancelled."""

    def __init__(self) -> None:
        self._last_item: str | None = None
        self._since_stop: list[str] = []
        self._cancelled: dict[str, None] = {}  # insertion-ordered set

    def admit(self, item_id: str) -> Admit:
        if item_id in self._cancelled:
            return Admit.CANCELLED
        if item_id == self._last_item:
            return Admit.SAME_ITEM
        self._last_item = item_id
        self._since_stop.append(item_id)
        del self._since_stop[:-CANCELLED_KEPT]
        return Admit.NEW_ITEM

    def stopped(self) -> None:
        """A barge-in: every item queued since the last one is cut off."""
        for item_id in self._since_stop:
            self._cancelled[item_id] = None
        while len(self._cancelled) > CANCELLED_KEPT:
            del self._cancelled[next(iter(self._cancelled))]
        self._since_stop.clear()
        self._last_item = None


# --- the player thread's side ----------------------------------------------------------------


class Phase(enum.Enum):
    IDLE = "idle"  # no run: waiting for the prefill or end_of_stream()
    PLAYING = "playing"  # writing as fast as the device takes it
    REFILL = "refill"  # underrun mid-reply: waiting for the prefill again
    DRAINING = "draining"  # the reply is all written; waiting for the device to play it out


class Step(enum.Enum):
    """What the adapter does next (``Player.next_step``)."""

    STOP = "stop"  # a stop() is due: drop the device if a run is on, then call stopped()
    WAIT = "wait"  # idle, nothing to start: sleep until audio, end_of_stream() or stop()
    START = "start"  # a run begins (reset the resampler), then WRITE
    RESUME = "resume"  # the prefill is back after an underrun, then WRITE
    REFILL = "refill"  # underrun: publish progress, sleep a period for the prefill
    WRITE = "write"  # write as fast as the device takes it; ran_dry() when the queue is empty
    DRAIN = "drain"  # all written: wait for the device to play it out, then drained()


class _Segment:
    __slots__ = ("done", "item_id", "start", "started")

    def __init__(self, start: int, item_id: str) -> None:
        self.start = start
        self.item_id = item_id
        self.started = False
        self.done = False  # its played figure is final


class Ledger:
    """Which item each stream position belongs to, and how much of each was heard."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self.played: dict[str, int] = {}  # samples heard per item

    def add(self, start: int, item_id: str) -> None:
        self._segments.append(_Segment(start, item_id))

    def start_items(self, written: int, into: list[PlayerEvent]) -> None:
        """Items whose first sample is now before stream position ``written``."""
        for seg in self._segments:
            if seg.start >= written:
                break
            if not seg.started and not seg.done:
                seg.started = True
                into.append(PlaybackStarted(seg.item_id))

    def credit(self, heard: int, final_before: int | None = None) -> None:
        """Everything before stream position ``heard`` was heard. With ``final_before``,
        items that start before it are closed: what they have now is all they get."""
        segs = self._segments
        for i, seg in enumerate(segs):
            if seg.done:
                continue
            closing = final_before is not None and seg.start < final_before
            if seg.start >= heard and not closing:
                break
            end = segs[i + 1].start if i + 1 < len(segs) else None
            upto = heard if end is None else min(heard, end)
            self.played[seg.item_id] = max(0, upto - seg.start)
            if closing or (end is not None and end <= heard):
                seg.done = True
        self._prune()

    def interrupted(self, heard: int, stop_pos: int, playing: bool) -> str | None:
        """The item a stop at ``stop_pos`` cut off: the one being heard, or else the first
        that was queued and never heard; None if nothing was."""
        current = first_unheard = None
        for seg in self._segments:
            if seg.done or seg.start >= stop_pos:
                continue
            if playing and seg.start < heard:
                current = seg.item_id
            elif first_unheard is None:
                first_unheard = seg.item_id
        return current if current is not None else first_unheard

    def _prune(self) -> None:
        segs = self._segments
        done = 0
        while done < len(segs) - 1 and segs[done].done:
            done += 1
        if done > 32:
            del segs[:done]
        while len(self.played) > _MAX_ITEMS_KEPT:
            del self.played[next(iter(self.played))]


_NO_EVENTS: tuple[PlayerEvent, ...] = ()


class Player:
    """The jitter buffer and ledger of one player thread (see the module docstring).

    ``source_rate``: samples per second of the queued audio; ``device_rate``: frames per
    second of the device; ``prefill``: source samples queued before a run starts.
    The adapter reads the queue (``fed``), writes the device (``written``), reports its
    delay (frames written but not yet heard) and collects ``events()``.
    """

    def __init__(self, *, source_rate: int, device_rate: int, prefill: int) -> None:
        self._source_rate = source_rate
        self._ratio = source_rate / device_rate  # source samples per device frame
        self._prefill = max(1, prefill)
        self._phase = Phase.IDLE
        self._ledger = Ledger()
        self._events: list[PlayerEvent] = []
        self._eos: int | None = None  # where a reply not yet reported idle ends
        self._stop: int | None = None  # a stop() not yet acted on: drop what is before it
        self._read_pos = 0  # the queue's consumer position, as the adapter reported it
        self._run_base = 0  # stream position where the current run started
        self._run_fed = 0  # source samples taken from the queue in this run
        self._run_written = 0  # device frames written in this run
        self.underruns = 0
        self._underrun_logged_t: float | None = None  # when the last underrun line went out
        self._underruns_logged = 0  # the count that line showed

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def read_pos(self) -> int:
        return self._read_pos

    @property
    def stop_pending(self) -> bool:
        return self._stop is not None

    @property
    def run_written(self) -> int:
        """Device frames written since the run started (0: the device holds nothing of it)."""
        return self._run_written

    def played_ms(self, item_id: str) -> int:
        """How much of ``item_id`` has been heard so far (to within a period)."""
        return self._ledger.played.get(item_id, 0) * 1000 // self._source_rate

    def events(self) -> Sequence[PlayerEvent]:
        """The events since the last call, oldest first (nothing allocated when none)."""
        if not self._events:
            return _NO_EVENTS
        out, self._events = self._events, []
        return out

    # --- inputs: messages ---------------------------------------------------------------------

    def receive(self, msg: Message) -> None:
        if isinstance(msg, Queued):
            self._ledger.add(msg.start, msg.item_id)
            if self._phase is not Phase.IDLE:
                self._announce()  # its samples may have gone out before we knew of it
        elif isinstance(msg, EndOfStream):
            self._eos = msg.pos
        else:
            # Stops not yet acted on merge: the later one drops everything the earlier would.
            self._stop = msg.pos if self._stop is None else max(self._stop, msg.pos)

    # --- decisions ----------------------------------------------------------------------------

    def next_step(self, write_pos: int) -> Step:
        """What to do now; ``write_pos`` is the queue's producer position."""
        if self._stop is not None:
            return Step.STOP
        phase = self._phase
        if phase is Phase.IDLE:
            self._idle_if_eos()
            if self._ready_to_start(write_pos):
                self._begin_run()
                return Step.START
            return Step.WAIT
        if phase is Phase.REFILL:
            if self._ready_to_start(write_pos) or self._at_eos():
                self._set_phase(Phase.PLAYING)
                return Step.RESUME
            return Step.REFILL
        if phase is Phase.PLAYING:
            return Step.WRITE
        return Step.DRAIN

    def ready(self, write_pos: int) -> bool:
        """Whether a WAIT or REFILL sleep can end: a run could (re)start now."""
        if self._ready_to_start(write_pos):
            return True
        return self._phase is Phase.REFILL and self._at_eos()

    def ran_dry(self, now: float) -> bool:
        """WRITE found the queue empty. True: the reply is all written (flush and pad the
        last period, then DRAIN); False: an underrun mid-reply (REFILL)."""
        if self._at_eos():
            self._set_phase(Phase.DRAINING)
            return True
        self.underruns += 1
        self._log_underrun(now)
        self._set_phase(Phase.REFILL)
        return False

    def padded(self, tail: int, period_frames: int) -> int:
        """Frames to write after a run's last ``tail`` frames, silence included, so that
        the run ends on a period boundary (a hardware device does not replay stale buffer
        contents before it notices the end)."""
        return tail + (-(self._run_written + tail) % period_frames)

    # --- inputs: progress ---------------------------------------------------------------------

    def fed(self, samples: int) -> None:
        """``samples`` were taken from the queue for the device."""
        self._read_pos += samples
        self._run_fed += samples

    def written(self, frames: int) -> None:
        """The device took ``frames`` more frames of the current run."""
        self._run_written += frames
        self._announce()

    def progress(self, delay: int) -> None:
        """The device still holds ``delay`` frames of the run: the rest has been heard."""
        self._ledger.credit(self._heard_pos(delay))

    def drained(self) -> None:
        """DRAIN: the device played everything out; the reply is over."""
        self._ledger.credit(self._heard_pos(0))
        self._end_run()
        self._set_phase(Phase.IDLE)
        self._eos = None
        self._events.append(PlaybackIdle())

    def stopped(self, delay: int | None, write_pos: int) -> int:
        """STOP done: the device was dropped holding ``delay`` frames of the run (None: no
        run was on, or no device). Returns the stream position the queue must skip to."""
        stop_pos = self._stop
        assert stop_pos is not None
        self._stop = None
        playing = delay is not None and self._phase is not Phase.IDLE
        heard = self._heard_pos(delay) if playing and delay is not None else self._run_base
        item_id = self._ledger.interrupted(heard, stop_pos, playing)
        self._ledger.credit(heard, final_before=stop_pos)
        self._read_pos = min(max(stop_pos, self._read_pos), write_pos)
        self._end_run()
        self._set_phase(Phase.IDLE)
        if self._eos is not None and self._eos <= stop_pos:
            self._eos = None  # that reply is over: no PlaybackIdle for it
        played = self.played_ms(item_id) if item_id is not None else 0
        self._events.append(PlaybackStopped(item_id, played))
        return self._read_pos

    def device_opened(self) -> None:
        self._end_run()
        self._set_phase(Phase.IDLE)

    def device_lost(self, delay: int) -> None:
        """The device failed holding up to ``delay`` frames: those are lost, not heard."""
        self._ledger.credit(self._heard_pos(delay), final_before=self._read_pos)
        self._end_run()
        self._set_phase(Phase.IDLE)

    def discard_to(self, pos: int) -> int:
        """No device: what is queued before ``pos`` can never be heard. Returns the stream
        position the queue must skip to."""
        if pos > self._read_pos:
            self._read_pos = pos
            self._ledger.credit(self._run_base, final_before=pos)
            self._end_run()
        self._idle_if_eos()
        return self._read_pos

    # --- internals ----------------------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self._phase:
            log.debug("player: %s -> %s", self._phase.value, phase.value)
            self._phase = phase

    def _ready_to_start(self, write_pos: int) -> bool:
        if write_pos - self._read_pos >= self._prefill:
            return True
        return self._eos is not None and self._eos > self._read_pos

    def _at_eos(self) -> bool:
        """All of the reply that end_of_stream() closed has left the queue."""
        return self._eos is not None and self._eos <= self._read_pos

    def _idle_if_eos(self) -> None:
        """A reply ended with nothing (left) to play: report idle straight away."""
        if self._at_eos():
            self._eos = None
            self._events.append(PlaybackIdle())

    def _begin_run(self) -> None:
        self._end_run()
        self._set_phase(Phase.PLAYING)

    def _end_run(self) -> None:
        self._run_base = self._read_pos
        self._run_fed = self._run_written = 0

    def _heard_pos(self, delay: int) -> int:
        """Stream position heard up to, when the device still holds ``delay`` frames."""
        heard = int((self._run_written - max(0, delay)) * self._ratio)
        return self._run_base + max(0, min(self._run_fed, heard))

    def _announce(self) -> None:
        written = self._run_base + min(self._run_fed, int(self._run_written * self._ratio))
        self._ledger.start_items(written, self._events)

    def _log_underrun(self, now: float) -> None:
        """Log the first underrun, then at most one line a minute with the count (a device
        without a clock underruns on every period)."""
        last = self._underrun_logged_t
        if last is not None and now - last < UNDERRUN_LOG_S:
            return
        since = self.underruns - self._underruns_logged
        self._underrun_logged_t, self._underruns_logged = now, self.underruns
        if last is None:
            log.info("playback underrun (%d so far)", self.underruns)
        else:
            log.info(
                "playback underrun (%d so far, %d in the last %.0f s)",
                self.underruns,
                since,
                now - last,
            )
