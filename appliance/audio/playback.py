"""The speaker thread: ALSA playback of reply audio, driven by the pure playback policy.

Owns one playback PCM for the life of the daemon (its lifetime loop is ``AudioThread``'s)
and the queue in front of it. The policy (the jitter buffer's phases, prefill, underruns,
end of stream, what was heard of which item) is ``appliance.core.player``; this module
only moves samples: ALSA writes, poll and drop, soxr conversion, the echo reference.

Threads: the asyncio loop is the only producer (``enqueue``, ``end_of_stream``, ``stop``;
none of them blocks); the player thread is the only consumer. Between them there are only
documented thread-safe hand-offs: the samples go through a lock-free SPSC ``SampleRing``
of 24 kHz mono PCM16; where an item starts, an end of stream and a stop go as messages
(``Queued``, ``EndOfStream``, ``Stop``) through a ``collections.deque`` (append and
popleft are thread-safe); the player says it sleeps waiting for audio with a
``threading.Event``, so only then does ``enqueue()`` spend a wake-up. No lock is shared
with the loop.

The player thread converts each period to the device rate (soxr) and channel count
(duplicated mono) and writes it non-blocking, sleeping in ``poll()`` on the PCM's
descriptors plus a wake-up eventfd, so a barge-in ``stop()`` is acted on within a
millisecond or two: ``drop()``, discard the queue, report what was heard. While nothing
plays it sleeps on the eventfd alone.

What was heard: the device has been given ``written`` frames and still holds
``buffer_size - avail()`` of them; the core maps that back to stream positions and items.

Events (``PlayerEvent``, defined in the core and re-exported here) go to ``on_event`` on
the player thread.

Echo cancellation: with a ``reference`` (``appliance.audio.aec.ReferenceTap``), every write
is handed to it with the device delay, and every ``drop()`` tells it the rest is not heard.

Imports: numpy, soxr, ``appliance.audio.alsa``, ``appliance.audio.ring``,
``appliance.core.player``, ``appliance.errors``.
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
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import soxr

from appliance.audio.alsa import STATE_RUNNING, AlsaError, AudioThread, Pcm, PcmParams
from appliance.audio.ring import SampleRing
from appliance.core.player import (
    Admit,
    EndOfStream,
    Intake,
    Message,
    Phase,
    PlaybackDeviceError,
    PlaybackDeviceRestored,
    PlaybackIdle,
    PlaybackStarted,
    PlaybackStopped,
    Player,
    PlayerEvent,
    Queued,
    Step,
    Stop,
)
from appliance.errors import AudioDeviceError

if TYPE_CHECKING:
    from appliance.audio.aec import ReferenceTap

__all__ = [
    "PlaybackDeviceError",
    "PlaybackDeviceRestored",
    "PlaybackIdle",
    "PlaybackStarted",
    "PlaybackStopped",
    "PlaybackThread",
    "PlayerEvent",
]

log = logging.getLogger(__name__)

_IDLE_SLEEP_S = 10.0  # the longest the thread sleeps while idle (whatever needs it wakes it)
_SERVER_AHEAD_S = 1.0  # a sound server holds a few hundred ms beyond the device buffer at most


class _Pump(enum.Enum):
    FULL = "full"  # the device took all it could
    EMPTY = "empty"  # nothing left to write
    MESSAGE = "message"  # the loop sent something (a stop() must not wait for the queue)


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
        self._stall_timeout = stall_timeout
        self._on_event = on_event
        # Echo cancellation's reference: every frame written, with when it will be heard.
        self._tap = reference
        self._buffer_frames = 0
        # Sized for the longest reply (the service streams faster than it plays), resident
        # only as replies need it: each one's end gives the pages nothing unread is on back.
        self._ring = SampleRing(max(1, int(capacity_s * source_rate)), reclaim=True)
        self._inbox: deque[Message] = deque()  # loop -> player thread
        self._want_wake = threading.Event()  # the player sleeps until enqueue() brings audio

        # Loop side only.
        self._intake = Intake()
        self._overflow_logged = 0

        # Player thread only (played_ms() reads the core after close()).
        self._core = Player(
            source_rate=source_rate, device_rate=rate, prefill=source_rate * prefill_ms // 1000
        )
        chunk = max(1, math.ceil(period_frames * source_rate / rate))
        self._src: npt.NDArray[np.int16] = np.zeros(chunk, dtype=np.int16)
        self._out: npt.NDArray[np.int16] = np.zeros(
            (2 * period_frames + 4096, channels), dtype=np.int16
        )
        self._resampler: soxr.ResampleStream | None = None
        self._pend_off = 0  # device frames staged in _out and not yet written: [off, len)
        self._pend_len = 0
        self._progress_t = 0.0  # when the device last took or played something
        self._run_start = 0.0  # when the current run was started (its first write)
        self._last_avail = -1

    # --- loop side: never blocks ------------------------------------------------------------

    def enqueue(self, item_id: str, pcm: bytes) -> None:
        """Queue PCM16 mono at ``source_rate`` for ``item_id``.

        Audio for an item that ``stop()`` interrupted is ignored: it is a late delta of a
        reply the listener already cut off.
        """
        if len(pcm) < 2:
            return
        admit = self._intake.admit(item_id)
        if admit is Admit.CANCELLED:
            return
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
        if admit is Admit.NEW_ITEM:
            # Sent before the samples, so the player always knows whose they are.
            self._inbox.append(Queued(self._ring.write_pos, item_id))
        written = self._ring.write(samples)
        if written < len(samples):
            self._overflow_logged += 1
            if self._overflow_logged % 100 == 1:
                log.warning(
                    "playback queue full (%.0f s); dropped %d samples so far",
                    self._ring.capacity / self._source_rate,
                    self._ring.overflow,
                )
        if self._want_wake.is_set():
            self._waker.wake()

    def end_of_stream(self) -> None:
        """The reply is complete: play out what is queued even if below the prefill."""
        self._inbox.append(EndOfStream(self._ring.write_pos))
        self._waker.wake()
        self._ring.reclaim()

    def stop(self) -> None:
        """Barge-in: drop everything queued so far and stop the device now."""
        self._inbox.append(Stop(self._ring.write_pos))
        self._intake.stopped()
        self._waker.wake()

    # --- figures ------------------------------------------------------------------------------

    def played_ms(self, item_id: str) -> int:
        """How much of ``item_id`` the listener has heard (to within a period).

        The ledger belongs to the player thread: ask from ``on_event`` or after ``close()``
        (``PlaybackStopped`` carries the figure a barge-in needs).
        """
        return self._core.played_ms(item_id)

    @property
    def underruns(self) -> int:
        """Times the queue ran dry while a reply was still streaming (a statistic: read
        from another thread it may lag by one)."""
        return self._core.underruns

    @property
    def queued_ms(self) -> int:
        """Audio waiting in the queue (not yet handed to the device)."""
        return self._ring.available() * 1000 // self._source_rate

    # --- the device's lifetime (AudioThread) ----------------------------------------------------

    def _open_device(self) -> tuple[Pcm, PcmParams]:
        return self._open(
            "playback",
            rate=self._rate,
            channels=self._channels,
            period_frames=self._period_frames,
            periods=self._periods,
        )

    def _outage(self, err: AudioDeviceError | None) -> None:
        self._emit(PlaybackDeviceRestored() if err is None else PlaybackDeviceError(str(err)))

    def _failed(self, params: PcmParams) -> None:
        # Whatever the device still held is lost with it: count it as not heard.
        self._core.device_lost(params.buffer_frames)
        self._pend_off = self._pend_len = 0

    def _closed(self) -> None:
        if self._tap is not None:
            self._tap.stopped(time.monotonic())

    def _rest(self, seconds: float) -> None:
        """Sit out a reopen delay, discarding audio (no device to play it) as it arrives."""
        deadline = time.monotonic() + seconds
        poller = select.poll()
        poller.register(self._waker.fileno(), select.POLLIN)
        core, ring = self._core, self._ring
        while True:
            self._check_closing()
            self._heartbeat = time.monotonic()
            # Position first, then messages: every item starting before it is then known.
            pos = ring.write_pos
            self._take_messages()
            if core.stop_pending:
                ring.skip_to(core.stopped(None, ring.write_pos))
            ring.skip_to(core.discard_to(pos))
            self._emit_events()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._want_wake.set()
            try:
                if poller.poll(max(1, round(left * 1000))):
                    self._waker.reset()
            finally:
                self._want_wake.clear()

    # --- the thread: one open device --------------------------------------------------------

    def _serve(self, pcm: Pcm, params: PcmParams) -> None:
        """Play until close() (raises Closing) or a device failure (raises AudioDeviceError)."""
        self._restored()
        self._buffer_frames = params.buffer_frames
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
        core = self._core
        core.device_opened()
        self._pend_off = self._pend_len = 0
        while True:
            self._check_closing()
            self._heartbeat = time.monotonic()
            self._take_messages()
            step = core.next_step(self._ring.write_pos)
            self._emit_events()
            if step is Step.WRITE:
                self._play(pcm, params, device_poll)
            elif step is Step.STOP:
                self._stop_now(pcm, params)
            elif step is Step.WAIT:
                self._sleep(waker_poll, _IDLE_SLEEP_S)
            elif step is Step.REFILL:
                # The device plays out what it holds while the prefill comes back.
                self._publish(pcm, params)
                self._sleep(waker_poll, params.period_s)
            elif step is Step.DRAIN:
                self._drain(pcm, params, waker_poll, device_poll)
            else:  # START or RESUME: the next step writes
                if step is Step.START:
                    self._run_start = time.monotonic()
                    self._pend_off = self._pend_len = 0
                    if self._resampler is not None:
                        self._resampler.clear()
                self._progress_t = time.monotonic()

    def _play(self, pcm: Pcm, params: PcmParams, device_poll: select.poll) -> None:
        pumped = self._pump(pcm, read=True)
        if pumped is _Pump.FULL:
            self._wait_for_room(pcm, params, device_poll)
        elif pumped is _Pump.EMPTY and self._core.ran_dry(time.monotonic()):
            self._finish_stream(params)

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
            # The device's buffer is empty, but a sound server behind it may still hold
            # 0.1-0.2 s of the run (through PulseAudio a 0.2 s cue "played out" 0.17 s after
            # it started): no run is heard sooner than it lasts. Further ahead than any
            # server holds, the device has no clock (the ALSA file plugin): nothing to wait.
            left = self._run_start + self._core.run_written / params.rate - time.monotonic()
            if 0 < left < _SERVER_AHEAD_S:
                self._sleep(waker_poll, min(left, params.period_s), ready=False)
                return
            self._core.drained()
            self._drop(pcm)  # back to PREPARED, ready for the next reply
            self._emit_events()
            return
        now = time.monotonic()
        if avail != self._last_avail:
            self._last_avail, self._progress_t = avail, now
        elif now - self._progress_t > self._stall_timeout:
            raise AudioDeviceError(self._device, "stopped playing (device stalled)")
        self._publish(pcm, params)
        left = (params.buffer_frames - avail) / params.rate
        self._sleep(waker_poll, min(left, params.period_s), ready=False)

    def _stop_now(self, pcm: Pcm, params: PcmParams) -> None:
        """Barge-in: drop the device, discard what was queued before stop(), report."""
        core = self._core
        delay = None
        if core.phase is not Phase.IDLE:
            delay = self._device_delay(pcm, params)
            self._drop(pcm)
        self._ring.skip_to(core.stopped(delay, self._ring.write_pos))
        self._pend_off = self._pend_len = 0
        self._emit_events()

    def _sleep(self, poller: select.poll, seconds: float, *, ready: bool = True) -> None:
        """Sleep on the waker. With ``ready``, first check whether a run could start: after
        asking enqueue() to wake us, so no wake-up is lost (it writes its samples before it
        looks at ``_want_wake``)."""
        self._want_wake.set()
        try:
            if ready and (self._inbox or self._core.ready(self._ring.write_pos)):
                return
            if poller.poll(max(1, round(seconds * 1000))):
                self._waker.reset()
        finally:
            self._want_wake.clear()

    def _wait_for_room(self, pcm: Pcm, params: PcmParams, device_poll: select.poll) -> None:
        """The device buffer is full: sleep until it has room for a period, or stop()."""
        self._publish(pcm, params)
        events = device_poll.poll(max(1, round(min(self._stall_timeout, 1.0) * 1000)))
        if any(fd == self._waker.fileno() for fd, _ in events):
            self._waker.reset()
        if time.monotonic() - self._progress_t > self._stall_timeout:
            raise AudioDeviceError(self._device, "stopped playing (device stalled)")

    # --- the thread: moving samples --------------------------------------------------------

    def _take_messages(self) -> None:
        inbox, core = self._inbox, self._core
        while inbox:
            core.receive(inbox.popleft())

    def _pump(self, pcm: Pcm, *, read: bool) -> _Pump:
        """Write until the device is full, there is nothing left, or the loop sent a message."""
        core = self._core
        while True:
            if self._pend_off < self._pend_len:
                try:
                    n = pcm.write(self._out[self._pend_off : self._pend_len].data)
                except AlsaError as exc:
                    raise AudioDeviceError(self._device, f"write failed: {exc}") from exc
                if n <= 0:
                    return _Pump.FULL
                self._pend_off += n
                core.written(n)
                if self._tap is not None:
                    # Channel 0 of exactly what the device took; it still holds
                    # buffer - avail frames, these included, ahead of the listener.
                    self._tap.written(
                        self._out[self._pend_off - n : self._pend_off, 0],
                        self._buffer_frames - self._avail(pcm),
                        time.monotonic(),
                    )
                self._served_s += n / self._rate
                self._progress_t = time.monotonic()
                self._emit_events()  # an item that started
                continue
            if not read:
                return _Pump.EMPTY
            if self._inbox:
                # Do not read past a barge-in: what follows may be the next reply.
                return _Pump.MESSAGE
            k = self._ring.read_into(self._src)
            if k == 0:
                return _Pump.EMPTY
            core.fed(k)
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
        """End of reply: flush the resampler and pad the last period with silence."""
        tail: npt.NDArray[np.int16] = (
            self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if self._resampler is not None
            else np.zeros(0, dtype=np.int16)
        )
        pad_to = self._core.padded(len(tail), params.period_frames)
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

    def _device_delay(self, pcm: Pcm, params: PcmParams) -> int:
        """Frames the device holds ahead of the listener."""
        if self._core.run_written == 0:
            return 0
        return max(0, params.buffer_frames - self._avail(pcm))

    def _publish(self, pcm: Pcm, params: PcmParams) -> None:
        """Credit what was heard (about once a period while playing)."""
        self._core.progress(self._device_delay(pcm, params))

    def _emit_events(self) -> None:
        for event in self._core.events():
            self._emit(event)

    def _emit(self, event: PlayerEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("playback on_event callback failed for %s", event)
