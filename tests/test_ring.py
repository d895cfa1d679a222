"""SampleRing: FIFO order across the wrap, overflow accounting, history, and one real
producer thread against one consumer thread."""

from __future__ import annotations

import threading

import numpy as np

from appliance.audio.ring import SampleRing


def ramp(start: int, n: int) -> np.ndarray:
    return (np.arange(start, start + n) % 32768).astype(np.int16)


def test_fifo_across_the_wrap() -> None:
    ring = SampleRing(10)
    out = np.zeros(10, np.int16)
    assert ring.write(ramp(0, 7)) == 7
    assert ring.read_into(out[:5]) == 5
    assert ring.write(ramp(7, 8)) == 8  # wraps: slots 7..9 then 0..4
    assert ring.available() == 10
    assert ring.read_into(out) == 10
    np.testing.assert_array_equal(out, ramp(5, 10))
    assert (ring.write_pos, ring.read_pos) == (15, 15)


def test_full_ring_writes_what_fits_and_counts_the_rest() -> None:
    ring = SampleRing(8)
    assert ring.write(ramp(0, 5)) == 5
    assert ring.write(ramp(5, 6)) == 3
    assert ring.overflow == 3
    assert ring.write(ramp(11, 1)) == 0
    assert ring.overflow == 4
    out = np.zeros(20, np.int16)
    assert ring.read_into(out) == 8
    np.testing.assert_array_equal(out[:8], ramp(0, 8))
    assert ring.read_into(out) == 0


def test_read_into_a_short_buffer_leaves_the_rest() -> None:
    ring = SampleRing(16)
    ring.write(ramp(0, 12))
    out = np.zeros(5, np.int16)
    assert ring.read_into(out) == 5
    assert ring.available() == 7
    assert ring.read_into(out) == 5
    np.testing.assert_array_equal(out, ramp(5, 5))


def test_last_returns_the_newest_samples_even_after_they_were_read() -> None:
    ring = SampleRing(10)
    ring.write(ramp(0, 8))
    ring.read_into(np.zeros(8, np.int16))
    ring.write(ramp(8, 5))  # wraps
    np.testing.assert_array_equal(ring.last(6), ramp(7, 6))
    np.testing.assert_array_equal(ring.last(100), ramp(3, 10))  # at most the capacity
    assert len(SampleRing(4).last(3)) == 0  # nothing written yet


def test_last_is_a_copy() -> None:
    ring = SampleRing(4)
    ring.write(ramp(0, 4))
    history = ring.last(2)
    ring.clear()
    ring.write(ramp(100, 4))
    np.testing.assert_array_equal(history, ramp(2, 2))


def test_clear_and_skip_to_discard_from_the_consumer_side() -> None:
    ring = SampleRing(32)
    ring.write(ramp(0, 10))
    assert ring.skip_to(4) == 4
    assert ring.skip_to(2) == 0  # never backwards
    out = np.zeros(3, np.int16)
    ring.read_into(out)
    np.testing.assert_array_equal(out, ramp(4, 3))
    assert ring.skip_to(1000) == 3  # clamped to what was written
    ring.write(ramp(10, 5))
    ring.clear()
    assert ring.available() == 0
    assert ring.read_pos == ring.write_pos == 15


def test_one_producer_thread_and_one_consumer_thread_keep_every_sample_in_order() -> None:
    ring = SampleRing(1000)
    total = 50_000
    received = np.zeros(total, np.int16)
    done = threading.Event()

    def produce() -> None:
        sent = 0
        rng = np.random.default_rng(1)
        while sent < total:
            n = min(int(rng.integers(1, 300)), total - sent)
            sent += ring.write(ramp(sent, n))  # retries what did not fit
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    got = 0
    buf = np.zeros(257, np.int16)
    while got < total:
        n = ring.read_into(buf)
        received[got : got + n] = buf[:n]
        got += n
        if n == 0 and done.is_set() and ring.available() == 0:
            break
    producer.join()
    assert got == total
    np.testing.assert_array_equal(received, ramp(0, total))


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def test_reclaim_gives_back_the_pages_of_played_audio_and_keeps_what_is_unread() -> None:
    rate = 24000
    ring = SampleRing(120 * rate, reclaim=True)  # the player's reply queue: 5.8 MB
    before = rss_kb()
    out = np.zeros(rate, np.int16)
    for second in range(100):  # replies that were played
        ring.write(ramp(second * rate, rate) | 1)
        ring.read_into(out)
    ring.write(ramp(0, 10 * rate) | 1)  # a reply not yet played, across the wrap
    grown = rss_kb() - before
    assert grown > 4000
    assert ring.reclaim() >= 100 * 2 * rate - 8192
    assert rss_kb() - before < grown - 4000
    rest = np.zeros(10 * rate, np.int16)
    assert ring.read_into(rest) == len(rest)
    np.testing.assert_array_equal(rest, ramp(0, 10 * rate) | 1)
    # The slots given back take writes as before.
    assert ring.write(ramp(5, 110 * rate)) == 110 * rate
    assert ring.read_into(rest) == len(rest)
    np.testing.assert_array_equal(rest, ramp(5, 10 * rate))


def test_a_plain_ring_has_nothing_to_reclaim() -> None:
    ring = SampleRing(1 << 16)
    ring.write(ramp(0, 1000))
    assert ring.reclaim() == 0
