"""PlaybackThread against real alsa-lib: exact samples through the ``file`` plugin; barge-in
timing, what was heard, prefill and drain through PulseAudio null sinks."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soxr
from waiting import wait_until

from appliance.audio.playback import (
    PlaybackDeviceError,
    PlaybackDeviceRestored,
    PlaybackIdle,
    PlaybackStarted,
    PlaybackStopped,
    PlaybackThread,
    PlayerEvent,
)

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env"]  # the alsa_env and pulse_env fixtures

SRC = 24000


class Events:
    """on_event for one player: keeps (perf_counter, event) and lets a test wait for one."""

    def __init__(self) -> None:
        self.got: list[tuple[float, PlayerEvent]] = []
        self._cond = threading.Condition()

    def __call__(self, event: PlayerEvent) -> None:
        with self._cond:
            self.got.append((time.perf_counter(), event))
            self._cond.notify_all()

    def wait(self, kind: type, timeout: float = 3.0, after: int = 0) -> tuple[float, PlayerEvent]:
        """The first event of ``kind`` among those from index ``after`` on."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, event in self.got[after:]:
                    if isinstance(event, kind):
                        return at, event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind.__name__} within {timeout} s: {self.kinds()}")
                self._cond.wait(left)

    def kinds(self) -> list[object]:
        return [e for _, e in self.got]


def player(events: Events, device: str, **kw: int | float) -> PlaybackThread:
    args: dict[str, int | float] = {"rate": 24000, "channels": 1, "period_frames": 480}
    args.update(kw)
    thread = PlaybackThread(device=device, on_event=events, **args)  # type: ignore[arg-type]
    thread.start()
    return thread


def tone(ms: int, freq: float = 440.0, level: int = 12000, rate: int = SRC) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * level).astype(np.int16)


# --- unclocked: exact samples ----------------------------------------------------------------


def test_24k_mono_device_receives_the_items_byte_for_byte(alsa_env: AlsaEnv) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(-30000, 30000, 7000, dtype=np.int16)
    b = rng.integers(-30000, 30000, 5003, dtype=np.int16)
    events = Events()
    thread = player(events, "spk")
    try:
        thread.enqueue("a", a[:3000].tobytes())
        thread.enqueue("a", a[3000:].tobytes())
        thread.enqueue("b", b.tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert thread.played_ms("a") == 7000 * 1000 // SRC
    assert thread.played_ms("b") == 5003 * 1000 // SRC
    assert events.kinds() == [PlaybackStarted("a"), PlaybackStarted("b"), PlaybackIdle()]
    got = alsa_env.read_spk()
    sent = np.concatenate([a, b])
    np.testing.assert_array_equal(got[: len(sent)], sent)
    # The last period is padded with silence, never with stale buffer contents.
    assert len(got) - len(sent) < 480
    assert not got[len(sent) :].any()


def test_48k_stereo_device_receives_resampled_audio_on_both_channels(alsa_env: AlsaEnv) -> None:
    sent = tone(500, freq=440.0)
    events = Events()
    thread = player(events, "spk", rate=48000, channels=2, period_frames=960)
    try:
        thread.enqueue("a", sent.tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    got = alsa_env.read_spk(channels=2)
    assert 2 * len(sent) <= len(got) < 2 * len(sent) + 960
    np.testing.assert_array_equal(got[:, 0], got[:, 1])
    expected = soxr.resample(sent, SRC, 48000)
    left = got[: len(expected), 0].astype(np.float64)
    assert np.corrcoef(left, expected.astype(np.float64))[0, 1] > 0.999


def test_nothing_plays_until_the_prefill_is_queued(alsa_env: AlsaEnv) -> None:
    events = Events()
    thread = player(events, "spk", prefill_ms=100)
    try:
        thread.enqueue("a", tone(50).tobytes())
        time.sleep(0.15)
        assert events.kinds() == []
        thread.enqueue("a", tone(60).tobytes())
        events.wait(PlaybackStarted)
        # The reply is still streaming and the queue ran dry: an underrun, not the end.
        assert wait_until(lambda: thread.underruns == 1, 1)
        assert not any(isinstance(e, PlaybackIdle) for e in events.kinds())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert len(alsa_env.read_spk()) >= 110 * 24


def test_underruns_are_all_counted_but_logged_once_a_minute(
    alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # An unclocked device plays each delta at once and runs dry before the next one.
    caplog.set_level(logging.INFO, logger="appliance.core.player")
    events = Events()
    thread = player(events, "spk", prefill_ms=20)
    try:
        for _ in range(6):
            thread.enqueue("a", tone(40).tobytes())
            time.sleep(0.05)
        assert wait_until(lambda: thread.underruns >= 6, 1), thread.underruns
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    lines = [r.getMessage() for r in caplog.records if "underrun" in r.getMessage()]
    assert lines == ["playback underrun (1 so far)"]


def test_end_of_stream_plays_a_reply_shorter_than_the_prefill(alsa_env: AlsaEnv) -> None:
    events = Events()
    thread = player(events, "spk", prefill_ms=200)
    try:
        thread.enqueue("a", tone(30).tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert events.kinds() == [PlaybackStarted("a"), PlaybackIdle()]
    np.testing.assert_array_equal(alsa_env.read_spk()[: 30 * 24], tone(30))


def test_reply_without_audio_is_idle_at_once(alsa_env: AlsaEnv) -> None:
    events = Events()
    thread = player(events, "spk")
    try:
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert events.kinds() == [PlaybackIdle()]


def test_stop_before_anything_played_reports_the_queued_item_unheard(alsa_env: AlsaEnv) -> None:
    events = Events()
    thread = player(events, "spk", prefill_ms=500)
    try:
        thread.enqueue("a", tone(100).tobytes())
        thread.stop()
        _, stopped = events.wait(PlaybackStopped)
        assert stopped == PlaybackStopped("a", 0)
        assert thread.queued_ms == 0
        # Late audio for the interrupted item is not played; the next reply is.
        thread.enqueue("a", tone(100).tobytes())
        thread.enqueue("b", tone(40).tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert [e for e in events.kinds() if isinstance(e, PlaybackStarted)] == [PlaybackStarted("b")]
    assert len(alsa_env.read_spk()) < 60 * 24


def test_device_failing_mid_stream_is_reported_and_the_thread_survives(alsa_env: AlsaEnv) -> None:
    assert not alsa_env.broken_spk_file.parent.exists()
    events = Events()
    thread = player(events, "brokenspk")
    try:
        thread.enqueue("a", tone(500).tobytes())
        _, failed = events.wait(PlaybackDeviceError)
        assert isinstance(failed, PlaybackDeviceError)
        assert "brokenspk" in failed.message and "write failed" in failed.message
        thread.end_of_stream()  # what was queued went nowhere: the reply is over
        events.wait(PlaybackIdle)
        assert thread.alive
    finally:
        t0 = time.perf_counter()
        thread.close()
        assert time.perf_counter() - t0 < 0.1
    assert thread.played_ms("a") < 500


# --- clocked: PulseAudio null sinks -----------------------------------------------------------


def test_barge_in_stops_at_once_and_reports_what_was_heard(
    alsa_env: AlsaEnv, pulse_env: PulseEnv
) -> None:
    events = Events()
    thread = player(events, "spktap", rate=48000, channels=2, period_frames=960)
    period_ms = 20
    try:
        with pulse_env.record() as heard_file:
            thread.enqueue("a", np.full(SRC * 2, 3000, np.int16).tobytes())
            started_at, _ = events.wait(PlaybackStarted)
            time.sleep(0.6)
            # The tap lags the writes by exactly the ALSA buffer: what has left it for the server.
            tap_ms = os.path.getsize(alsa_env.tap_file) / 4 / 48
            stop_at = time.perf_counter()
            thread.stop()
            stopped_at, stopped = events.wait(PlaybackStopped)
            time.sleep(0.2)
        assert isinstance(stopped, PlaybackStopped)
        assert stopped.item_id == "a"
        # At once, not when the queue runs out (seconds away); the figure itself (well under
        # a millisecond) is measured by bench.audio, not asserted on a shared, loaded machine.
        assert stopped_at - stop_at < 0.05, f"{(stopped_at - stop_at) * 1000:.1f} ms"
        assert abs(stopped.played_ms - tap_ms) <= period_ms, (stopped.played_ms, tap_ms)
        wall_ms = (stop_at - started_at) * 1000
        assert abs(stopped.played_ms - wall_ms) <= 2 * period_ms, (stopped.played_ms, wall_ms)
        rendered = np.fromfile(heard_file, "<i2").reshape(-1, 2)[:, 0]
        rendered_ms = np.count_nonzero(np.abs(rendered) > 1000) / 48
        assert abs(stopped.played_ms - rendered_ms) <= period_ms, (stopped.played_ms, rendered_ms)
        assert thread.queued_ms == 0
    finally:
        thread.close()
    assert thread.played_ms("a") == stopped.played_ms


def test_idle_comes_when_the_sound_has_played_out(pulse_env: PulseEnv) -> None:
    events = Events()
    thread = player(events, "pspk", rate=48000, channels=2, period_frames=960)
    try:
        thread.enqueue("a", tone(500).tobytes())
        thread.end_of_stream()
        started_at, _ = events.wait(PlaybackStarted)
        idle_at, _ = events.wait(PlaybackIdle)
    finally:
        thread.close()
    # 500 ms of audio, plus at most the padded last period and the drain's polling.
    assert 0.45 < idle_at - started_at < 0.7, idle_at - started_at
    assert thread.played_ms("a") == 500


def test_a_short_sound_is_not_idle_before_it_has_lasted(pulse_env: PulseEnv) -> None:
    """An earcon's length through a sound server with the daemon's 10 ms periods: the
    device's 40 ms buffer empties while PulseAudio still holds the end of the sound (a
    0.2 s cue reported played out 0.17 s after it started; the earcon hold ends then)."""
    events = Events()
    thread = player(events, "pspk", rate=24000, channels=1, period_frames=240)
    lasted = []
    stalls = 0
    try:
        for i in range(6):
            n = len(events.got)
            thread.enqueue(f"cue{i}", tone(200).tobytes())
            thread.end_of_stream()
            started_at, _ = events.wait(PlaybackStarted, after=n)
            idle_at, _ = events.wait(PlaybackIdle, after=n)
            if any(isinstance(e, PlaybackDeviceError) for _, e in events.got[n:]):
                # Under load the private PulseAudio now and then stops taking a restarted
                # stream for seconds (in one full `make test` each, here and in the earcon
                # test): the player says so and recovers. That is the sound server's
                # failure, not a cue's length.
                events.wait(PlaybackDeviceRestored, after=n)
                stalls += 1
                continue
            lasted.append(idle_at - started_at)
            if len(lasted) == 3:
                break
    finally:
        thread.close()
    # 200 ms from the first write; the started event comes a little after that write.
    assert len(lasted) == 3 and stalls <= 1, (lasted, events.kinds())
    assert all(0.19 <= s < 0.4 for s in lasted), lasted


def test_prefill_delays_the_start_on_a_clocked_device(pulse_env: PulseEnv) -> None:
    events = Events()
    thread = player(events, "pspk", rate=48000, channels=2, period_frames=960, prefill_ms=120)
    try:
        first = time.perf_counter()
        for _ in range(6):  # 6 x 20 ms deltas, 30 ms apart: slower than real time
            thread.enqueue("a", tone(20).tobytes())
            time.sleep(0.03)
        started_at, _ = events.wait(PlaybackStarted)
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    # The start waits for the sixth delta (150 ms after the first), not for the first.
    assert started_at - first >= 0.14


def test_underrun_mid_reply_is_counted_and_playback_resumes(pulse_env: PulseEnv) -> None:
    events = Events()
    thread = player(events, "pspk", rate=48000, channels=2, period_frames=960)
    try:
        thread.enqueue("a", tone(100).tobytes())
        events.wait(PlaybackStarted)
        time.sleep(0.3)
        assert thread.underruns == 1
        thread.enqueue("a", tone(100).tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle)
    finally:
        thread.close()
    assert events.kinds() == [PlaybackStarted("a"), PlaybackIdle()]
    assert thread.played_ms("a") == 200


def test_stalled_device_is_reported_and_reopened(pulse_env: PulseEnv) -> None:
    events = Events()
    thread = player(events, "flakyspk", rate=16000, stall_timeout=0.4, period_frames=320)
    try:
        thread.enqueue("a", tone(3000).tobytes())
        events.wait(PlaybackStarted)
        time.sleep(0.3)
        pulse_env.suspend("flaky", True)
        try:
            _, failed = events.wait(PlaybackDeviceError, timeout=2)
            assert isinstance(failed, PlaybackDeviceError) and "stalled" in failed.message
        finally:
            pulse_env.suspend("flaky", False)
        events.wait(PlaybackDeviceRestored, timeout=3)
        count = len(events.got)
        thread.enqueue("b", tone(100).tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle, after=count)
    finally:
        thread.close()
    assert 0 < thread.played_ms("a") < 3000  # the stall closed it: final
    assert thread.played_ms("b") == 100


def test_device_missing_at_start_is_reported_and_used_once_it_appears(
    pulse_env: PulseEnv,
) -> None:
    events = Events()
    thread = player(events, "latespk", rate=48000, channels=2, period_frames=960)
    module = None
    try:
        _, failed = events.wait(PlaybackDeviceError)
        assert isinstance(failed, PlaybackDeviceError) and "latespk" in failed.message
        thread.enqueue("lost", tone(40).tobytes())  # nowhere to play it: discarded
        thread.end_of_stream()
        events.wait(PlaybackIdle)
        module = pulse_env.add_sink("late")
        events.wait(PlaybackDeviceRestored, timeout=3)
        count = len(events.got)
        thread.enqueue("b", tone(40).tobytes())
        thread.end_of_stream()
        events.wait(PlaybackIdle, after=count)
        assert thread.alive
    finally:
        thread.close()
        if module is not None:
            pulse_env.remove_module(module)
    assert PlaybackStarted("lost") not in events.kinds()
    assert PlaybackStarted("b") in events.kinds()
    assert thread.played_ms("lost") == 0
    assert thread.played_ms("b") == 40


def test_close_is_prompt_while_playing(pulse_env: PulseEnv) -> None:
    events = Events()
    thread = player(events, "pspk", rate=48000, channels=2, period_frames=960)
    thread.enqueue("a", tone(2000).tobytes())
    events.wait(PlaybackStarted)
    t0 = time.perf_counter()
    thread.close()
    assert time.perf_counter() - t0 < 0.1
    assert not thread.alive
