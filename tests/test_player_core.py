"""The playback policy (``appliance.core.player``) on its own: positions, frames and "now" in,
steps and events out. Synchronous: no threads, no devices, no sleeps."""

from __future__ import annotations

import logging

import pytest

from appliance.core.player import (
    Admit,
    EndOfStream,
    Intake,
    Phase,
    PlaybackIdle,
    PlaybackStarted,
    PlaybackStopped,
    Player,
    Queued,
    Step,
    Stop,
)

SRC = 24000
MS = SRC // 1000  # source samples per ms


def player(prefill_ms: int = 60, device_rate: int = SRC) -> Player:
    return Player(source_rate=SRC, device_rate=device_rate, prefill=prefill_ms * MS)


def play(p: Player, samples: int, frames: int | None = None) -> None:
    """Take ``samples`` from the queue and write them (as ``frames`` device frames)."""
    p.fed(samples)
    p.written(samples if frames is None else frames)


def test_nothing_starts_until_the_prefill_is_queued() -> None:
    p = player(prefill_ms=100)
    p.receive(Queued(0, "a"))
    assert p.next_step(write_pos=50 * MS) is Step.WAIT
    assert not p.ready(50 * MS)
    assert p.ready(100 * MS)
    assert p.next_step(write_pos=100 * MS) is Step.START
    assert p.phase is Phase.PLAYING
    assert p.next_step(write_pos=100 * MS) is Step.WRITE
    assert list(p.events()) == []


def test_an_item_starts_when_its_first_sample_is_written() -> None:
    p = player()
    p.receive(Queued(0, "a"))
    p.receive(Queued(1000, "b"))
    assert p.next_step(2000) is Step.START
    p.fed(2000)
    assert list(p.events()) == []  # taken from the queue is not yet written
    p.written(1000)
    assert list(p.events()) == [PlaybackStarted("a")]
    p.written(1)
    assert list(p.events()) == [PlaybackStarted("b")]
    p.written(999)
    assert list(p.events()) == []


def test_an_item_announced_after_its_samples_went_out_starts_at_once() -> None:
    p = player()
    assert p.next_step(2000) is Step.START
    play(p, 2000)
    p.receive(Queued(0, "a"))
    assert list(p.events()) == [PlaybackStarted("a")]


def test_events_allocate_nothing_when_there_are_none() -> None:
    p = player()
    assert p.events() is p.events()


def test_what_was_heard_is_what_left_the_device() -> None:
    p = player()
    p.receive(Queued(0, "a"))
    p.next_step(4800)
    play(p, 4800)
    p.progress(delay=2400)  # the device still holds 100 ms
    assert p.played_ms("a") == 100
    p.progress(delay=0)
    assert p.played_ms("a") == 200


def test_device_frames_map_to_stream_positions_by_the_rate_ratio() -> None:
    p = player(device_rate=48000)
    p.receive(Queued(0, "a"))
    p.next_step(4800)
    play(p, 4800, frames=9600)
    p.progress(delay=4800)  # 100 ms at 48 kHz still in the device
    assert p.played_ms("a") == 100


def test_an_empty_queue_mid_reply_is_an_underrun_then_the_prefill_resumes() -> None:
    p = player(prefill_ms=50)
    p.receive(Queued(0, "a"))
    p.next_step(50 * MS)
    play(p, 50 * MS)
    assert p.ran_dry(now=0.0) is False
    assert (p.underruns, p.phase) == (1, Phase.REFILL)
    assert p.next_step(write_pos=80 * MS) is Step.REFILL  # 30 ms queued: short of 50
    assert p.next_step(write_pos=100 * MS) is Step.RESUME
    assert p.phase is Phase.PLAYING


def test_end_of_stream_resumes_a_refill_below_the_prefill() -> None:
    p = player(prefill_ms=50)
    p.receive(Queued(0, "a"))
    p.next_step(50 * MS)
    play(p, 50 * MS)
    p.ran_dry(now=0.0)
    p.receive(EndOfStream(60 * MS))
    assert p.ready(60 * MS)
    assert p.next_step(60 * MS) is Step.RESUME


def test_the_end_of_a_reply_drains_then_reports_idle_once() -> None:
    p = player()
    p.receive(Queued(0, "a"))
    p.receive(EndOfStream(500 * MS))
    assert p.next_step(500 * MS) is Step.START
    p.events()
    play(p, 500 * MS)
    assert p.ran_dry(now=0.0) is True
    assert p.phase is Phase.DRAINING and p.underruns == 0
    assert p.next_step(500 * MS) is Step.DRAIN
    assert p.padded(tail=0, period_frames=480) == 0  # 12000 frames: 25 whole periods
    assert p.padded(tail=100, period_frames=480) == 480
    p.drained()
    assert list(p.events()) == [PlaybackStarted("a"), PlaybackIdle()]
    assert p.played_ms("a") == 500
    assert p.next_step(500 * MS) is Step.WAIT
    assert list(p.events()) == []


def test_a_reply_shorter_than_the_prefill_plays_once_it_ends() -> None:
    p = player(prefill_ms=200)
    p.receive(Queued(0, "a"))
    assert p.next_step(30 * MS) is Step.WAIT
    p.receive(EndOfStream(30 * MS))
    assert p.next_step(30 * MS) is Step.START


def test_a_reply_without_audio_is_idle_at_once() -> None:
    p = player()
    p.receive(EndOfStream(0))
    assert p.next_step(0) is Step.WAIT
    assert list(p.events()) == [PlaybackIdle()]


def test_stop_while_playing_reports_the_item_heard_and_skips_what_was_queued() -> None:
    p = player()
    p.receive(Queued(0, "a"))
    p.receive(Queued(2400, "b"))
    p.receive(EndOfStream(7200))
    p.next_step(7200)
    play(p, 4800)
    p.events()
    p.receive(Stop(7200))
    assert p.stop_pending and p.next_step(7200) is Step.STOP
    skip_to = p.stopped(delay=1200, write_pos=9000)  # 50 ms of "b" still in the device
    assert skip_to == 7200  # what came after the stop is the next reply's
    assert p.read_pos == 7200 and p.phase is Phase.IDLE
    assert list(p.events()) == [PlaybackStopped("b", 50)]
    assert (p.played_ms("a"), p.played_ms("b")) == (100, 50)
    # The stop ended that reply: no idle for its end of stream.
    assert p.next_step(7200) is Step.WAIT
    assert list(p.events()) == []


def test_stop_before_anything_played_reports_the_queued_item_unheard() -> None:
    p = player(prefill_ms=500)
    p.receive(Queued(0, "a"))
    assert p.next_step(2400) is Step.WAIT
    p.receive(Stop(2400))
    assert p.next_step(2400) is Step.STOP
    assert p.stopped(delay=None, write_pos=2400) == 2400
    assert list(p.events()) == [PlaybackStopped("a", 0)]


def test_stops_before_the_player_acts_share_one_report() -> None:
    p = player(prefill_ms=500)
    p.receive(Queued(0, "a"))
    p.receive(Stop(100))
    p.receive(Queued(100, "b"))
    p.receive(Stop(300))
    assert p.stopped(delay=None, write_pos=300) == 300
    assert list(p.events()) == [PlaybackStopped("a", 0)]
    assert not p.stop_pending


def test_a_lost_device_takes_what_it_held_with_it() -> None:
    p = player()
    p.receive(Queued(0, "a"))
    p.next_step(4800)
    play(p, 4800)
    p.device_lost(delay=2400)
    assert p.played_ms("a") == 100
    assert p.phase is Phase.IDLE
    # Later progress cannot add to an item the failure closed.
    p.device_opened()
    p.progress(delay=0)
    assert p.played_ms("a") == 100


def test_without_a_device_queued_audio_is_discarded_and_its_reply_ends() -> None:
    p = player()
    p.receive(Queued(0, "lost"))
    p.receive(EndOfStream(960))
    assert p.discard_to(960) == 960
    assert list(p.events()) == [PlaybackIdle()]
    assert p.played_ms("lost") == 0
    p.receive(Queued(960, "b"))
    p.receive(EndOfStream(960 + 1440))
    assert p.next_step(960 + 1440) is Step.START


def test_underruns_are_all_counted_but_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.core.player")
    p = player(prefill_ms=10)
    for t in (0.0, 10.0, 30.0, 61.0, 70.0):
        p.next_step(p.read_pos + 10 * MS)
        play(p, 10 * MS)
        assert p.ran_dry(now=t) is False
        p.next_step(p.read_pos + 10 * MS)
    assert p.underruns == 5
    assert [r.getMessage() for r in caplog.records] == [
        "playback underrun (1 so far)",
        "playback underrun (4 so far, 3 in the last 61 s)",
    ]


def test_intake_admits_new_and_continued_items_and_drops_cancelled_ones() -> None:
    intake = Intake()
    assert intake.admit("a") is Admit.NEW_ITEM
    assert intake.admit("a") is Admit.SAME_ITEM
    assert intake.admit("b") is Admit.NEW_ITEM
    intake.stopped()
    assert intake.admit("a") is Admit.CANCELLED
    assert intake.admit("b") is Admit.CANCELLED
    assert intake.admit("c") is Admit.NEW_ITEM
    intake.stopped()
    assert intake.admit("c") is Admit.CANCELLED
