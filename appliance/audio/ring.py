"""A preallocated, lock-free, single-producer / single-consumer ring of int16 samples.

It owns the one handover point between an audio thread and the asyncio loop: the
capture thread writes microphone samples that the loop reads, and the loop writes reply
audio that the playback thread reads. Neither side ever waits for the other.

Why it is safe without a lock: positions are absolute sample counts that only grow, the
producer alone advances ``write_pos`` and only after copying the samples in, the consumer
alone advances ``read_pos`` and only after copying them out. Each position is a single
attribute store, atomic under the GIL, so the other side sees either the old or the new
value, and never a half-written sample. Nothing is allocated per call beyond numpy views.

A ring made with ``reclaim=True`` lives in an anonymous private mapping whose pages cost no
memory until written, and ``reclaim()`` hands the pages of slots holding nothing unread back
to the OS (the player's 120 s reply queue: resident is what replies need, not 5.8 MB).

Imports: numpy and the standard library.
"""

from __future__ import annotations

import mmap

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


class SampleRing:
    """A fixed-capacity FIFO of int16 samples for exactly one producer and one consumer."""

    def __init__(self, capacity: int, *, reclaim: bool = False) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, not {capacity}")
        self._map: mmap.mmap | None = None
        if reclaim:
            # Private: MADV_DONTNEED then frees the pages (a shared mapping keeps them).
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            self._map = mmap.mmap(-1, 2 * capacity, flags=flags)
            self._buf: Samples = np.frombuffer(self._map, dtype=np.int16)
        else:
            self._buf = np.zeros(capacity, dtype=np.int16)
        self._capacity = capacity
        self._write_pos = 0
        self._read_pos = 0
        self._overflow = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def write_pos(self) -> int:
        """Samples ever written (the stream position of the next sample to arrive)."""
        return self._write_pos

    @property
    def read_pos(self) -> int:
        """Samples ever consumed (the stream position of the next sample to read)."""
        return self._read_pos

    @property
    def overflow(self) -> int:
        """Samples the producer had to drop because the ring was full."""
        return self._overflow

    def available(self) -> int:
        """Samples written and not yet consumed."""
        return self._write_pos - self._read_pos

    # --- producer side ---------------------------------------------------------------------

    def write(self, samples: npt.NDArray[np.int16]) -> int:
        """Copy in as many samples as fit; count the rest in ``overflow``. Never blocks."""
        wpos = self._write_pos
        free = self._capacity - (wpos - self._read_pos)
        n = min(len(samples), free)
        if n < len(samples):
            self._overflow += len(samples) - n
        if n <= 0:
            return 0
        start = wpos % self._capacity
        first = min(n, self._capacity - start)
        self._buf[start : start + first] = samples[:first]
        if n > first:
            self._buf[: n - first] = samples[first:n]
        # Publish only after the copy: the consumer never sees a position ahead of its data.
        self._write_pos = wpos + n
        return n

    def last(self, n: int) -> Samples:
        """A copy of the newest ``n`` samples (fewer if fewer were ever written).

        Producer thread only: the consumer may have read them, but only the producer
        overwrites slots, so on its own thread the newest ``capacity`` samples are intact.
        """
        wpos = self._write_pos
        n = max(0, min(n, wpos, self._capacity))
        start = (wpos - n) % self._capacity
        first = min(n, self._capacity - start)
        if first == n:
            return self._buf[start : start + n].copy()
        return np.concatenate((self._buf[start:], self._buf[: n - first]))

    def reclaim(self) -> int:
        """Give back to the OS the whole pages of slots holding nothing unread (they read
        as zeros until written again); the bytes released. Producer thread only: the
        consumer reads only below ``write_pos`` and its position only grows, so the slots
        from ``write_pos`` up to a capacity past the read position it had are nobody's."""
        if self._map is None:
            return 0
        wpos = self._write_pos
        free = self._capacity - (wpos - self._read_pos)
        start = wpos % self._capacity
        first = min(free, self._capacity - start)
        released = self._release(2 * start, 2 * (start + first))
        if free > first:
            released += self._release(0, 2 * (free - first))
        return released

    def _release(self, begin: int, end: int) -> int:
        assert self._map is not None
        page = mmap.PAGESIZE
        begin = -(-begin // page) * page
        end = end // page * page
        if end <= begin:
            return 0
        self._map.madvise(mmap.MADV_DONTNEED, begin, end - begin)
        return end - begin

    # --- consumer side ---------------------------------------------------------------------

    def read_into(self, out: npt.NDArray[np.int16]) -> int:
        """Copy up to ``len(out)`` samples into the caller's buffer; return how many."""
        rpos = self._read_pos
        n = min(len(out), self._write_pos - rpos)
        if n <= 0:
            return 0
        start = rpos % self._capacity
        first = min(n, self._capacity - start)
        out[:first] = self._buf[start : start + first]
        if n > first:
            out[first:n] = self._buf[: n - first]
        # Free the slots only after the copy: the producer never overwrites unread data.
        self._read_pos = rpos + n
        return n

    def skip_to(self, pos: int) -> int:
        """Discard everything before stream position ``pos`` (clamped); return how many.

        Lets the consumer drop exactly what was queued before some moment (a barge-in)
        while keeping what the producer wrote after it.
        """
        rpos = self._read_pos
        target = min(max(pos, rpos), self._write_pos)
        self._read_pos = target
        return target - rpos

    def clear(self) -> None:
        """Discard everything written so far."""
        self._read_pos = self._write_pos
