"""Earcons: shipped sounds, user files, the gate they must not open, and the real daemon.

The daemon test closes the acoustic loop for real: the microphone ``echomic`` is the monitor
of the PulseAudio sink the speaker ``spktap`` plays into, so the daemon hears every earcon
it plays, at real-time pace. The simulator must receive nothing and the session must not
notice, while the speaker tap shows the cues were played.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
import wave
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soxr
from daemon_env import StateLog, running
from gpiozero.pins.mock import MockFactory
from signals import best_match

from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStarted, SpeechStopped
from appliance.audio.playback import (
    PlaybackIdle,
    PlaybackStarted,
    PlaybackStopped,
    PlaybackThread,
    PlayerEvent,
)
from appliance.audio.vad import WebRtcVad
from appliance.config import (
    EARCON_NAMES,
    EarconSettings,
    GateSettings,
    listen_settings,
    parse_config,
)
from appliance.core.cues import (
    ECHO_TAIL_S,
    ERROR_CUE_DELAY_S,
    FALLBACK_S,
    Cues,
    EndOfStream,
    Enqueue,
    Hold,
    Route,
)
from appliance.core.listen import Control, Detector, GateMode
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.deadline import DeadlineTimer
from appliance.demo import DEMO_KEY, demo_config, speech_recording
from appliance.earcons import RATE, load_earcons, read_wav, shipped
from appliance.errors import ConfigError
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env", "gpio_env"]

KEY = "dGVzdDp0ZXN0LWtleQ=="


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples).tobytes())
    return path



# --- the sounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EARCON_NAMES)
def test_shipped_earcons_are_short_soft_and_click_free(name: str) -> None:
    with wave.open(str(shipped(name)), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    alarm = name == "alarm"  # rings across a room, repeated with pauses: longer and louder
    assert 0.08 <= len(x) / RATE <= (1.0 if alarm else 0.4)
    peak_db = 20 * np.log10(np.max(np.abs(x)) / 32768)
    assert (-4 < peak_db < -2) if alarm else (-10 < peak_db < -8)
    # Faded in and out: starts and ends at silence and stays near it for 0.5 ms (no click).
    edge, peak = RATE // 2000, np.max(np.abs(x))
    assert np.max(np.abs(x[:edge])) < 0.1 * peak and abs(x[0]) < 0.01 * peak
    assert np.max(np.abs(x[-edge:])) < 0.1 * peak and abs(x[-1]) < 0.01 * peak


def test_the_shipped_earcons_are_package_data() -> None:
    """A wheel (``make install``) carries them: a package-data glob matches each file."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["appliance"]
    for name in EARCON_NAMES:
        rel = shipped(name).relative_to(shipped(name).parents[2]).as_posix()
        assert rel == f"data/earcons/{name}.wav"
        # setuptools' "*" stops at "/", fnmatch's does not: compare the depth too.
        assert any(fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), globs


def test_the_sounds_differ_from_one_another() -> None:
    sounds = load_earcons(EarconSettings())
    assert set(sounds) == set(EARCON_NAMES)
    for a in EARCON_NAMES:
        for b in EARCON_NAMES:
            if a < b:
                x, y = (np.frombuffer(sounds[n], dtype=np.int16) for n in (a, b))
                short, long_ = sorted((x, y), key=len)
                assert best_match(long_, short) < 0.9, (a, b)


def test_a_user_wav_is_mixed_to_mono_and_resampled(tmp_path: Path) -> None:
    t = np.arange(int(48000 * 0.2)) / 48000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    path = write_wav(tmp_path / "beep.wav", np.stack([tone, tone], axis=1), 48000)
    pcm = np.frombuffer(read_wav(path, "earcons.mute"), dtype=np.int16)
    assert abs(len(pcm) - int(0.2 * RATE)) <= 2
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert np.argmax(spectrum) * RATE / len(pcm) == pytest.approx(1000, abs=10)
    sounds = load_earcons(EarconSettings(mute=str(path), error=""))
    assert sounds["mute"] == pcm.tobytes()
    assert "error" not in sounds  # "" is silent
    # Cues off leaves the alarm: turning cues off must not silence a timer.
    assert load_earcons(EarconSettings(enabled=False)).keys() == {"alarm"}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p / "missing.wav", "no such file"),
        (lambda p: write_wav(p / "x.wav", np.zeros(100, np.uint8), 8000, width=1), "16-bit"),
        (lambda p: write_wav(p / "x.wav", np.zeros(4 * 8000, np.int16), 8000), "3 s"),
        (lambda p: write_wav(p / "x.wav", np.zeros(0, np.int16), 8000), "no audio"),
        (lambda p: (p / "x.wav").write_text("not a wav") and p / "x.wav", "not a readable WAV"),
    ],
)
def test_a_bad_earcon_file_is_a_config_error_naming_the_key(
    tmp_path: Path, make: Callable[[Path], Path], says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_earcons(EarconSettings(mute=str(make(tmp_path))))
    assert err.value.key == "earcons.mute"
    assert says in str(err.value)


def test_earcon_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"earcons": {"error": "beep.wav"}})
    assert err.value.key == "earcons.error"
    with pytest.raises(ConfigError) as err:
        parse_config({"earcons": {"chime": "default"}})
    assert err.value.key == "earcons.chime"


def test_daemon_with_a_bad_earcon_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[gpio]\nenabled = false\n[earcons]\nmute = "{tmp_path}/none.wav"\n')
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
        env={"PATH": "/usr/bin:/bin", "INWORLD_API_KEY": KEY, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "earcons.mute" in result.stderr and "Traceback" not in result.stderr


# --- the gate must not open on a cue ---------------------------------------------------------


def run_frontend(
    fe: FrontEnd, samples24: np.ndarray, before: Callable[[int], None] | None = None
) -> None:
    """Feed 24 kHz samples to a 16 kHz front end in 10 ms periods."""
    x16 = soxr.resample(samples24, 24000, 16000).astype(np.int16)
    for n, i in enumerate(range(0, len(x16) - 159, 160)):
        if before is not None:
            before(n)
        fe.process(x16[i : i + 160])


def frontend(mode: str, out: list[GateOutput], detector: str = "micro") -> FrontEnd:
    gate = GateSettings(mode=GateMode(mode), detector=Detector(detector))
    vad = WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms) if mode == "vad" else None
    return FrontEnd(device_rate=16000, settings=listen_settings(gate), chunk_ms=40, vad=vad, emit=out.append)


@pytest.mark.parametrize("name", EARCON_NAMES)
def test_every_earcon_would_open_the_vad_gate_but_not_while_flagged(name: str) -> None:
    cue = np.frombuffer(load_earcons(EarconSettings())[name], dtype=np.int16)
    heard = np.concatenate([np.zeros(RATE // 2, np.int16), cue, np.zeros(RATE, np.int16)])
    unguarded: list[GateOutput] = []
    # webrtcvad takes the tones for speech (pymicro-vad does not: a second line of defence).
    run_frontend(frontend("vad", unguarded, "webrtc"), heard)
    assert any(isinstance(o, SpeechStarted) for o in unguarded)  # so the guard matters
    guarded: list[GateOutput] = []
    fe = frontend("vad", guarded, "webrtc")
    fe.post(Control.EARCON_HOLD)
    run_frontend(fe, heard)
    assert guarded == []
    assert fe.vad_calls > 0  # the VAD did hear it


def test_the_release_still_holds_the_cue_audio_a_late_capture_thread_judges_after_it() -> None:
    """The loop lets the gate go ``ECHO_TAIL_S`` after the cue played out; a capture thread
    running 0.4 s late (a busy core) judges the cue's last audio after that. The release
    names its moment, and the audio captured before it is still held; speech after it opens
    a turn."""
    cue = np.frombuffer(load_earcons(EarconSettings())["error"], dtype=np.int16)
    pcm, rate = speech_recording()
    speech = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 16000).astype(np.int16)
    cue16 = soxr.resample(cue, RATE, 16000).astype(np.int16)
    heard = np.concatenate([cue16, np.zeros(16000, np.int16), speech])
    release_at = 0.5 + len(cue) / RATE + ECHO_TAIL_S  # the cue starts 0.5 s in
    speech_from = 0.5 + (len(cue16) + 16000) / 16000
    lag = 0.4

    def starts(captured_from: float) -> list[float]:
        """When (capture time) each turn the front end opened began."""
        out: list[GateOutput] = []
        now = [0.0]
        gate = GateSettings(mode=GateMode.VAD, detector=Detector.WEBRTC)
        vad = WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms)
        fe = FrontEnd(
            device_rate=16000, settings=listen_settings(gate), chunk_ms=40, vad=vad,
            emit=out.append, clock=lambda: now[0],
        )
        fe.post(Control.EARCON_HOLD)
        for k in range(50):  # the room, on time: the capture clock
            now[0] = (k + 1) / 100
            fe.process(np.zeros(160, np.int16))
        opened: list[float] = []
        posted = False
        for i in range(len(heard) // 160):
            now[0] = 0.5 + (i + 1) / 100 + lag  # handed over `lag` after its capture
            if not posted and now[0] >= release_at:
                fe.post(Control.EARCON_RELEASE, captured_from)
                posted = True
            before = len(out)
            fe.process(heard[i * 160 : (i + 1) * 160])
            if any(isinstance(o, SpeechStarted) for o in out[before:]):
                opened.append(now[0] - lag)
        return opened

    # Let go at once (no moment), the late thread opens a turn on the cue.
    assert starts(-np.inf)[0] < release_at
    # Let go from its moment: the first turn is the user's.
    opened = starts(release_at)
    assert opened and opened[0] >= speech_from


def test_a_cue_does_not_cut_a_turn_under_way() -> None:
    pcm, rate = speech_recording()
    speech24 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000).astype(np.int16)
    plain: list[GateOutput] = []
    run_frontend(frontend("vad", plain), speech24)
    started = next(i for i, o in enumerate(plain) if isinstance(o, SpeechStarted))
    out: list[GateOutput] = []
    fe = frontend("vad", out)
    period_started: list[int] = []

    def flag_once_speaking(n: int) -> None:
        if out and not period_started:
            period_started.append(n)
            fe.post(Control.EARCON_HOLD)  # a cue starts playing mid-turn

    run_frontend(fe, speech24, flag_once_speaking)
    assert period_started and started < len(plain)
    stops = [o for o in out if isinstance(o, SpeechStopped)]
    assert [s.cancelled for s in stops] == [False]
    chunks = sum(isinstance(o, AudioChunk) for o in out)
    assert chunks == sum(isinstance(o, AudioChunk) for o in plain)  # nothing was cut


def test_push_to_talk_streams_only_after_the_cue() -> None:
    out: list[GateOutput] = []
    fe = frontend("push_to_talk", out)
    fe.post(Control.TALK_PRESSED)
    fe.post(Control.EARCON_HOLD)
    period = np.zeros(160, np.int16)
    for _ in range(20):
        fe.process(period)
    assert out == []
    fe.post(Control.EARCON_RELEASE)
    for _ in range(9):  # one period opens the turn, the next 80 ms stream
        fe.process(period)
    assert isinstance(out[0], SpeechStarted)
    assert sum(isinstance(o, AudioChunk) for o in out) == 2


# --- the rules, pure: time is an input ---------------------------------------------------------

CUE_S = 0.2  # the test sounds' length
SOUNDS = {name: bytes(int(CUE_S * RATE) * 2) for name in ("mute", "unmute", "error")}


def rules(sounds: dict[str, bytes] | None = None) -> Cues:
    return Cues(SOUNDS if sounds is None else sounds)


def test_a_cue_is_queued_with_its_own_end_of_stream_and_holds_the_gate() -> None:
    cues = rules()
    assert cues.request("mute", 10.0)
    assert cues.take() == [Hold(True), Enqueue("earcon:mute:1", SOUNDS["mute"]), EndOfStream()]
    assert cues.held
    # The player never reports (a device in outage): the fallback lets the gate go.
    due = cues.next_deadline()
    assert due is not None and due == pytest.approx(10.0 + CUE_S + FALLBACK_S)
    cues.tick(due - 0.01)
    assert cues.take() == [] and cues.held
    cues.tick(due)
    assert cues.take() == [Hold(False, due)] and not cues.held
    assert cues.next_deadline() is None
    assert list(cues.played) == ["mute"]


def test_silent_and_unknown_cues_do_nothing() -> None:
    cues = rules({"mute": SOUNDS["mute"]})
    assert not cues.request("unmute", 0.0)  # "" in the config: left out of the sounds
    assert not cues.request("chime", 0.0)
    assert cues.take() == [] and cues.next_deadline() is None and list(cues.played) == []


def test_the_gate_is_let_go_an_echo_tail_after_the_cue_played_out() -> None:
    cues = rules()
    cues.request("mute", 0.0)
    cues.take()
    assert cues.started("earcon:mute:1") is Route.SWALLOW
    assert cues.idle(0.21) is Route.SWALLOW  # the cue set the end-of-stream mark: its idle
    assert cues.take() == []  # still held: the room's echo and the capture buffers
    assert cues.next_deadline() == pytest.approx(0.21 + ECHO_TAIL_S)
    cues.tick(0.3 + ECHO_TAIL_S)  # late: the release still names its moment
    assert cues.take() == [Hold(False, 0.21 + ECHO_TAIL_S)]
    assert cues.next_deadline() is None


def test_a_second_cue_keeps_the_gate_held_until_it_played_out() -> None:
    cues = rules()
    cues.request("mute", 0.0)
    cues.request("unmute", 0.1)
    assert cues.take() == [
        Hold(True),
        Enqueue("earcon:mute:1", SOUNDS["mute"]),
        EndOfStream(),
        Enqueue("earcon:unmute:2", SOUNDS["unmute"]),
        EndOfStream(),
    ]
    assert cues.next_deadline() == pytest.approx(0.1 + CUE_S + FALLBACK_S)
    cues.idle(0.45)
    cues.tick(0.45 + ECHO_TAIL_S)
    assert cues.take() == [Hold(False, 0.45 + ECHO_TAIL_S)]


def test_a_cue_never_plays_over_the_agent() -> None:
    cues = rules()
    cues.reply_audio()
    assert not cues.request("mute", 0.0)
    assert cues.take() == [] and not cues.held
    # The reply's events are the session's; its idle ends the reply.
    assert cues.started("item_1") is Route.PASS
    cues.reply_ended()
    assert cues.idle(2.0) is Route.PASS
    assert cues.request("mute", 2.1)


def test_the_idle_belongs_to_whoever_set_the_end_of_stream_last() -> None:
    cues = rules()
    cues.request("mute", 0.0)
    cues.reply_audio()  # the agent starts right behind the cue
    cues.reply_ended()
    assert cues.idle(1.0) is Route.PASS  # the reply's mark came last: its idle
    cues.reply_audio()
    assert not cues.request("unmute", 1.1)  # the next reply still plays
    cues.reply_stopped()  # barge-in
    assert cues.request("unmute", 1.2)
    assert cues.idle(1.5) is Route.SWALLOW


def test_a_stop_that_catches_a_cue_answers_the_session_without_the_cue() -> None:
    cues = rules()
    cues.request("mute", 0.0)
    cues.take()
    cues.reply_stopped()  # the player drops what is queued, the cue too
    assert cues.stopped("earcon:mute:1", 0.05) is Route.PASS_WITHOUT_ITEM
    assert cues.next_deadline() == pytest.approx(0.05 + ECHO_TAIL_S)
    assert cues.stopped("item_7", 0.3) is Route.PASS
    cues.tick(0.3)
    assert cues.take() == [Hold(False, 0.05 + ECHO_TAIL_S)]


def test_the_error_cue_plays_once_after_a_while_offline_and_rearms_when_working() -> None:
    cues = rules()
    cues.state_changed(State.OFFLINE, 100.0)
    cues.state_changed(State.CONNECTING, 100.5)  # still not working: the wait goes on
    assert cues.next_deadline() == pytest.approx(100.0 + ERROR_CUE_DELAY_S)
    cues.tick(102.9)
    assert cues.take() == []
    cues.tick(103.0)
    assert [type(a) for a in cues.take()] == [Hold, Enqueue, EndOfStream]
    assert list(cues.played) == ["error"]
    cues.idle(103.3)
    cues.tick(103.3 + ECHO_TAIL_S)
    cues.state_changed(State.ERROR, 104.0)
    assert cues.next_deadline() is None  # once per outage
    cues.state_changed(State.READY, 110.0)
    cues.state_changed(State.OFFLINE, 200.0)
    assert cues.next_deadline() == pytest.approx(203.0)


def test_a_quick_reconnect_stays_silent() -> None:
    cues = rules()
    cues.state_changed(State.OFFLINE, 0.0)
    cues.state_changed(State.READY, 1.0)
    assert cues.next_deadline() is None
    cues.tick(10.0)
    assert cues.take() == [] and list(cues.played) == []


def test_the_error_cue_waits_for_the_agent_like_any_cue() -> None:
    cues = rules()
    cues.reply_audio()
    cues.state_changed(State.ERROR, 0.0)
    cues.tick(ERROR_CUE_DELAY_S)
    assert cues.take() == [] and list(cues.played) == []
    assert cues.next_deadline() is None


# --- the player: cues through the reply path, hidden from the session ------------------------


def test_earcons_play_on_the_reply_player_and_never_reach_the_session(alsa_env: AlsaEnv) -> None:
    """The rules driven as the daemon drives them, on the real player and a loop timer: the
    player's own event order (a cue's idle, the reply's) routed by them. No sleeps: each
    step waits for the events it needs."""
    sounds = load_earcons(EarconSettings())
    t = np.arange(int(0.3 * RATE)) / RATE
    reply = (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()

    async def main() -> tuple[list[object], list[bool], list[object]]:
        loop = asyncio.get_running_loop()
        seen: list[object] = []  # every player event
        passed: list[object] = []  # what would reach the session
        holds: list[bool] = []
        changed = asyncio.Event()
        cues = Cues(sounds)

        def apply() -> None:
            for action in cues.take():
                if isinstance(action, Hold):
                    holds.append(action.on)
                elif isinstance(action, Enqueue):
                    player.enqueue(action.item_id, action.pcm)
                else:
                    player.end_of_stream()
            timer.schedule(cues.next_deadline())
            changed.set()

        def tick(now: float) -> None:
            cues.tick(now)
            apply()

        def handle(ev: object) -> None:
            seen.append(ev)
            now = loop.time()
            route = Route.PASS
            if isinstance(ev, PlaybackStarted):
                route = cues.started(ev.item_id)
            elif isinstance(ev, PlaybackStopped):
                route = cues.stopped(ev.item_id, now)
            elif isinstance(ev, PlaybackIdle):
                route = cues.idle(now)
            if route is not Route.SWALLOW:
                passed.append(ev)
            apply()

        async def until(cond: Callable[[], bool]) -> None:
            while not cond():
                changed.clear()
                await asyncio.wait_for(changed.wait(), 5)

        def post(ev: PlayerEvent) -> None:  # on the player thread
            loop.call_soon_threadsafe(handle, ev)

        timer = DeadlineTimer(loop, tick)
        player = PlaybackThread(
            device="spk",
            rate=24000,
            channels=1,
            period_frames=240,
            on_event=post,
        )
        player.start()
        try:
            assert cues.request("mute", loop.time())
            apply()
            await until(lambda: not holds[-1] and any(isinstance(e, PlaybackIdle) for e in seen))
            # The agent speaks: a cue now is skipped, not queued behind or over it.
            cues.reply_audio()
            player.enqueue("item_1", reply)
            assert not cues.request("unmute", loop.time())
            cues.reply_ended()
            player.end_of_stream()
            await until(lambda: PlaybackIdle() in passed)  # the reply's idle is passed on
            assert cues.request("unmute", loop.time())
            apply()
            await until(lambda: not holds[-1])
        finally:
            timer.cancel()
            await asyncio.to_thread(player.close, 2.0)
        return seen, holds, passed

    seen, holds, passed = asyncio.run(main())
    assert any(isinstance(e, PlaybackStarted) for e in seen)  # the player did play them
    # The session would see the reply's events and none of the earcons'.
    assert passed == [PlaybackStarted("item_1"), PlaybackIdle()]
    assert holds == [True, False, True, False]  # held for each cue, then let go
    played = alsa_env.read_spk()
    for pcm in (sounds["mute"], reply, sounds["unmute"]):
        assert best_match(played, np.frombuffer(pcm, dtype=np.int16)) > 0.99


# --- the real daemon, hearing its own speaker -------------------------------------------------


def test_daemon_earcons_reach_the_speaker_but_not_the_simulator_or_the_session(
    pulse_env: PulseEnv, mock_pins: MockFactory, tmp_path: Path
) -> None:
    alsa = pulse_env.alsa
    sounds = load_earcons(EarconSettings())

    async def main() -> tuple[list[dict[str, object]], list[State], int, Daemon]:
        log = StateLog()
        states, ready = log.states, log.ready

        async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
            data = demo_config(sim.url)
            data["audio"] = {
                "capture_device": "echomic",  # hears exactly what the speaker plays
                "capture_rate": 16000,
                "playback_device": "spktap",
                "playback_rate": 24000,
                # No echo canceller: it would remove the cues from the microphone, and this
                # test is about the gate holding without one.
                "processing": {
                    "echo_cancellation": False,
                    "noise_suppression": False,
                    "auto_gain": False,
                },
            }
            data["gpio"] = {
                "led": "none",
                "talk_pin": "",
                "mute_pin": "GPIO27",
                "state_dir": str(tmp_path / "state"),
            }
            daemon = Daemon(parse_config(data), ApiKey(DEMO_KEY, "test"), observers=[log])
            async with running(daemon):
                await asyncio.wait_for(ready.wait(), 20)
                await asyncio.sleep(0.5)  # past the VAD's warm-up
                assert daemon.frontend is not None
                calls_before = daemon.frontend.vad_calls
                pin = mock_pins.pin(27)
                for _ in range(2):  # mute on (cue "mute"), mute off (cue "unmute")
                    await asyncio.to_thread(pin.drive_low)
                    await asyncio.sleep(0.05)
                    await asyncio.to_thread(pin.drive_high)
                    await asyncio.sleep(0.8)
                for name in ("too_short", "wake", "error"):  # heard unmuted, in VAD mode
                    assert daemon.cue(name)
                    await asyncio.sleep(0.8)
                heard = daemon.frontend.vad_calls - calls_before
                await asyncio.sleep(0.5)
            return list(sim.received), states, heard, daemon

    received, states, heard, daemon = asyncio.run(main())
    types = [e["type"] for e in received]
    assert "input_audio_buffer.append" not in types and "input_audio_buffer.commit" not in types
    # The microphone heard the cues: the VAD ran on them (in silence it does not run at all).
    # Some VAD frames, not a count: how many of a cue's frames land in the window varies.
    assert heard >= 3
    assert list(daemon.earcons.played) == ["mute", "unmute", "too_short", "wake", "error"]
    # The session saw the mute and nothing of the sounds: no turn, no playback.
    after_ready = states[states.index(State.READY) :]
    assert after_ready == [State.READY, State.MUTED, State.READY], states
    tap = alsa.read_spk(path=alsa.tap_file)
    for name in daemon.earcons.played:
        assert best_match(tap, np.frombuffer(sounds[name], dtype=np.int16)) > 0.99, name
