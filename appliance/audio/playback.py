"""The speaker thread: a jitter buffer for reply audio, ALSA playback, and what was heard.

Owns one playback PCM for the life of the daemon and the queue in front of it. The asyncio
loop is the only producer (``enqueue``, ``end_of_stream``, ``stop``; none of them blocks);
the player thread is the only consumer. Between them sit a lock-free ``SampleRing`` of
24 kHz mono PCM16, a few ints and tuples written by one side and read by the other, and
deques (whose append/popleft are atomic). No lock is shared with the loop.

The player thread converts each period to the device rate (soxr) and channel count
(duplicated mono) and writes it non-blocking, sleeping in ``poll()`` on the PCM's
descriptors plus a wake-up eventfd, so a barge-in ``stop()`` is acted on within a
millisecond or two: ``drop()``, discard the queue, report what was heard. While nothing
plays it sleeps on the eventfd alone (one heartbeat wake-up a second).

What was heard: the device has been given ``written`` frames and still holds
``buffer_size - avail()`` of them, so the listener has heard the difference. Mapped back to
stream positions (soxr's output is aligned with its input, so frames scale by the rate
ratio) and split over the items by where each one started in the stream.

Events (``PlayerEvent``) go to ``on_event`` on the player thread.

Echo cancellation: with a ``reference`` (``appliance.audio.aec.ReferenceTap``), every write
is handed to it with the device delay, and every ``drop()`` tells it the rest is not heard.

Imports: numpy, soxr, ``appliance.audio.alsa``, ``appliance.audio.ring``, ``appliance.errors``.
"""

from __future__ import annotations

import enum
import logging
import math
import select
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import soxr

from appliance.audio.alsa import (
    STATE_RUNNING,
    AlsaError,
    AudioThread,
    Pcm,
    PcmParams,
    close_quietly,
    reopen_delays,
)
from appliance.audio.ring import SampleRing
from appliance.errors import AudioDeviceError

if TYPE_CHECKING:
    from appliance.audio.aec import ReferenceTap

log = logging.getLogger(__name__)

# --- events -----------------------------------------------------------------------------


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

# --- internals ---------------------------------------------------------------------------

_IDLE_SLEEP_S = 10.0  # the longest the thread sleeps while idle (whatever needs it wakes it)
UNDERRUN_LOG_S = 60.0  # after the first, at most one underrun log line this often
_HEALTHY_S = 1.0  # audio played without trouble before the reopen backoff starts over
_MAX_ITEMS_KEPT = 256  # played-ms history kept for the loop
_CANCELLED_KEPT = 64  # interrupted item ids remembered to ignore their late audio


class _Stop(BaseException):
    """Raised inside the thread when close() asked it to end (not an Exception, so that
    the catch-all that keeps the thread alive never swallows it)."""


class _Phase(enum.Enum):
    IDLE = "idle"  # no run: waiting for the prefill or end_of_stream()
    PLAYING = "playing"  # writing as fast as the device takes it
    REFILL = "refill"  # underrun mid-reply: waiting for the prefill again
    DRAINING = "draining"  # the reply is all written; waiting for the device to play it out


class _Pump(enum.Enum):
    FULL = "full"  # the device took all it could
    EMPTY = "empty"  # nothing left to write
    INTERRUPTED = "interrupted"  # a stop() is waiting to be handled


class _Segment:
    __slots__ = ("done", "item_id", "start", "started")

    def __init__(self, start: int, item_id: str) -> None:
        self.start = start
        self.item_id = item_id
        self.started = False
        self.done = False  # its played figure is final


class _Ledger:
    """Which item each stream position belongs to, and how much of each was heard.

    Pure bookkeeping in stream positions (source samples since the player was made). Used on
    the player thread only; ``played`` is also read by the loop (single dict lookups).
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self.played: dict[str, int] = {}  # samples heard per item

    def add(self, start: int, item_id: str) -> None:
        self._segments.append(_Segment(start, item_id))

    def newly_started(self, written: int) -> list[str]:
        """Items whose first sample is now before stream position ``written``."""
        started = []
        for seg in self._segments:
            if seg.start >= written:
                break
            if not seg.started and not seg.done:
                seg.started = True
                started.append(seg.item_id)
        return started

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


class PlaybackThread(AudioThread):
    """Plays queued mono PCM16 replies on one ALSA device; see the module docstring."""

    kind = "playback"

    def __init__(
        self,
        *,
        device: str,
        rate: int,
        channels: int,
        period_frames: int,
        source_rate: int = 24000,
        prefill_ms: int = 60,
        capacity_s: float = 120.0,
        on_event: Callable[[PlayerEvent], None],
        periods: int = 4,
        stall_timeout: float = 2.0,
        reference: ReferenceTap | None = None,
    ) -> None:
        super().__init__(device)
        self._rate = rate
        self._channels = channels
        self._period_frames = period_frames
        self._periods = periods
        self._source_rate = source_rate
        self._prefill = max(1, source_rate * prefill_ms // 1000)
        self._stall_timeout = stall_timeout
        self._on_event = on_event
        # Echo cancellation's reference: every frame written, with when it will be heard.
        self._tap = reference
        self._buffer_frames = 0
        self._ring = SampleRing(max(1, int(capacity_s * source_rate)))
        self._ratio = source_rate / rate  # source samples per device frame
        self._chunk = max(1, math.ceil(period_frames * self._ratio))
        self._src: npt.NDArray[np.int16] = np.zeros(self._chunk, dtype=np.int16)
        self._out: npt.NDArray[np.int16] = np.zeros(
            (2 * period_frames + 4096, channels), dtype=np.int16
        )

        # Loop side (written only by the loop thread).
        self._last_item: str | None = None
        self._since_stop: deque[str] = deque(maxlen=_CANCELLED_KEPT)
        self._cancelled: dict[str, None] = {}  # insertion-ordered set
        self._segments_in: deque[tuple[int, str]] = deque()
        self._stops_in: deque[int] = deque()
        self._eos: tuple[int, int] = (0, -1)  # (generation, stream position)
        self._overflow_logged = 0

        # Player side, read by the loop.
        self._want_wake = False  # the player sleeps until enqueue() brings more audio
        self._ledger = _Ledger()
        self._underruns = 0

        # Player side only.
        self._underrun_logged_t: float | None = None  # when the last underrun line went out
        self._underruns_logged = 0  # the count that line showed
        self._eos_done = 0  # generation of the last end_of_stream() handled
        self._outage = False
        self._phase = _Phase.IDLE
        self._resampler: soxr.ResampleStream | None = None
        self._pend_off = 0  # device frames staged in _out and not yet written: [off, len)
        self._pend_len = 0
        self._run_base = 0  # stream position where the current run started
        self._run_fed = 0  # source samples taken from the ring in this run
        self._run_written = 0  # device frames written in this run
        self._progress_t = 0.0  # when the device last took or played something
        self._last_avail = -1
        self._played_s = 0.0  # audio the current device has taken since it was opened

    # --- loop side: never blocks ------------------------------------------------------------

    def enqueue(self, item_id: str, pcm: bytes) -> None:
        """Queue PCM16 mono at ``source_rate`` for ``item_id``.

        Audio for an item that ``stop()`` interrupted is ignored: it is a late delta of a
        reply the listener already cut off.
        """
        if item_id in self._cancelled or len(pcm) < 2:
            return
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
        if item_id != self._last_item:
            self._last_item = item_id
            self._since_stop.append(item_id)
            # Published before the samples, so the player always knows whose they are.
            self._segments_in.append((self._ring.write_pos, item_id))
        written = self._ring.write(samples)
        if written < len(samples):
            self._overflow_logged += 1
            if self._overflow_logged % 100 == 1:
                log.warning(
                    "playback queue full (%.0f s); dropped %d samples so far",
                    self._ring.capacity / self._source_rate,
                    self._ring.overflow,
                )
        if self._want_wake:
            self._waker.wake()

    def end_of_stream(self) -> None:
        """The reply is complete: play out what is queued even if below the prefill."""
        self._eos = (self._eos[0] + 1, self._ring.write_pos)
        self._waker.wake()

    def stop(self) -> None:
        """Barge-in: drop everything queued so far and stop the device now."""
        self._stops_in.append(self._ring.write_pos)
        for item_id in self._since_stop:
            self._cancelled[item_id] = None
        while len(self._cancelled) > _CANCELLED_KEPT:
            del self._cancelled[next(iter(self._cancelled))]
        self._since_stop.clear()
        self._last_item = None
        self._waker.wake()

    def played_ms(self, item_id: str) -> int:
        """How much of ``item_id`` the listener has heard (to within a period)."""
        return self._ledger.played.get(item_id, 0) * 1000 // self._source_rate

    # --- control ------------------------------------------------------------------------------

    @property
    def underruns(self) -> int:
        """Times the queue ran dry while a reply was still streaming."""
        return self._underruns

    @property
    def queued_ms(self) -> int:
        """Audio waiting in the queue (not yet handed to the device)."""
        return self._ring.available() * 1000 // self._source_rate

    # --- the thread: device lifetime ----------------------------------------------------------

    def _run(self) -> None:
        delays = reopen_delays()
        try:
            while True:
                self._check_closing()
                try:
                    pcm, params = self._open(
                        "playback",
                        rate=self._rate,
                        channels=self._channels,
                        period_frames=self._period_frames,
                        periods=self._periods,
                    )
                except AudioDeviceError as err:
                    self._report_outage(err)
                    self._wait_out(next(delays))
                    continue
                if self._outage:
                    self._outage = False
                    log.warning("playback %r is back", self._device)
                    self._emit(PlaybackDeviceRestored())
                self._played_s = 0.0
                self._buffer_frames = params.buffer_frames
                try:
                    self._serve(pcm, params)
                except AudioDeviceError as err:
                    self._end_run()
                    self._phase = _Phase.IDLE
                    self._report_outage(err)
                except Exception as exc:
                    # A bug must not silence the speaker for good: log it, then retry.
                    log.exception("playback %r failed unexpectedly", self._device)
                    self._end_run()
                    self._phase = _Phase.IDLE
                    self._report_outage(AudioDeviceError(self._device, f"internal error: {exc}"))
                finally:
                    close_quietly(pcm)
                    if self._tap is not None:
                        self._tap.stopped(time.monotonic())
                if self._played_s >= _HEALTHY_S:
                    delays = reopen_delays()
                self._wait_out(next(delays))
        except _Stop:
            pass

    def _report_outage(self, err: AudioDeviceError) -> None:
        if self._outage:
            log.debug("%s; still retrying", err)
            return
        self._outage = True
        log.warning("%s; retrying", err)
        self._emit(PlaybackDeviceError(str(err)))

    def _wait_out(self, seconds: float) -> None:
        """Sit out a reopen delay, discarding audio (no device to play it) as it arrives."""
        deadline = time.monotonic() + seconds
        poller = select.poll()
        poller.register(self._waker.fileno(), select.POLLIN)
        while True:
            self._check_closing()
            self._heartbeat = time.monotonic()
            if self._stops_in:
                self._handle_stop(None, None)
            # Position first, then segments: every item starting before it is then known.
            pos = self._ring.write_pos
            self._pull_segments()
            self._discard_to(pos)
            self._idle_if_eos()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._want_wake = True
            try:
                if poller.poll(max(1, round(left * 1000))):
                    self._waker.reset()
            finally:
                self._want_wake = False

    # --- the thread: one open device --------------------------------------------------------

    def _serve(self, pcm: Pcm, params: PcmParams) -> None:
        """Play until close() (raises _Stop) or a device failure (raises AudioDeviceError)."""
        waker_fd = self._waker.fileno()
        waker_poll = select.poll()
        waker_poll.register(waker_fd, select.POLLIN)
        device_poll = select.poll()
        device_poll.register(waker_fd, select.POLLIN)
        try:
            for fd, events in pcm.polldescriptors():
                device_poll.register(fd, events)
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"no poll descriptors: {exc}") from exc
        self._resampler = (
            soxr.ResampleStream(self._source_rate, self._rate, 1, dtype="int16", quality="MQ")
            if self._source_rate != self._rate
            else None
        )
        self._phase = _Phase.IDLE
        self._end_run()
        try:
            while True:
                self._check_closing()
                self._heartbeat = time.monotonic()
                self._pull_segments()
                if self._phase is not _Phase.IDLE:
                    self._announce()  # items whose samples went out before we knew of them
                if self._stops_in:
                    self._handle_stop(pcm, params)
                elif self._phase is _Phase.IDLE:
                    self._idle(waker_poll)
                elif self._phase is _Phase.REFILL:
                    self._refill(pcm, params, waker_poll)
                elif self._phase is _Phase.PLAYING:
                    self._play(pcm, params, device_poll)
                else:
                    self._drain(pcm, params, waker_poll, device_poll)
        except AudioDeviceError:
            # Whatever the device still held is lost with it: count it as not heard.
            self._ledger.credit(self._heard_pos(params.buffer_frames), self._ring.read_pos)
            raise

    def _idle(self, waker_poll: select.poll) -> None:
        self._idle_if_eos()
        if self._ready_to_start():
            self._begin_run()
        else:
            self._sleep(waker_poll, _IDLE_SLEEP_S, self._ready_to_start)

    def _refill(self, pcm: Pcm, params: PcmParams, waker_poll: select.poll) -> None:
        """Underrun: the device plays out what it holds while we wait for the prefill."""

        def ready() -> bool:
            return self._ready_to_start() or self._at_eos()

        if ready():
            self._phase = _Phase.PLAYING
            self._progress_t = time.monotonic()
        else:
            self._publish(pcm, params)
            self._sleep(waker_poll, params.period_s, ready)

    def _play(self, pcm: Pcm, params: PcmParams, device_poll: select.poll) -> None:
        pumped = self._pump(pcm, read=True)
        if pumped is _Pump.FULL:
            self._wait_for_room(pcm, params, device_poll)
        elif pumped is _Pump.EMPTY:
            if self._at_eos():
                self._finish_stream(params)
                self._phase = _Phase.DRAINING
            else:
                self._underruns += 1
                self._log_underrun()
                self._phase = _Phase.REFILL

    def _drain(
        self, pcm: Pcm, params: PcmParams, waker_poll: select.poll, device_poll: select.poll
    ) -> None:
        """The reply is in the device: wait until it has played out, then report idle."""
        if self._pend_off < self._pend_len:
            if self._pump(pcm, read=False) is _Pump.FULL:
                self._wait_for_room(pcm, params, device_poll)
            return
        avail = self._avail(pcm)
        if avail >= params.buffer_frames or self._state(pcm) != STATE_RUNNING:
            self._ledger.credit(self._heard_pos(0))
            self._drop(pcm)  # back to PREPARED, ready for the next reply
            self._end_run()
            self._phase = _Phase.IDLE
            self._eos_done = self._eos[0]
            self._emit(PlaybackIdle())
            return
        now = time.monotonic()
        if avail != self._last_avail:
            self._last_avail, self._progress_t = avail, now
        elif now - self._progress_t > self._stall_timeout:
            raise AudioDeviceError(self._device, "stopped playing (device stalled)")
        self._publish(pcm, params)
        left = (params.buffer_frames - avail) / params.rate
        self._sleep(waker_poll, min(left, params.period_s), None)

    def _log_underrun(self) -> None:
        """Count every underrun; log the first, then at most one line a minute with the
        count (a device without a clock underruns on every period)."""
        now = time.monotonic()
        last = self._underrun_logged_t
        if last is not None and now - last < UNDERRUN_LOG_S:
            return
        since = self._underruns - self._underruns_logged
        self._underrun_logged_t, self._underruns_logged = now, self._underruns
        if last is None:
            log.info("playback underrun (%d so far)", self._underruns)
        else:
            log.info(
                "playback underrun (%d so far, %d in the last %.0f s)",
                self._underruns,
                since,
                now - last,
            )

    def _check_closing(self) -> None:
        if self._stopping.is_set():
            raise _Stop

    def _sleep(self, poller: select.poll, seconds: float, ready: Callable[[], bool] | None) -> None:
        """Sleep on the waker. ``ready`` is checked after asking enqueue() to wake us, so no
        wake-up is lost: it writes its samples before it looks at ``_want_wake``."""
        self._want_wake = True
        try:
            if ready is not None and ready():
                return
            if poller.poll(max(1, round(seconds * 1000))):
                self._waker.reset()
        finally:
            self._want_wake = False

    def _wait_for_room(self, pcm: Pcm, params: PcmParams, device_poll: select.poll) -> None:
        """The device buffer is full: sleep until it has room for a period, or stop()."""
        self._publish(pcm, params)
        events = device_poll.poll(max(1, round(min(self._stall_timeout, 1.0) * 1000)))
        if any(fd == self._waker.fileno() for fd, _ in events):
            self._waker.reset()
        if time.monotonic() - self._progress_t > self._stall_timeout:
            raise AudioDeviceError(self._device, "stopped playing (device stalled)")

    # --- the thread: moving samples --------------------------------------------------------

    def _ready_to_start(self) -> bool:
        if self._ring.available() >= self._prefill:
            return True
        eos_gen, eos_pos = self._eos
        return eos_gen != self._eos_done and eos_pos > self._ring.read_pos

    def _at_eos(self) -> bool:
        """All of the reply that end_of_stream() closed has left the ring."""
        eos_gen, eos_pos = self._eos
        return eos_gen != self._eos_done and eos_pos <= self._ring.read_pos

    def _begin_run(self) -> None:
        self._end_run()
        if self._resampler is not None:
            self._resampler.clear()
        self._phase = _Phase.PLAYING
        self._progress_t = time.monotonic()

    def _end_run(self) -> None:
        self._run_base = self._ring.read_pos
        self._run_fed = self._run_written = 0
        self._pend_off = self._pend_len = 0

    def _pump(self, pcm: Pcm, *, read: bool) -> _Pump:
        """Write until the device is full, there is nothing left, or stop() was called."""
        while True:
            if self._pend_off < self._pend_len:
                try:
                    n = pcm.write(self._out[self._pend_off : self._pend_len].data)
                except AlsaError as exc:
                    raise AudioDeviceError(self._device, f"write failed: {exc}") from exc
                if n <= 0:
                    return _Pump.FULL
                self._pend_off += n
                self._run_written += n
                if self._tap is not None:
                    # Channel 0 of exactly what the device took; it still holds
                    # buffer - avail frames, these included, ahead of the listener.
                    self._tap.written(
                        self._out[self._pend_off - n : self._pend_off, 0],
                        self._buffer_frames - self._avail(pcm),
                        time.monotonic(),
                    )
                self._played_s += n / self._rate
                self._progress_t = time.monotonic()
                self._announce()
                continue
            if not read:
                return _Pump.EMPTY
            if self._stops_in:
                # Do not read past a barge-in: what follows may be the next reply.
                return _Pump.INTERRUPTED
            k = self._ring.read_into(self._src)
            if k == 0:
                return _Pump.EMPTY
            self._run_fed += k
            if self._resampler is None:
                self._stage(self._src[:k])
            else:
                self._stage(self._resampler.resample_chunk(self._src[:k]))

    def _stage(self, mono: npt.NDArray[np.int16], pad_to: int = 0) -> None:
        """Put device-rate mono into the pending buffer, one copy per channel."""
        m = len(mono)
        total = max(m, pad_to)
        if total > len(self._out):
            self._out = np.zeros((total, self._channels), dtype=np.int16)
        self._out[:m] = mono[:, np.newaxis]  # broadcasts to every channel
        self._out[m:total] = 0
        self._pend_off, self._pend_len = 0, total

    def _finish_stream(self, params: PcmParams) -> None:
        """End of reply: flush the resampler and pad the last period with silence, so a
        hardware device does not replay stale buffer contents before it notices the end."""
        tail: npt.NDArray[np.int16] = (
            self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if self._resampler is not None
            else np.zeros(0, dtype=np.int16)
        )
        pad_to = len(tail) + (-(self._run_written + len(tail)) % params.period_frames)
        if pad_to:
            self._stage(tail, pad_to)
        self._last_avail = -1

    def _avail(self, pcm: Pcm) -> int:
        try:
            return int(pcm.avail())
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"avail failed: {exc}") from exc

    def _state(self, pcm: Pcm) -> int:
        try:
            return int(pcm.state())
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"state failed: {exc}") from exc

    def _drop(self, pcm: Pcm) -> None:
        try:
            pcm.drop()
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"drop failed: {exc}") from exc
        finally:
            if self._tap is not None:
                self._tap.stopped(time.monotonic())
        self._pend_off = self._pend_len = 0

    # --- the thread: what was heard --------------------------------------------------------

    def _heard_pos(self, delay: int) -> int:
        """Stream position heard up to, when the device still holds ``delay`` frames."""
        heard = int((self._run_written - max(0, delay)) * self._ratio)
        return self._run_base + max(0, min(self._run_fed, heard))

    def _device_delay(self, pcm: Pcm, params: PcmParams) -> int:
        if self._run_written == 0:
            return 0
        return max(0, params.buffer_frames - self._avail(pcm))

    def _announce(self) -> None:
        written = self._run_base + min(self._run_fed, int(self._run_written * self._ratio))
        for item_id in self._ledger.newly_started(written):
            self._emit(PlaybackStarted(item_id))

    def _publish(self, pcm: Pcm, params: PcmParams) -> None:
        """Let played_ms() see progress (called about once a period while playing)."""
        self._ledger.credit(self._heard_pos(self._device_delay(pcm, params)))

    def _pull_segments(self) -> None:
        while self._segments_in:
            self._ledger.add(*self._segments_in.popleft())

    def _handle_stop(self, pcm: Pcm | None, params: PcmParams | None) -> None:
        """Barge-in: drop the device, discard what was queued before stop(), report."""
        stop_pos = self._stops_in.popleft()
        while self._stops_in:
            stop_pos = max(stop_pos, self._stops_in.popleft())
        self._pull_segments()
        playing = pcm is not None and params is not None and self._phase is not _Phase.IDLE
        heard = self._run_base
        if playing:
            assert pcm is not None and params is not None
            heard = self._heard_pos(self._device_delay(pcm, params))
            self._drop(pcm)
        item_id = self._ledger.interrupted(heard, stop_pos, playing)
        self._ledger.credit(heard, final_before=stop_pos)
        self._ring.skip_to(stop_pos)
        self._end_run()
        self._phase = _Phase.IDLE
        eos_gen, eos_pos = self._eos
        if eos_pos <= stop_pos:
            self._eos_done = eos_gen  # that reply is over: no PlaybackIdle for it
        played = self.played_ms(item_id) if item_id is not None else 0
        self._emit(PlaybackStopped(item_id, played))

    def _discard_to(self, pos: int) -> None:
        """No device: what is queued can never be heard."""
        if self._ring.skip_to(pos):
            self._ledger.credit(self._run_base, final_before=pos)
            self._end_run()

    def _idle_if_eos(self) -> None:
        """A reply ended with nothing (left) to play: report idle straight away."""
        eos_gen, eos_pos = self._eos
        if eos_gen != self._eos_done and eos_pos <= self._ring.read_pos:
            self._eos_done = eos_gen
            self._emit(PlaybackIdle())

    def _emit(self, event: PlayerEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("playback on_event callback failed for %s", event)
