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

Imports: numpy, soxr, ``appliance.audio.alsa``, ``appliance.audio.ring``, ``appliance.errors``.
"""

from __future__ import annotations

import enum
import logging
import math
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from appliance.audio.alsa import (
    STATE_RUNNING,
    AlsaError,
    Pcm,
    PcmParams,
    Waker,
    close_quietly,
    open_pcm,
    reopen_delays,
)
from appliance.audio.ring import SampleRing
from appliance.errors import AudioDeviceError

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

_HEARTBEAT_S = 1.0  # the longest the thread sleeps while idle
_HEALTHY_S = 1.0  # audio played without trouble before the reopen backoff starts over
_MAX_ITEMS_KEPT = 256  # played-ms history kept for the loop
_CANCELLED_KEPT = 64


class _Stop(Exception):
    """Raised inside the thread when close() asked it to end."""


class _Phase(enum.Enum):
    IDLE = "idle"  # nothing started; waiting for prefill or end_of_stream
    PLAYING = "playing"  # writing as fast as the device takes it
    REFILL = "refill"  # underrun mid-reply: waiting for prefill again
    DRAINING = "draining"  # the reply is all written; waiting for the device to play it out


class _Pump(enum.Enum):
    FULL = "full"  # the device took all it could
    EMPTY = "empty"  # nothing left to write
    INTERRUPTED = "interrupted"  # a stop() is waiting to be handled


class _Segment:
    """Where one item's samples start in the stream (player thread only)."""

    __slots__ = ("done", "item_id", "start", "started")

    def __init__(self, start: int, item_id: str) -> None:
        self.start = start
        self.item_id = item_id
        self.started = False
        self.done = False


class PlaybackThread:
    """Plays queued mono PCM16 replies on one ALSA device; see the module docstring."""

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
    ) -> None:
        self._device = device
        self._rate = rate
        self._channels = channels
        self._period_frames = period_frames
        self._periods = periods
        self._source_rate = source_rate
        self._prefill = max(1, source_rate * prefill_ms // 1000)
        self._stall_timeout = stall_timeout
        self._on_event = on_event
        self._ring = SampleRing(max(1, int(capacity_s * source_rate)))
        self._ratio = source_rate / rate  # source samples per device frame
        self._chunk = max(1, math.ceil(period_frames * self._ratio))
        self._src: npt.NDArray[np.int16] = np.zeros(self._chunk, dtype=np.int16)
        self._out: npt.NDArray[np.int16] = np.zeros(
            (2 * period_frames + 4096, channels), dtype=np.int16
        )
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=f"playback:{device}", daemon=True)

        # Loop side (written only by the loop thread).
        self._last_item: str | None = None
        self._since_stop: deque[str] = deque(maxlen=_CANCELLED_KEPT)
        self._cancelled: dict[str, None] = {}  # insertion-ordered set
        self._segments_in: deque[tuple[int, str]] = deque()
        self._stops_in: deque[int] = deque()
        self._eos: tuple[int, int] = (0, -1)  # (generation, stream position)
        self._overflow_logged = 0

        # Player side, read by the loop.
        self._want_wake = False
        self._played: dict[str, int] = {}  # samples heard per item
        self._underruns = 0
        self._heartbeat = time.monotonic()

        # Player side only.
        self._segments: list[_Segment] = []
        self._eos_done = 0  # generation of the last end_of_stream() handled
        self._outage = False
        self._phase = _Phase.IDLE
        self._resampler: soxr.ResampleStream | None = None
        self._pend_off = 0
        self._pend_len = 0
        self._run_base = 0  # stream position where the current run started
        self._run_fed = 0  # source samples taken from the ring in this run
        self._run_written = 0  # device frames written in this run
        self._played_s = 0.0

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
        return self._played.get(item_id, 0) * 1000 // self._source_rate

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (dropping queued audio) and wait; RuntimeError if it hangs."""
        self._stopping.set()
        self._waker.wake()
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"playback thread for {self._device!r} did not stop")
        self._waker.close()

    @property
    def underruns(self) -> int:
        """Times the queue ran dry while a reply was still streaming."""
        return self._underruns

    @property
    def heartbeat(self) -> float:
        """``time.monotonic()`` when the thread last made progress or woke (≥ once a second)."""
        return self._heartbeat

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

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
                    pcm, params = open_pcm(
                        self._device,
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
                log.info(
                    "playback %r open: %d Hz, %d ch, period %d, buffer %d frames",
                    self._device,
                    params.rate,
                    params.channels,
                    params.period_frames,
                    params.buffer_frames,
                )
                if self._outage:
                    self._outage = False
                    log.warning("playback %r is back", self._device)
                    self._emit(PlaybackDeviceRestored())
                self._played_s = 0.0
                try:
                    self._serve(pcm, params)
                except AudioDeviceError as err:
                    self._end_run()
                    self._phase = _Phase.IDLE
                    self._report_outage(err)
                finally:
                    close_quietly(pcm)
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
            self._pull_segments()
            if self._stops_in:
                self._handle_stop(None, None)
            self._discard_to(self._ring.write_pos)
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
        idle_poll = select.poll()
        idle_poll.register(waker_fd, select.POLLIN)
        busy_poll = select.poll()
        busy_poll.register(waker_fd, select.POLLIN)
        try:
            for fd, events in pcm.polldescriptors():
                busy_poll.register(fd, events)
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
            progress_t = time.monotonic()
            last_avail = -1
            while True:
                self._check_closing()
                now = time.monotonic()
                self._heartbeat = now
                self._pull_segments()
                if self._stops_in:
                    self._handle_stop(pcm, params)
                    continue
                phase = self._phase

                if phase is _Phase.IDLE:
                    self._idle_if_eos()
                    if self._ready_to_start():
                        self._begin_run()
                        progress_t = now
                        continue
                    self._sleep_until_woken(idle_poll, _HEARTBEAT_S, self._ready_to_start)

                elif phase is _Phase.REFILL:
                    if self._ready_to_start() or self._at_eos():
                        self._phase = _Phase.PLAYING
                        progress_t = now
                        continue
                    self._publish(pcm, params)
                    self._sleep_until_woken(
                        idle_poll, params.period_s, lambda: self._ready_to_start() or self._at_eos()
                    )

                elif phase is _Phase.PLAYING:
                    pumped = self._pump(pcm, read=True)
                    if pumped is _Pump.FULL:
                        progress_t = self._wait_device(pcm, params, busy_poll, progress_t)
                    elif pumped is _Pump.INTERRUPTED:
                        continue
                    elif self._at_eos():
                        self._finish_stream(params)
                        self._phase = _Phase.DRAINING
                    else:
                        self._underruns += 1
                        log.info("playback underrun (%d so far)", self._underruns)
                        self._phase = _Phase.REFILL

                else:  # DRAINING
                    if self._pend_off < self._pend_len:
                        if self._pump(pcm, read=False) is _Pump.FULL:
                            progress_t = self._wait_device(pcm, params, busy_poll, progress_t)
                        continue
                    avail = self._avail(pcm)
                    if avail >= params.buffer_frames or pcm.state() != STATE_RUNNING:
                        self._publish(pcm, params, delay=0)
                        self._drop(pcm)
                        self._end_run()
                        self._phase = _Phase.IDLE
                        eos_gen, _ = self._eos
                        self._eos_done = eos_gen
                        self._emit(PlaybackIdle())
                        continue
                    if avail != last_avail:
                        last_avail, progress_t = avail, now
                    elif now - progress_t > self._stall_timeout:
                        raise AudioDeviceError(self._device, "stopped playing (device stalled)")
                    self._publish(pcm, params)
                    left = (params.buffer_frames - avail) / params.rate
                    self._sleep_until_woken(idle_poll, min(left, params.period_s), None)
        except AudioDeviceError:
            # Whatever the device still held is lost with it: count it as not heard.
            heard = self._heard_pos(params.buffer_frames)
            self._credit(heard, end_limit=self._ring.read_pos)
            raise

    def _check_closing(self) -> None:
        if self._stopping.is_set():
            raise _Stop

    def _sleep_until_woken(
        self, poller: select.poll, seconds: float, ready: Callable[[], bool] | None
    ) -> None:
        """Poll the waker; ``ready`` is checked after asking producers to wake us (no lost
        wake-up: they write before they look at ``_want_wake``, we look after setting it)."""
        self._want_wake = True
        try:
            if ready is not None and ready():
                return
            if poller.poll(max(1, round(seconds * 1000))):
                self._waker.reset()
        finally:
            self._want_wake = False

    def _wait_device(
        self, pcm: Pcm, params: PcmParams, poller: select.poll, progress_t: float
    ) -> float:
        """The device buffer is full: sleep until it has room (or we are woken)."""
        self._publish(pcm, params)
        events = poller.poll(max(1, round(min(self._stall_timeout, 1.0) * 1000)))
        now = time.monotonic()
        if not events:
            if now - progress_t > self._stall_timeout:
                raise AudioDeviceError(self._device, "stopped playing (device stalled)")
            return progress_t
        if any(fd == self._waker.fileno() for fd, _ in events):
            self._waker.reset()
        return now

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
        self._run_base = self._ring.read_pos
        self._run_fed = 0
        self._run_written = 0
        self._pend_off = self._pend_len = 0
        if self._resampler is not None:
            self._resampler.clear()
        self._phase = _Phase.PLAYING

    def _pump(self, pcm: Pcm, *, read: bool) -> _Pump:
        """Write until the device is full, there is nothing left, or stop() was called."""
        out = self._out
        while True:
            if self._pend_off < self._pend_len:
                try:
                    n = pcm.write(out[self._pend_off : self._pend_len].data)
                except AlsaError as exc:
                    raise AudioDeviceError(self._device, f"write failed: {exc}") from exc
                if n <= 0:
                    return _Pump.FULL
                self._pend_off += n
                self._run_written += n
                self._played_s += n / self._rate
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
            self._stage(self._src[:k] if self._resampler is None else self._resample(k))

    def _resample(self, k: int) -> npt.NDArray[np.int16]:
        assert self._resampler is not None
        y: npt.NDArray[np.int16] = self._resampler.resample_chunk(self._src[:k])
        return y

    def _stage(self, mono: npt.NDArray[np.int16], pad_to: int = 0) -> None:
        """Put device-rate mono into the pending buffer, one copy per channel."""
        m = len(mono)
        total = max(m, pad_to)
        if total > len(self._out):
            self._out = np.zeros((total, self._channels), dtype=np.int16)
        out = self._out
        out[:m] = mono[:, np.newaxis]  # broadcasts to every channel
        out[m:total] = 0
        self._pend_off, self._pend_len = 0, total

    def _finish_stream(self, params: PcmParams) -> None:
        """End of reply: flush the resampler and pad the last period with silence, so a
        hardware device does not replay stale buffer contents before it notices the end."""
        tail: npt.NDArray[np.int16] = (
            self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if self._resampler is not None
            else np.zeros(0, dtype=np.int16)
        )
        period = params.period_frames
        pad_to = len(tail) + (-(self._run_written + len(tail)) % period)
        if pad_to:
            self._stage(tail, pad_to)

    def _avail(self, pcm: Pcm) -> int:
        try:
            return int(pcm.avail())
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"avail failed: {exc}") from exc

    def _drop(self, pcm: Pcm) -> None:
        try:
            pcm.drop()
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"drop failed: {exc}") from exc
        self._pend_off = self._pend_len = 0

    def _end_run(self) -> None:
        self._run_base = self._ring.read_pos
        self._run_fed = self._run_written = 0
        self._pend_off = self._pend_len = 0

    # --- the thread: what was heard --------------------------------------------------------

    def _heard_pos(self, delay: int) -> int:
        """Stream position the listener has heard up to, given frames still in the device."""
        heard = int((self._run_written - max(0, delay)) * self._ratio)
        return self._run_base + max(0, min(self._run_fed, heard))

    def _device_delay(self, pcm: Pcm, params: PcmParams) -> int:
        if self._run_written == 0:
            return 0
        return max(0, params.buffer_frames - self._avail(pcm))

    def _announce(self) -> None:
        written_pos = self._run_base + min(self._run_fed, int(self._run_written * self._ratio))
        for seg in self._segments:
            if seg.start >= written_pos:
                break
            if not seg.started and not seg.done:
                seg.started = True
                self._emit(PlaybackStarted(seg.item_id))

    def _publish(self, pcm: Pcm, params: PcmParams, delay: int | None = None) -> int:
        """Update ``_played`` for the items being heard; return the heard position."""
        if delay is None:
            delay = self._device_delay(pcm, params)
        heard = self._heard_pos(delay)
        self._credit(heard, end_limit=None)
        return heard

    def _credit(self, heard: int, end_limit: int | None) -> None:
        """Record how much of each item up to ``heard`` was heard; with ``end_limit`` (a
        stop position), items starting before it are final."""
        segs = self._segments
        for i, seg in enumerate(segs):
            if seg.done:
                continue
            final_by_stop = end_limit is not None and seg.start < end_limit
            if seg.start >= heard and not final_by_stop:
                break
            end = segs[i + 1].start if i + 1 < len(segs) else None
            if end is None and end_limit is not None and seg.start < end_limit:
                end = end_limit
            upto = heard if end is None else min(heard, end)
            self._played[seg.item_id] = max(0, upto - seg.start)
            if final_by_stop or (end is not None and end <= heard):
                seg.done = True
        self._prune()

    def _prune(self) -> None:
        segs = self._segments
        i = 0
        while i < len(segs) - 1 and segs[i].done:
            i += 1
        if i > 32:
            del segs[:i]
        while len(self._played) > _MAX_ITEMS_KEPT:
            del self._played[next(iter(self._played))]

    def _pull_segments(self) -> None:
        while self._segments_in:
            start, item_id = self._segments_in.popleft()
            self._segments.append(_Segment(start, item_id))

    def _handle_stop(self, pcm: Pcm | None, params: PcmParams | None) -> None:
        """Barge-in: drop the device, discard what was queued before stop(), report."""
        stop_pos = self._stops_in.popleft()
        while self._stops_in:
            stop_pos = max(stop_pos, self._stops_in.popleft())
        self._pull_segments()
        heard = self._run_base
        active = pcm is not None and self._phase is not _Phase.IDLE
        if pcm is not None and params is not None and active:
            heard = self._heard_pos(self._device_delay(pcm, params))
            self._drop(pcm)
        current: _Segment | None = None
        first_dropped: _Segment | None = None
        for seg in self._segments:
            if seg.done or seg.start >= stop_pos:
                continue
            if active and seg.start < heard:
                current = seg
            elif first_dropped is None:
                first_dropped = seg
        self._credit(heard, end_limit=stop_pos)
        self._ring.skip_to(stop_pos)
        self._end_run()
        self._phase = _Phase.IDLE
        eos_gen, eos_pos = self._eos
        if eos_pos <= stop_pos:
            self._eos_done = eos_gen  # that reply is over; no PlaybackIdle for it
        if current is not None:
            event = PlaybackStopped(current.item_id, self.played_ms(current.item_id))
        else:
            event = PlaybackStopped(first_dropped.item_id if first_dropped else None, 0)
        self._emit(event)

    def _discard_to(self, pos: int) -> None:
        """No device: what is queued can never be heard."""
        if self._ring.skip_to(pos):
            self._credit(self._run_base, end_limit=pos)
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
