"""The pyalsaaudio boundary shared by the capture and playback threads.

Owns: opening a PCM (always non-blocking, so no call can hang on a busy or dead device),
checking that the device really took the asked rate, channel count and format, and turning
``alsaaudio.ALSAAudioError`` into ``AudioDeviceError``. Also the two small tools both
threads need: a wake-up file descriptor to poll next to the PCM's own, the fixed reopen
backoff, and the device-lifetime loop both run (``AudioThread``).

Imports: alsaaudio, ``appliance.errors``.
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import alsaaudio

from appliance.errors import AudioDeviceError

Direction = Literal["capture", "playback"]

STATE_RUNNING: int = alsaaudio.PCM_STATE_RUNNING  # a value of Pcm.state()

AlsaError: type[Exception] = alsaaudio.ALSAAudioError


class Pcm(Protocol):
    """The part of ``alsaaudio.PCM`` (0.11) this package uses, typed."""

    def read(self) -> tuple[int, bytes]: ...
    def write(self, data: bytes | memoryview) -> int: ...
    def avail(self) -> int: ...
    def drop(self) -> int: ...
    def close(self) -> None: ...
    def state(self) -> int: ...
    def info(self) -> dict[str, Any]: ...
    def polldescriptors(self) -> list[tuple[int, int]]: ...
    def getrates(self) -> int | tuple[int, int] | list[int]: ...


@dataclass(frozen=True)
class PcmParams:
    """What the device actually accepted (may differ from the request in period sizes)."""

    rate: int
    """Frames per second."""
    channels: int
    """Interleaved channels per frame."""
    period_frames: int
    """Frames per period: the unit in which the device wakes us."""
    buffer_frames: int
    """Frames the device buffer holds: the most audio queued ahead of the listener."""

    @property
    def period_s(self) -> float:
        return self.period_frames / self.rate

    @property
    def buffer_s(self) -> float:
        return self.buffer_frames / self.rate


def open_pcm(
    device: str,
    direction: Direction,
    *,
    rate: int,
    channels: int,
    period_frames: int,
    periods: int = 4,
) -> tuple[Pcm, PcmParams]:
    """Open ``device`` non-blocking as S16_LE with exactly ``rate`` and ``channels``.

    pyalsaaudio silently settles for the nearest configuration the device offers, so the
    result is read back and compared: a mismatch is an ``AudioDeviceError`` naming the
    device, what was asked and what it gave.
    """
    pcm_type = alsaaudio.PCM_CAPTURE if direction == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        pcm = cast(
            Pcm,
            alsaaudio.PCM(
                type=pcm_type,
                mode=alsaaudio.PCM_NONBLOCK,
                device=device,
                rate=rate,
                channels=channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=period_frames,
                periods=periods,
            ),
        )
        info = pcm.info()
    except alsaaudio.ALSAAudioError as exc:
        raise AudioDeviceError(device, f"cannot open for {direction}: {exc}") from exc
    problems = []
    if int(info["rate"]) != rate:
        problems.append(f"asked {rate} Hz, got {info['rate']} Hz")
    if int(info["channels"]) != channels:
        problems.append(f"asked {channels} channels, got {info['channels']}")
    if int(info["format"]) != alsaaudio.PCM_FORMAT_S16_LE:
        problems.append(f"asked S16_LE, got {info.get('format_name')}")
    if problems:
        close_quietly(pcm)
        raise AudioDeviceError(device, f"{direction}: " + "; ".join(problems))
    params = PcmParams(
        rate=rate,
        channels=channels,
        period_frames=int(info["period_size"]) or period_frames,
        buffer_frames=int(info["buffer_size"]) or period_frames * periods,
    )
    return pcm, params


def close_quietly(pcm: Pcm) -> None:
    """Close a PCM that may already be broken; playback data still queued is dropped."""
    try:
        # pyalsaaudio's close() drains playback first; drop() makes that a no-op.
        pcm.drop()
    except AlsaError:
        pass
    try:
        pcm.close()
    except AlsaError:
        pass


def reopen_delays(first: float = 0.5, cap: float = 5.0) -> Iterator[float]:
    """0.5, 1, 2, 4, 5, 5, ... seconds: the waits between attempts to reopen a device.

    No jitter, unlike network reconnects: one appliance, one local device, no herd.
    """
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2.0)


class Waker:
    """An eventfd that a thread polls next to its PCM so another thread can wake it at once.

    ``wake()`` never blocks (the counter cannot fill up in practice), so it is safe to call
    from the asyncio loop.
    """

    def __init__(self) -> None:
        self._fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("waker is closed")
        return self._fd

    def wake(self) -> None:
        fd = self._fd
        if fd is not None:
            try:
                os.eventfd_write(fd, 1)
            except (BlockingIOError, OSError):
                pass  # already signalled, or closed by the owner racing with us

    def reset(self) -> None:
        """Consume pending wake-ups (called by the polling thread)."""
        fd = self._fd
        if fd is not None:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def set_os_thread_name(name: str) -> None:
    """Name the calling thread for the OS (Linux comm, 15 bytes); a no-op where unsupported."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_NAME = 15


# Audio delivered without trouble before the reopen backoff starts again from its shortest.
HEALTHY_S = 1.0


class Closing(BaseException):
    """Raised inside an audio thread when close() asked it to end (not an Exception, so
    that the catch-all that keeps the thread alive never swallows it)."""


class AudioThread(abc.ABC):
    """What the capture and playback threads share: a named daemon thread that stops on an
    Event plus a wake-up fd (so a thread blocked in poll() reacts at once), a join with a
    deadline that raises if it does not end, the heartbeat the watchdog reads, and the
    device's lifetime (``_run``).

    The lifetime: open the device, ``_serve`` it until close() or a failure; a failure
    (``AudioDeviceError``, or a bug: it must not silence the device for good) closes it,
    is reported once per outage through ``_outage`` and is followed by a reopen after the
    next backoff delay (``_rest``); the subclass calls ``_restored()`` when the device works
    again, which reports the outage's end. Audio served for ``HEALTHY_S`` resets the backoff.
    """

    kind = "audio"

    def __init__(self, device: str) -> None:
        self._device = device
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._named, name=f"{self.kind}:{device}", daemon=True)
        self._heartbeat = time.monotonic()
        # Thread-private: an outage is reported once, and ends at _restored().
        self._in_outage = False
        self._served_s = 0.0  # audio the current device handled since it was opened
        self._log = logging.getLogger(type(self).__module__)

    def _named(self) -> None:
        set_os_thread_name(self.kind)  # so top -H and /proc/PID/task show "capture"/"playback"
        self._run()

    def _open(
        self, direction: Direction, *, rate: int, channels: int, period_frames: int, periods: int
    ) -> tuple[Pcm, PcmParams]:
        """``open_pcm`` on this thread's device, logging (under the subclass's module) what
        the device gave; raises ``AudioDeviceError`` like it."""
        pcm, params = open_pcm(
            self._device,
            direction,
            rate=rate,
            channels=channels,
            period_frames=period_frames,
            periods=periods,
        )
        self._log.info(
            "%s %r open: %d Hz, %d ch, period %d, buffer %d frames",
            direction,
            self._device,
            params.rate,
            params.channels,
            params.period_frames,
            params.buffer_frames,
        )
        return pcm, params

    # --- the device's lifetime ----------------------------------------------------------------

    def _run(self) -> None:
        """The thread body: open, serve, report an outage once, reopen with backoff."""
        delays = reopen_delays()
        try:
            while True:
                self._check_closing()
                try:
                    pcm, params = self._open_device()
                except AudioDeviceError as err:
                    self._report_outage(err)
                    self._rest(next(delays))
                    continue
                self._served_s = 0.0
                try:
                    self._serve(pcm, params)
                except AudioDeviceError as err:
                    self._failed(params)
                    self._report_outage(err)
                except Exception as exc:
                    self._log.exception("%s %r failed unexpectedly", self.kind, self._device)
                    self._failed(params)
                    self._report_outage(AudioDeviceError(self._device, f"internal error: {exc}"))
                finally:
                    close_quietly(pcm)
                    self._closed()
                if self._served_s >= HEALTHY_S:
                    delays = reopen_delays()
                self._rest(next(delays))
        except Closing:
            pass

    @abc.abstractmethod
    def _open_device(self) -> tuple[Pcm, PcmParams]:
        """Open the device (``self._open``); raises ``AudioDeviceError``."""

    @abc.abstractmethod
    def _serve(self, pcm: Pcm, params: PcmParams) -> None:
        """Use the open device until close() (return or raise ``Closing``) or a failure
        (raise ``AudioDeviceError``)."""

    @abc.abstractmethod
    def _outage(self, err: AudioDeviceError | None) -> None:
        """Tell the owner the device failed (``err``) or works again (None)."""

    def _failed(self, params: PcmParams) -> None:  # noqa: B027 (an optional hook)
        """``_serve`` failed; the device is about to be closed."""

    def _closed(self) -> None:  # noqa: B027 (an optional hook)
        """The device was closed (after a failure, or at close())."""

    def _rest(self, seconds: float) -> None:
        """Wait out a reopen delay; raise ``Closing`` at once when close() is called."""
        if self._stopping.wait(seconds):
            raise Closing

    def _check_closing(self) -> None:
        if self._stopping.is_set():
            raise Closing

    def _report_outage(self, err: AudioDeviceError) -> None:
        """Report the first failure of an outage; later ones only go to the debug log."""
        if self._in_outage:
            self._log.debug("%s; still retrying", err)
            return
        self._in_outage = True
        self._log.warning("%s; retrying", err)
        self._outage(err)

    def _restored(self) -> None:
        """The device works again: report the end of an outage (once)."""
        if self._in_outage:
            self._in_outage = False
            self._log.warning("%s %r is back", self.kind, self._device)
            self._outage(None)

    # --- control (any thread) -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it; RuntimeError if it does not end in time."""
        self._stopping.set()
        self._waker.wake()
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.kind} thread for {self._device!r} did not stop")
        self._waker.close()

    @property
    def heartbeat(self) -> float:
        """``time.monotonic()`` of the thread's last progress (or of construction)."""
        return self._heartbeat

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
