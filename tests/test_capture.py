"""CaptureThread against real alsa-lib: exact samples through the ``file`` plugin, real-time
pacing and device trouble through PulseAudio null sinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from appliance.audio.alsa import AudioThread, Pcm, PcmParams
from appliance.audio.capture import BUFFER_S, CaptureThread
from appliance.errors import AudioDeviceError

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env"]  # the alsa_env and pulse_env fixtures


class Recorder:
    """A sink and an on_error that keep what they are given, for one capture thread."""

    def __init__(self, limit: int = 10**7) -> None:
        self.chunks: list[np.ndarray] = []
        self.count = 0
        self.limit = limit
        self.errors: list[AudioDeviceError | None] = []
        self.cpu: list[float] = []  # time.thread_time() of the capture thread at each period
        self.enough = threading.Event()
        self.changed = threading.Event()

    def sink(self, mono: np.ndarray) -> None:
        self.cpu.append(time.thread_time())
        if self.count < self.limit:
            self.chunks.append(mono.copy())  # the thread reuses its buffer
        self.count += len(mono)
        if self.count >= self.limit:
            self.enough.set()

    def on_error(self, err: AudioDeviceError | None) -> None:
        self.errors.append(err)
        self.changed.set()

    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


def make(rec: Recorder, device: str, **kw: Any) -> CaptureThread:
    args: dict[str, Any] = {
        "rate": 16000,
        "channels": 1,
        "channel": 0,
        "period_frames": 320,
    }
    args.update(kw)
    return CaptureThread(
        device=device,
        sink=rec.sink,
        on_error=rec.on_error,
        **args,
    )


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def closed_promptly(thread: CaptureThread) -> float:
    t0 = time.perf_counter()
    thread.close()
    return time.perf_counter() - t0


def test_mono_file_is_captured_sample_for_sample(alsa_env: AlsaEnv) -> None:
    speech = np.random.default_rng(7).integers(-20000, 20000, 8000, dtype=np.int16)
    alsa_env.write_mic(speech)
    rec = Recorder(limit=len(speech))
    thread = make(rec, "mic")
    thread.start()
    try:
        assert rec.enough.wait(3)
    finally:
        thread.close()
    np.testing.assert_array_equal(rec.samples()[: len(speech)], speech)
    assert rec.errors == []
    assert thread.xruns == 0


class OverrunOnce:
    """A real PCM whose ``read`` at call ``at`` reports an overrun the way pyalsaaudio does
    (-EPIPE, the PCM re-prepared; the periods the device dropped are gone). The rig's
    clocked devices cannot overrun (PulseAudio keeps a late reader's backlog), so this
    one read stands in for the device; everything else is the real PCM."""

    def __init__(self, pcm: Pcm, at: int) -> None:
        self._pcm = pcm
        self._at = at
        self.reads = 0

    def read(self) -> tuple[int, bytes]:
        self.reads += 1
        if self.reads == self._at:
            self._pcm.read()  # a period the overrun lost
            return -32, b""
        return self._pcm.read()

    def __getattr__(self, name: str) -> object:
        return getattr(self._pcm, name)


def test_an_overrun_is_counted_logged_and_survived(
    alsa_env: AlsaEnv, caplog: pytest.LogCaptureFixture
) -> None:
    ramp = (np.arange(16000) % 30000).astype(np.int16)  # each sample its index: gaps show
    alsa_env.write_mic(ramp)
    rec = Recorder(limit=8000)

    class Thread(CaptureThread):
        def _open(self, *args: Any, **kw: Any) -> tuple[Pcm, PcmParams]:
            pcm, params = super()._open(*args, **kw)
            return OverrunOnce(pcm, at=5), params  # type: ignore[return-value]  # a Pcm in all but name

    thread = Thread(device="mic", rate=16000, channels=1, channel=0, period_frames=320,
                    sink=rec.sink, on_error=rec.on_error)
    thread.start()
    try:
        assert rec.enough.wait(3)  # audio kept coming after the overrun
    finally:
        thread.close()
    assert thread.xruns == 1
    assert rec.errors == []  # not a device outage
    warnings = [r for r in caplog.records if "overrun" in r.getMessage()]
    assert len(warnings) == 1 and getattr(warnings[0], "XRUNS", None) == 1
    got = rec.samples()[:8000]
    # The four periods before it, then the lost one's gap, then the rest in order.
    np.testing.assert_array_equal(got[:1280], ramp[:1280])
    np.testing.assert_array_equal(got[1280:4000], ramp[1600:4320])


def test_channel_one_of_a_stereo_48k_device(alsa_env: AlsaEnv) -> None:
    n = 9600
    left = np.full(n, 1111, np.int16)
    right = (np.arange(n) % 20000 - 10000).astype(np.int16)
    alsa_env.write_mic(np.stack([left, right], axis=1))
    rec = Recorder(limit=n)
    thread = make(rec, "mic", rate=48000, channels=2, channel=1, period_frames=960)
    thread.start()
    try:
        assert rec.enough.wait(3)
    finally:
        thread.close()
    np.testing.assert_array_equal(rec.samples()[:n], right)


def test_unclocked_device_is_paced_to_real_time_and_costs_little_cpu(alsa_env: AlsaEnv) -> None:
    alsa_env.write_mic(np.zeros(16000 * 3, np.int16))
    rec = Recorder()
    thread = make(rec, "mic")
    thread.start()
    time.sleep(1.0)
    assert closed_promptly(thread) < 0.1
    audio_s = rec.count / 16000
    cpu_s = rec.cpu[-1] - rec.cpu[0]
    # Without pacing the file plugin hands over minutes of "audio" per second at 100 % CPU.
    # Paced, it gives a second of audio plus what its buffer holds at the start.
    assert 0.9 < audio_s < 1.25 + BUFFER_S, audio_s
    assert cpu_s < 0.05 * audio_s, f"{cpu_s * 1000:.1f} ms CPU for {audio_s:.2f} s of audio"
    assert thread.frames == rec.count


def test_clocked_capture_runs_at_real_time(pulse_env: PulseEnv) -> None:
    rec = Recorder()
    thread = make(rec, "pmic")
    thread.start()
    assert wait_for(lambda: rec.count > 0, 2)
    first = rec.count
    t0 = time.monotonic()
    time.sleep(1.0)
    frames, elapsed = rec.count - first, time.monotonic() - t0
    assert closed_promptly(thread) < 0.1
    assert abs(frames / elapsed - 16000) < 16000 * 0.05, frames / elapsed
    assert time.monotonic() - thread.heartbeat < 0.2
    assert rec.errors == []


def test_clocked_capture_with_wants_wakes_once_per_decision_and_loses_nothing(
    pulse_env: PulseEnv,
) -> None:
    # The sink needs 30 ms (480 frames) before it can decide anything: the thread should
    # sleep that long and hand over every ready 10 ms period in one call.
    rec = Recorder()
    thread = make(rec, "pmic", period_frames=160, wants=lambda: 480)
    thread.start()
    try:
        assert wait_for(lambda: rec.count > 0, 2)
        calls0, frames0, wakeups0 = len(rec.cpu), rec.count, thread.wakeups
        t0 = time.monotonic()
        time.sleep(1.5)
        calls, frames = len(rec.cpu) - calls0, rec.count - frames0
        wakeups, elapsed = thread.wakeups - wakeups0, time.monotonic() - t0
    finally:
        assert closed_promptly(thread) < 0.1
    assert abs(frames / elapsed - 16000) < 16000 * 0.05, frames / elapsed
    # Per period it would be 100 calls a second; at the sink's pace about 33.
    assert calls / elapsed < 45, calls / elapsed
    assert wakeups / elapsed < 45, wakeups / elapsed
    assert frames / calls >= 300, frames / calls
    assert rec.errors == []


def test_wake_cuts_a_sleep_in_a_block_short(pulse_env: PulseEnv) -> None:
    # Listening, the sink asks for 100 ms blocks; when the speaker starts (the loop calls
    # wake()) it wants every period at once, not after the rest of the block.
    want = [1600]
    rec = Recorder()
    thread = make(rec, "pmic", period_frames=160, wants=lambda: want[0])
    thread.start()
    try:
        assert wait_for(lambda: len(rec.cpu) > 3, 3)
        gaps = []
        for i in range(5):
            time.sleep(0.02 + 0.017 * i)  # somewhere in the 100 ms sleep
            calls, t0 = len(rec.cpu), time.monotonic()
            want[0] = 0
            thread.wake()
            assert wait_for(lambda c=calls: len(rec.cpu) > c, 1)  # type: ignore[misc]
            gaps.append(time.monotonic() - t0)
            want[0] = 1600
            wait_for(lambda c=calls: len(rec.cpu) > c + 2, 1)  # type: ignore[misc]
    finally:
        assert closed_promptly(thread) < 0.1
    # Without wake() the next hand-over comes when the block is due: 50 ms on average.
    assert sorted(gaps)[2] < 0.02, gaps
    assert rec.errors == []


def test_unclocked_capture_with_wants_is_paced_in_blocks(alsa_env: AlsaEnv) -> None:
    speech = np.random.default_rng(3).integers(-20000, 20000, 16000, dtype=np.int16)
    alsa_env.write_mic(speech)
    rec = Recorder()
    thread = make(rec, "mic", period_frames=160, wants=lambda: 480)
    thread.start()
    time.sleep(1.2)
    assert closed_promptly(thread) < 0.1
    audio_s = rec.count / 16000
    assert 0.9 < audio_s < 1.5 + BUFFER_S, audio_s
    np.testing.assert_array_equal(rec.samples()[: len(speech)][: rec.count], speech[: rec.count])
    sizes = [len(c) for c in rec.chunks]
    # Once the missing clock is noticed, reads are paced in blocks of what the sink wants.
    assert sizes[-5:] == [480] * 5, sizes[-10:]


def test_wake_does_not_read_an_unclocked_device_ahead_of_real_time(alsa_env: AlsaEnv) -> None:
    # A wake-up asks the sink again; it must not read the next block before it would have
    # been captured (each used to take a whole block at once: the push-to-talk press then
    # found its first half second already judged as "not talking").
    alsa_env.write_mic(np.zeros(16000 * 4, np.int16))
    rec = Recorder()
    thread = make(rec, "mic", period_frames=160, wants=lambda: 3840)  # 240 ms blocks
    thread.start()
    try:
        time.sleep(1.0)  # past the read-ahead that finds the missing clock
        first, t0 = rec.count, time.monotonic()
        while time.monotonic() - t0 < 1.0:
            thread.wake()
            time.sleep(0.02)
        read, elapsed = rec.count - first, time.monotonic() - t0
    finally:
        thread.close()
    assert read <= elapsed * 16000 + 3840 + 160, (read, elapsed)


def test_clocked_capture_hears_what_is_played_into_the_mic(pulse_env: PulseEnv) -> None:
    tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * 12000).astype(np.int16)
    rec = Recorder()
    thread = make(rec, "pmic")
    thread.start()
    assert wait_for(lambda: rec.count > 0, 2)
    feeder = pulse_env.feed(tone)
    assert feeder.wait(5) == 0
    time.sleep(0.2)
    thread.close()
    got = rec.samples().astype(np.float64)
    loud = np.flatnonzero(np.abs(got) > 3000)
    assert len(loud) > 0, "the fed tone never arrived"
    heard = got[loud[0] : loud[0] + 4000]
    ref = tone[: len(heard)].astype(np.float64)
    # Align on the first loud sample (within a quarter period of the tone), then compare shape.
    best = max(np.corrcoef(heard[:3900], ref[s : s + 3900])[0, 1] for s in range(0, 40))
    assert best > 0.99


def test_device_that_cannot_open_is_reported_once_and_retried_until_it_appears(
    alsa_env: AlsaEnv,
) -> None:
    alsa_env.remove(alsa_env.absent_file)
    rec = Recorder(limit=3200)
    thread = make(rec, "absent")
    thread.start()
    try:
        assert rec.changed.wait(2)
        assert isinstance(rec.errors[0], AudioDeviceError)
        assert rec.errors[0].device == "absent"
        time.sleep(0.7)  # at least one retry fails meanwhile: still a single report
        assert len(rec.errors) == 1
        assert thread.alive
        alsa_env.write_mic(np.full(16000, 7, np.int16), alsa_env.absent_file)
        assert wait_for(lambda: rec.errors[-1] is None, 3), rec.errors
        assert rec.enough.wait(2)
    finally:
        assert closed_promptly(thread) < 0.1
        alsa_env.remove(alsa_env.absent_file)
    assert len(rec.errors) == 2
    assert set(rec.samples()[:3200].tolist()) == {7}


def test_stalled_device_is_reported_and_picked_up_again(pulse_env: PulseEnv) -> None:
    rec = Recorder()
    thread = make(rec, "flakymic", stall_timeout=0.4)
    thread.start()
    try:
        assert wait_for(lambda: rec.count > 1600, 2)
        pulse_env.suspend("flaky", True)
        try:
            assert rec.changed.wait(2), "a stall was not noticed"
            rec.changed.clear()
            assert isinstance(rec.errors[0], AudioDeviceError)
            assert "stalled" in str(rec.errors[0])
            assert thread.alive
        finally:
            pulse_env.suspend("flaky", False)
        assert wait_for(lambda: rec.errors[-1] is None, 4), rec.errors
        resumed = rec.count
        assert wait_for(lambda: rec.count > resumed + 1600, 2)
    finally:
        assert closed_promptly(thread) < 0.1
    assert rec.errors[1:] == [None]


def test_channel_must_exist() -> None:
    with pytest.raises(ValueError, match="channel 2"):
        CaptureThread(
            device="mic",
            rate=16000,
            channels=2,
            channel=2,
            period_frames=320,
            sink=lambda _: None,
            on_error=lambda _: None,
        )


# --- the device-lifetime loop both audio threads share (AudioThread) --------------------------


class ScriptedThread(AudioThread):
    """An AudioThread on the ``mic`` file PCM whose serving goes as scripted: per opening,
    fail to open, fail with a bug, fail after a healthy while, or serve until close()."""

    kind = "scripted"

    def __init__(self, script: list[str]) -> None:
        super().__init__("mic")
        self.script = script
        self.opens: list[float] = []
        self.reports: list[str | None] = []
        self.closed = 0
        self.failed = 0

    def _open_device(self) -> tuple[Pcm, PcmParams]:
        self.opens.append(time.monotonic())
        if self.script[len(self.opens) - 1] == "no open":
            raise AudioDeviceError(self._device, "cannot open (scripted)")
        return self._open("capture", rate=16000, channels=1, period_frames=160, periods=4)

    def _serve(self, pcm: Pcm, params: PcmParams) -> None:
        self._restored()
        what = self.script[len(self.opens) - 1]
        if what == "bug":
            raise RuntimeError("a scripted bug")
        if what == "healthy, then fails":
            self._served_s = 2.0
            raise AudioDeviceError(self._device, "stalled (scripted)")
        self._stopping.wait()
        self._check_closing()

    def _outage(self, err: AudioDeviceError | None) -> None:
        self.reports.append(None if err is None else str(err))

    def _failed(self, params: PcmParams) -> None:
        self.failed += 1

    def _closed(self) -> None:
        self.closed += 1


def test_device_lifetime_reports_each_outage_once_and_backs_off(alsa_env: AlsaEnv) -> None:
    thread = ScriptedThread(["no open", "no open", "bug", "healthy, then fails", "serve"])
    thread.start()
    try:
        deadline = time.monotonic() + 6
        while len(thread.opens) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(thread.opens) == 5, thread.reports
    finally:
        thread.close()
    assert thread.reports == [
        "ALSA device 'mic': cannot open (scripted)",  # the second failure is not reported
        None,
        "ALSA device 'mic': internal error: a scripted bug",
        None,
        "ALSA device 'mic': stalled (scripted)",
        None,
    ]
    gaps = np.diff(thread.opens)
    # 0.5 s, 1 s, 2 s; then, after a healthy second of audio, 0.5 s again.
    assert 0.45 < gaps[0] < 0.9 and 0.95 < gaps[1] < 1.5 and 1.95 < gaps[2] < 2.6, gaps
    assert 0.45 < gaps[3] < 0.9, gaps
    assert (thread.failed, thread.closed) == (2, 3)  # close() closed the last device too
