"""The daemon's audio engine on clocked devices, end to end.

The real ``Daemon`` runs in-process (asyncio) against the loopback ``RealtimeSimulator`` over
real websockets, with real alsa-lib devices through PulseAudio null sinks (``pulse_env``):
the microphone ``pmic`` hears what a test plays into the ``micfeed`` sink at real-time pace,
and the speaker ``spktap`` plays in real time while its ``file`` plugin writes every sample
that left the ALSA buffer to ``AlsaEnv.tap_file``. Assertions are on what the simulator
received, what reached the speaker tap, and the daemon's states and log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soxr
import waiting
from daemon_env import running as daemon_running
from signals import window_norms

from appliance.config import GateSettings, parse_config
from appliance.core.session import Action, Play, StateChanged, StopPlayback, TooShort
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import DEMO_KEY, speech_recording
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env"]  # the alsa_env and pulse_env fixtures

PERIOD_MS = 10  # the default [audio] period_ms
# Echo cancellation ([audio.processing], appliance.audio.aec) has tests of its own; here it
# is off so that the gate sees the microphone exactly as captured (the mic cannot hear the
# speaker in this setup, so there is no echo to cancel anyway).
NO_AEC = {"echo_cancellation": False}
TAP_BYTES_PER_MS = 48 * 2 * 2  # spktap opened at 48 kHz stereo S16


def speech() -> np.ndarray:
    pcm, rate = speech_recording()
    assert rate == 16000
    return np.frombuffer(pcm, dtype=np.int16)


def speech_span_ms(x: np.ndarray, rate: int = 16000) -> tuple[int, int]:
    """First and last 10 ms frame above -40 dBFS of the clean recording."""
    f = x.astype(np.float64)
    frame = rate // 100
    rms = np.sqrt(np.mean(f[: len(f) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 32768 * 10 ** (-40 / 20))
    return int(loud[0]) * 10, int(loud[-1] + 1) * 10


def speech_level() -> float:
    """RMS of the recording over its speech span."""
    x = speech()
    start, end = speech_span_ms(x)
    return float(np.sqrt(np.mean(x[start * 16 : end * 16].astype(np.float64) ** 2)))


def room_noise(seconds: float, snr_db: float = 20.0, seed: int = 0) -> np.ndarray:
    """White noise ``snr_db`` under the recording's speech level: the room the mic hears
    all the time (the issue's 20 dB SNR when speech plays over it)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(16000 * seconds)) * speech_level() * 10 ** (-snr_db / 20)
    return noise.astype(np.int16)


def find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, float]:
    """Where ``needle`` best matches inside ``haystack``: (offset, normalised correlation)."""
    a, b = haystack.astype(np.float64), needle.astype(np.float64)
    size = 1 << (len(a) + len(b)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    energy = window_norms(a, len(b))
    score = corr[: len(energy)] / (energy * np.linalg.norm(b) + 1e-9)
    at = int(np.argmax(score))
    return at, float(score[at])


class LogRecords(logging.Handler):
    """Every record of the ``appliance`` loggers while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    @contextlib.contextmanager
    def installed(self) -> Iterator[LogRecords]:
        logger = logging.getLogger("appliance")
        old = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old)


class TapWatcher:
    """Samples the speaker tap's size every 2 ms while the speaker plays.

    The tap grows, in real time, by what leaves the ALSA buffer; ``drop()`` then flushes the
    rest of the buffer into it at once (what was written but never heard) and it stops
    growing. ``heard_at_drop()`` finds that flush and returns the bounds of the tap's size
    just before it, in bytes."""

    def __init__(self, path: os.PathLike[str]) -> None:
        self._path = path
        self.samples: list[tuple[float, float, int]] = []  # (before, after, size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            before = time.monotonic()
            with contextlib.suppress(OSError):
                size = os.path.getsize(self._path)
                self.samples.append((before, time.monotonic(), size))

    def heard_at_drop(self, flush_bytes: int) -> tuple[float, float]:
        """(low, high) of the tap size at the drop: the last sample before the flush (a jump
        of at least ``flush_bytes``), plus what real-time playback could add until the
        first sample after it."""
        s = self.samples
        for j in range(len(s) - 1, 0, -1):  # the last jump: catching up after a stall jumps too
            if s[j][2] - s[j - 1][2] >= flush_bytes:
                low = s[j - 1][2]
                return low, low + (s[j][1] - s[j - 1][0]) * 1000 * TAP_BYTES_PER_MS
        raise AssertionError(f"no drop() flush in the tap: {[x[2] for x in s[-50:]]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class Harness:
    daemon: Daemon
    sim: RealtimeSimulator
    pulse: PulseEnv
    actions: list[tuple[float, Action]] = field(default_factory=list)

    def observe(self, action: Action) -> None:
        self.actions.append((time.monotonic(), action))

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.sim.received]

    def appended(self, events: list[dict[str, Any]] | None = None) -> np.ndarray:
        """The 24 kHz audio of the appends in ``events`` (default: all received so far)."""
        events = self.sim.received if events is None else events
        pcm = b"".join(
            base64.b64decode(e["audio"]) for e in events if e["type"] == "input_audio_buffer.append"
        )
        return np.frombuffer(pcm, dtype=np.int16)

    def states(self) -> list[State]:
        return [a.state for _, a in self.actions if isinstance(a, StateChanged)]

    async def until(self, what: str, ok: Callable[[], bool], timeout: float = 10.0) -> None:
        await waiting.until(ok, timeout, lambda: f"{what}; states {self.states()}, "
                                                 f"sent {sorted(set(self.types()))}")

    async def until_state(self, state: State, timeout: float = 10.0) -> None:
        await self.until(f"state {state.value}", lambda: self.daemon.session.state is state, timeout)

    async def feed(self, samples: np.ndarray, sink: str = "micfeed", latency_ms: int = 20) -> float:
        """Play ``samples`` (16 kHz) into the microphone sink; returns when it started."""
        t0 = time.monotonic()
        proc = self.pulse.feed(samples, sink=sink, latency_ms=latency_ms)
        # The feeder runs on its own; waiting for it must not block the daemon's loop.
        self._feeders.append(proc)
        return t0

    def __post_init__(self) -> None:
        self._feeders: list[Any] = []

    def reap(self) -> None:
        for proc in self._feeders:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@contextlib.asynccontextmanager
async def running(
    pulse: PulseEnv,
    *,
    gate: dict[str, object] | None = None,
    capture: str = "pmic",
    playback: str = "spktap",
    reply_pace: float = 4.0,
    noise: bool = True,
    processing: dict[str, object] | None = None,
    earcons: bool = True,
    ready: bool = True,
) -> AsyncIterator[Harness]:
    async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast", reply_pace=reply_pace) as sim:
        config = parse_config(
            {
                "realtime": {"url": sim.url},
                "audio": {
                    "capture_device": capture,
                    "capture_rate": 16000,
                    "playback_device": playback,
                    "playback_rate": 48000,
                    "playback_channels": 2,
                    "processing": NO_AEC if processing is None else processing,
                },
                "gate": gate or {},
                "gpio": {"enabled": False},
                "earcons": {"enabled": earcons},
            }
        )
        daemon = Daemon(config, ApiKey(DEMO_KEY, "test"))
        h = Harness(daemon, sim, pulse)
        daemon._observers.append(h.observe)
        if noise:
            # Continuous room noise from before the VAD starts, as in a real room.
            sink = "flaky" if capture == "flakymic" else "micfeed"
            await h.feed(room_noise(60), sink=sink, latency_ms=250)
        try:
            async with daemon_running(daemon):
                await h.until("started", lambda: h.daemon.session.state is not State.STARTING)
                if ready:
                    await h.until_state(State.READY)
                yield h
        finally:
            h.reap()


# --- one VAD turn, then a barge-in over its reply ---------------------------------------------


@dataclass
class Scenario:
    received: list[dict[str, Any]]
    before_speech: list[str]
    first_turn: list[dict[str, Any]]
    fed: np.ndarray
    heard_bounds: tuple[float, float]
    tap_final: int
    reply_ms: float
    states: list[State]
    logs: list[str]
    xruns: int


async def _vad_scenario(alsa: AlsaEnv, pulse: PulseEnv) -> Scenario:
    logs = LogRecords()
    with logs.installed():
        async with running(pulse) as h:
            await asyncio.sleep(1.0)  # the mic hears digital silence: nothing may be sent
            before = h.types()
            fed = speech()
            await h.feed(fed)
            await h.until("a committed turn", lambda: "response.create" in h.types(), 12)
            first_turn = list(h.sim.received)
            await h.until_state(State.SPEAKING)
            tap = TapWatcher(alsa.tap_file)
            try:
                await asyncio.sleep(1.0)
                # The user talks over the reply (the mic does not hear the speaker here).
                await h.feed(speech())
                await h.until(
                    "a truncate", lambda: "conversation.item.truncate" in h.types(), 5
                )
                await asyncio.sleep(0.3)
            finally:
                tap.close()
            assert any(isinstance(a, StopPlayback) for _, a in h.actions)
            plays = [a for _, a in h.actions if isinstance(a, Play)]
            reply_ms = sum(len(p.pcm) for p in plays if p.item_id == plays[0].item_id) / 48
            assert h.daemon.capture is not None
            xruns = h.daemon.capture.xruns
        return Scenario(
            received=list(h.sim.received),
            before_speech=before,
            first_turn=first_turn,
            fed=fed,
            # The ALSA buffer (4 periods) is what drop() flushes; a jump of 3 of them is
            # more than playback can add between two samples.
            heard_bounds=tap.heard_at_drop(3 * PERIOD_MS * TAP_BYTES_PER_MS),
            tap_final=os.path.getsize(alsa.tap_file),
            reply_ms=reply_ms,
            states=h.states(),
            logs=logs.messages(logging.INFO),
            xruns=xruns,
        )


@pytest.fixture(scope="module")
def vad_scenario(alsa_env: AlsaEnv, pulse_env: PulseEnv) -> Scenario:
    return asyncio.run(_vad_scenario(alsa_env, pulse_env))


def _appended(events: list[dict[str, Any]]) -> np.ndarray:
    pcm = b"".join(
        base64.b64decode(e["audio"]) for e in events if e["type"] == "input_audio_buffer.append"
    )
    return np.frombuffer(pcm, dtype=np.int16)


def test_silence_sends_nothing_and_a_turn_is_speech_plus_preroll_and_hangover(
    vad_scenario: Scenario,
) -> None:
    s = vad_scenario
    # A second of room noise (at -40 dBFS, far above the energy floor) sends nothing.
    assert s.before_speech == ["session.update"], s.before_speech
    types = [e["type"] for e in s.first_turn]
    assert types.count("input_audio_buffer.commit") == 1
    assert types.index("input_audio_buffer.commit") < types.index("response.create")
    sent_ms = len(_appended(s.first_turn)) / 24
    start, end = speech_span_ms(speech())
    gate = GateSettings()
    # Speech + pre-roll + the end of turn's silence: [gate] end_complete_ms if the last
    # phrase sounds complete, end_incomplete_ms if not.
    least = (end - start) + gate.preroll_ms + gate.end_complete_ms
    most = (end - start) + gate.preroll_ms + gate.end_incomplete_ms
    # The VAD's onset and release lag move the edges a little; the room noise around the
    # speech and the 600 ms quiet lead of the recording are not sent.
    assert least - 200 <= sent_ms <= most + 250, (sent_ms, least, most)


def levels_db(x: np.ndarray, rate: int) -> np.ndarray:
    """RMS level of each 10 ms block, in dBFS."""
    block = rate // 100
    f = x[: len(x) // block * block].astype(np.float64).reshape(-1, block)
    db: np.ndarray = 20 * np.log10(np.sqrt(np.mean(f**2, axis=1)) / 32768 + 1e-9)
    return db


def test_first_appended_audio_holds_the_speech_onset(vad_scenario: Scenario) -> None:
    s = vad_scenario
    sent = _appended(s.first_turn)
    fed24 = soxr.resample(s.fed, 16000, 24000).astype(np.int16)
    start, _ = speech_span_ms(speech())
    # The turn opens with room noise from before the speech, then the onset: the recording's
    # first 10 ms block 5 dB over the noise (-40 dBFS), 300 ms of pre-roll minus the
    # VAD's onset latency into the audio. Levels, not samples: the PulseAudio rig may skip
    # or repeat a few ms when a feeder stream joins.
    level = levels_db(sent[: 600 * 24], 24000)
    onset_ms = int(np.argmax(level > -35)) * 10
    assert 150 <= onset_ms <= 300, (onset_ms, level.round().tolist())
    assert level[: onset_ms // 10 - 2].max() < -37, level.round().tolist()
    # And it is the recording's onset that follows.
    probe = fed24[start * 24 : (start + 200) * 24]
    _, score = find(sent[: 700 * 24], probe)
    assert score > 0.6, score


def test_barge_in_stops_playback_and_truncates_at_what_the_speaker_played(
    vad_scenario: Scenario,
) -> None:
    s = vad_scenario
    after = s.received[len(s.first_turn) :]
    truncates = [e for e in after if e["type"] == "conversation.item.truncate"]
    assert len(truncates) == 1, [e["type"] for e in after]
    end_ms = truncates[0]["audio_end_ms"]
    low, high = (b / TAP_BYTES_PER_MS for b in s.heard_bounds)
    # Within a period of the tap. The tap is what was written less one ALSA buffer, so it
    # trails what really left the buffer by the buffer's free space at that moment: up to a
    # period, more only if the player thread ran late; hence one more period above.
    assert low - PERIOD_MS <= end_ms <= high + 2 * PERIOD_MS, (end_ms, low, high)
    # Playback stopped: after the flush of the ALSA buffer the tap grew no more, and it
    # holds far less than the whole reply.
    assert s.tap_final / TAP_BYTES_PER_MS <= high + 4 * PERIOD_MS + PERIOD_MS
    assert high < s.reply_ms - 1000, (high, s.reply_ms)
    # The reply was fully generated before the barge-in (4x real time): no cancel is due.
    assert "response.cancel" not in [e["type"] for e in after]
    assert not [m for m in s.logs if "server error" in m], s.logs
    assert State.LISTENING in s.states[s.states.index(State.SPEAKING) :]
    assert s.xruns == 0


# --- push-to-talk ----------------------------------------------------------------------------


async def _push_to_talk(pulse: PulseEnv) -> tuple[list[str], float, float, float, list[Action]]:
    # No earcons: the "speak now" cue would hold the turn back by its length.
    async with running(pulse, gate={"mode": "push_to_talk"}, earcons=False) as h:
        loop = asyncio.get_running_loop()
        await h.feed(speech())
        await asyncio.sleep(0.5)
        pressed = loop.time()
        h.daemon.set_talking(True)
        await asyncio.sleep(2.0)
        h.daemon.set_talking(False)
        released = loop.time()
        held_s = released - pressed
        await h.until("the commit", lambda: "input_audio_buffer.commit" in h.types(), 5)
        commit_ms = (loop.time() - released) * 1000
        await h.until("a committed turn", lambda: "response.create" in h.types(), 5)
        sent_ms = len(h.appended()) / 24
        await h.until_state(State.READY, 15)
        n = len(h.sim.received)
        h.daemon.set_talking(True)  # a tap: less than 100 ms of audio, a busy loop's
        await asyncio.sleep(0.02)  # late wake-up included
        h.daemon.set_talking(False)
        await h.until("the short press handled", lambda: len(h.sim.received) > n, 3)
        await asyncio.sleep(0.3)
        return h.types(), held_s * 1000, sent_ms, commit_ms, [a for _, a in h.actions]


def test_push_to_talk_commits_a_held_press_and_not_a_short_one(pulse_env: PulseEnv) -> None:
    types, held_ms, sent_ms, commit_ms, actions = asyncio.run(_push_to_talk(pulse_env))
    first = types[: types.index("response.create") + 1]
    assert first.count("input_audio_buffer.commit") == 1
    assert first[-2:] == ["input_audio_buffer.commit", "response.create"]
    # Everything captured while the button was held, within a period or two of the edges:
    # the turn's last, partial 100 ms chunk ("auto" in push-to-talk) went out at the release,
    # and the commit with it, not a chunk later.
    assert abs(sent_ms - held_ms) <= 60, (sent_ms, held_ms)
    assert commit_ms < 100, commit_ms
    # A tap: its audio is cleared, not committed, and the user gets the "too short" cue.
    rest = types[len(first) :]
    assert "input_audio_buffer.commit" not in rest and "response.create" not in rest, rest
    assert "input_audio_buffer.clear" in rest, rest
    assert any(isinstance(a, TooShort) for a in actions)


# --- device faults -----------------------------------------------------------------------------


async def _capture_device_loss(pulse: PulseEnv) -> tuple[list[State], list[str], list[str], str]:
    logs = LogRecords()
    with logs.installed():
        async with running(pulse, capture="flakymic") as h:
            await asyncio.sleep(0.5)
            pulse.suspend("flaky", True)
            try:
                await h.until_state(State.ERROR, 6)
                detail = next(
                    a.detail
                    for _, a in reversed(h.actions)
                    if isinstance(a, StateChanged) and a.state is State.ERROR
                )
                await asyncio.sleep(0.5)
            finally:
                pulse.suspend("flaky", False)
            await h.until_state(State.READY, 8)
            await h.feed(speech(), sink="flaky")
            await h.until("a turn after recovery", lambda: "response.create" in h.types(), 12)
            return h.states(), h.types(), logs.messages(logging.WARNING), detail


def test_capture_device_loss_shows_an_error_and_audio_resumes(pulse_env: PulseEnv) -> None:
    states, types, warnings, detail = asyncio.run(_capture_device_loss(pulse_env))
    assert "flakymic" in detail and "stalled" in detail, detail
    assert states.index(State.ERROR) < len(states) - 1
    after = states[states.index(State.ERROR) :]
    assert State.READY in after and State.LISTENING in after, after
    assert types.count("input_audio_buffer.commit") == 1
    assert any("capture 'flakymic' is back" in m for m in warnings), warnings


async def _playback_device_late(pulse: PulseEnv) -> tuple[list[State], str]:
    async with running(pulse, playback="latespk", ready=False) as h:
        await h.until_state(State.ERROR, 6)  # the speaker's sink does not exist yet
        detail = next(
            a.detail for _, a in reversed(h.actions) if isinstance(a, StateChanged)
        )
        module = pulse.add_sink("late")
        try:
            await h.until_state(State.READY, 10)  # plugged in: it opens, the error clears
        finally:
            pulse.remove_module(module)
        return h.states(), detail


def test_missing_speaker_shows_an_error_until_it_appears(pulse_env: PulseEnv) -> None:
    states, detail = asyncio.run(_playback_device_late(pulse_env))
    assert "latespk" in detail, detail
    assert states[-1] is State.READY and State.ERROR in states
