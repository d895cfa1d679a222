"""The microphone thread: ALSA capture to a mono int16 sink, surviving device trouble.

Owns one capture PCM for the life of the daemon: opens it (checking the rate and channel
count really took), reads periods, picks one channel out of the interleaved frames and
hands it to ``sink`` on this thread. Overruns are counted and survived. A device that fails
to open, errors mid-stream or stalls is closed, reported once per outage through
``on_error(AudioDeviceError)``, reopened with backoff and reported back with
``on_error(None)`` when audio flows again (the loop is ``AudioThread``'s). It never exits on
its own.

Reads are non-blocking and the thread sleeps in ``poll()`` on the PCM's descriptors plus a
wake-up eventfd, so ``close()`` is prompt.

Adaptive wake-ups: every wake-up of Python code costs real CPU (through PulseAudio's plugin
a poll on the PCM even wakes two or three times a period), so with ``wants`` (how many frames
the sink may gather before the next call; 0: every period) the thread sleeps on a timer until
they are due, reads until the sink has them and hands them over in one call; a block short
of what was asked (the wake-up came a little before its last frames) waits for the rest.
The front end asks for 240 ms of VAD frames while listening, while streaming the rest of the
current chunk (it could not go out sooner), at most 40 ms of it where a frame may end the turn,
and every period while the speaker plays (barge-in must be fast); ``wake()`` cuts a sleep
short when that changes. The buffer (``BUFFER_S``) holds far more than a block, so a late
wake-up loses nothing; it adds no latency. A device without a clock (ALSA's ``file``
plugin: ``appliance demo``) is paced in the same blocks: each is read once it would have been
captured, so neither a block nor a ``wake()`` reads ahead of real time.

Imports: numpy, ``appliance.audio.alsa``, ``appliance.errors``.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from appliance.audio.alsa import AlsaError, AudioThread, Pcm, PcmParams
from appliance.errors import AudioDeviceError

log = logging.getLogger(__name__)

# A clocked device cannot hand over more than it recorded since we started looking plus
# what its buffer held then; more than that (with a period of slack for timing jitter)
# means it has no clock. The reference point moves every few seconds so that a device
# clock running a little fast never adds up to a false alarm.
_CLOCK_WINDOW_S = 10.0
_POLL_MS = 500
# The capture buffer: long enough to sleep through a block of periods (see ``wants``) with
# room to spare, so a late wake-up loses nothing. It adds no latency: audio is read as soon
# as it is wanted, whatever the buffer holds.
BUFFER_S = 0.5


class CaptureThread(AudioThread):
    """Reads one capture device on its own thread and feeds ``sink`` with mono int16.

    ``sink`` gets a view of a buffer that is reused for the next period: copy what you keep
    (``SampleRing.write`` does). Both callbacks run on the capture thread.
    """

    kind = "capture"

    def __init__(
        self,
        *,
        device: str,
        rate: int,
        channels: int,
        channel: int,
        period_frames: int,
        sink: Callable[[npt.NDArray[np.int16]], None],
        on_error: Callable[[AudioDeviceError | None], None],
        periods: int | None = None,
        stall_timeout: float = 2.0,
        wants: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= channel < channels:
            raise ValueError(f"channel {channel} is not one of the {channels} channels")
        super().__init__(device)
        self._rate = rate
        self._channels = channels
        self._channel = channel
        self._period_frames = period_frames
        self._periods = periods or max(4, -(-int(BUFFER_S * rate) // period_frames))
        self._stall_timeout = stall_timeout
        self._sink = sink
        self._on_error = on_error
        self._wants = wants
        # Several periods are gathered here and handed over in one sink call. A mono device's
        # reads are copied in as bytes (one slice store per read: the numpy calls cost more
        # than the copy at 10 ms periods); ``_mono`` is an int16 view of the same memory.
        self._raw = bytearray(period_frames * self._periods * 2)
        self._mono: npt.NDArray[np.int16] = np.frombuffer(self._raw, dtype=np.int16)
        self._wakeups = 0
        self._xruns = 0
        self._frames = 0
        self._sink_errors = 0

    # --- control (any thread) -------------------------------------------------------------

    @property
    def xruns(self) -> int:
        """Overruns recovered (audio was lost because this thread fell behind)."""
        return self._xruns

    @property
    def wakeups(self) -> int:
        """Times the thread woke to read (a figure for the benchmark and tests)."""
        return self._wakeups

    @property
    def frames(self) -> int:
        """Frames read since start, over all reopenings."""
        return self._frames

    def wake(self) -> None:
        """Cut a timed sleep short: what the sink wants changed (the speaker started, the
        push-to-talk button); the thread reads what is ready and asks ``wants`` again."""
        self._waker.wake()

    # --- the thread ------------------------------------------------------------------------

    def _open_device(self) -> tuple[Pcm, PcmParams]:
        return self._open(
            "capture",
            rate=self._rate,
            channels=self._channels,
            period_frames=self._period_frames,
            periods=self._periods,
        )

    def _outage(self, err: AudioDeviceError | None) -> None:
        try:
            self._on_error(err)
        except Exception:
            log.exception("capture on_error callback failed")

    def _serve(self, pcm: Pcm, params: PcmParams) -> None:
        self._stream(pcm, params)

    def _stream(self, pcm: Pcm, params: PcmParams) -> None:
        """Read until close() (returns) or a device failure (raises AudioDeviceError)."""
        waker_fd = self._waker.fileno()
        poller = select.poll()
        poller.register(waker_fd, select.POLLIN)
        try:
            for fd, events in pcm.polldescriptors():
                poller.register(fd, events)
        except AlsaError as exc:
            raise AudioDeviceError(self._device, f"no poll descriptors: {exc}") from exc
        waker_only = select.poll()
        waker_only.register(waker_fd, select.POLLIN)

        rate = params.rate
        slack = params.buffer_frames + params.period_frames
        paced = False
        due = 0.0  # paced mode: when the audio read so far would have been captured
        anchor_t = time.monotonic()
        anchor_frames = self._frames
        last_data = anchor_t
        poll_ms = min(_POLL_MS, max(1, round(self._stall_timeout * 500)))
        block = 0  # frames gathered in self._mono, not yet handed to the sink
        target = 0  # frames to gather before handing over (with ``wants``)
        gather = min(len(self._mono), params.buffer_frames)
        while not self._stopping.is_set():
            if paced and block == 0:
                # No clock: read a block only once it would have been captured, as a clocked
                # device would have it, so that neither a wake-up (``wake``) nor a block
                # reads ahead of time; a wake-up asks ``wants`` again.
                want = self._call_wants() if self._wants is not None else 0
                wait = due + max(want, params.period_frames) / rate - time.monotonic()
                if wait > 0:
                    self._poll_waker(waker_only, wait)
                    continue
            try:
                n, data = pcm.read()
            except AlsaError as exc:
                raise AudioDeviceError(self._device, f"read failed: {exc}") from exc
            now = time.monotonic()
            if n > 0:
                if self._in_outage:
                    self._restored()
                if block == 0 and self._wants is not None:
                    target = min(gather, max(self._call_wants(), params.period_frames))
                block = self._gather(data, n, block)
                self._served_s += n / rate
                last_data = now
                if self._wants is not None and block + n <= gather and block < target:
                    # Read until the sink has what it asked for (or nothing more is ready),
                    # then hand it over in one call.
                    continue
                delivered, block = block, 0
                self._deliver(delivered)
                if paced:
                    due = max(due + delivered / rate, now - params.buffer_s)
                elif self._frames - anchor_frames > (now - anchor_t) * rate + slack:
                    paced = True
                    due = now  # what was read ahead to find out stays ahead
                    log.info(
                        "capture %r delivers faster than real time (no clock); "
                        "pacing reads to real time",
                        self._device,
                    )
                elif now - anchor_t > _CLOCK_WINDOW_S:
                    anchor_t, anchor_frames = now, self._frames
                if not paced and n >= params.period_frames and self._wants is None:
                    # A whole period came: the next is not due for a period, so sleep until
                    # the device says it is, rather than spend a read to hear "not yet"
                    # (half the reads, and through PulseAudio a read is the dear part).
                    self._wait_device(poller, waker_fd, poll_ms)
            elif n < 0:
                # -EPIPE: pyalsaaudio already re-prepared the PCM; the next read restarts it.
                self._xruns += 1
                log.warning(
                    "capture %r overrun: audio lost (%d so far)",
                    self._device,
                    self._xruns,
                    extra={"XRUNS": self._xruns},
                )
            else:
                want = self._call_wants() if self._wants is not None else 0
                if block and (paced or block >= want):
                    self._deliver(block)
                    block = 0
                    want = self._call_wants() if self._wants is not None else 0
                    if not paced and now - anchor_t > _CLOCK_WINDOW_S:
                        anchor_t, anchor_frames = now, self._frames
                # else: a block short of what the sink asked for (the wake-up came a little
                # before its last frames) waits for them: the sink gets whole decisions.
                if paced:
                    # Nothing ready: the device does wait for its clock after all.
                    paced = False
                    anchor_t, anchor_frames = now, self._frames
                if now - last_data > self._stall_timeout:
                    raise AudioDeviceError(
                        self._device, f"no audio for {now - last_data:.1f} s (device stalled)"
                    )
                if want > 0:
                    # Sleep until the frames the sink needs are due, on a timer (through
                    # PulseAudio a poll on the PCM wakes two or three times a period), but
                    # never less than a period: a device that hands audio over in lumps
                    # must not cost a wake-up per sample trickling in. Nor more than half
                    # the device buffer: a late wake-up must not overrun it.
                    self._wakeups += 1
                    need = min(want - block, params.buffer_frames // 2)
                    ahead = max(need, params.period_frames) / rate
                    self._poll_waker(waker_only, min(ahead, poll_ms / 1000))
                else:
                    self._wait_device(poller, waker_fd, poll_ms)

    def _wait_device(self, poller: select.poll, waker_fd: int, poll_ms: int) -> None:
        self._wakeups += 1
        for fd, _ in poller.poll(poll_ms):
            if fd == waker_fd:
                self._waker.reset()

    def _call_wants(self) -> int:
        try:
            assert self._wants is not None
            return self._wants()
        except Exception:
            log.exception("capture wants callback failed")
            return 0

    def _poll_waker(self, poller: select.poll, seconds: float) -> None:
        if poller.poll(max(1, round(seconds * 1000))):
            self._waker.reset()

    def _gather(self, data: bytes, n: int, at: int) -> int:
        """Put one period's chosen channel into the block at ``at``; return the new length."""
        if at + n > len(self._mono):
            grown = bytearray(2 * (at + n))  # the device chose a larger period
            grown[: 2 * at] = self._raw[: 2 * at]
            self._raw, self._mono = grown, np.frombuffer(grown, dtype=np.int16)
        self._frames += n
        if self._channels == 1:
            self._raw[2 * at : 2 * (at + n)] = data  # S16_LE into native int16 (LE on a Pi)
            return at + n
        frames = np.frombuffer(data, dtype="<i2", count=n * self._channels)
        np.copyto(self._mono[at : at + n], frames.reshape(n, self._channels)[:, self._channel])
        return at + n

    def _deliver(self, n: int) -> None:
        self._heartbeat = time.monotonic()
        try:
            self._sink(self._mono[:n])
        except Exception:
            self._sink_errors += 1
            # A bug downstream must not kill the microphone; log it without flooding.
            if self._sink_errors == 1 or self._sink_errors % 500 == 0:
                log.exception("capture sink failed (%d times)", self._sink_errors)
