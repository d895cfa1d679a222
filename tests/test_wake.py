"""Wake-word gate mode: the detector on real (synthesized) recordings, the front end in
``[gate] mode = "wake"``, and the daemon end to end on clocked devices.

The recordings in ``tests/data/wake/`` were made with espeak-ng by ``bench/wake_corpus.py``
("okay nabu", a sentence without the wake word, a follow-up question); the question is the
demo's own recording ("What is the weather like in Paris today?").
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soxr
import waiting
from signals import window_norms

from appliance.audio.frontend import (
    AudioChunk,
    FrontEnd,
    GateOutput,
    SpeechStarted,
    SpeechStopped,
    WakeWindow,
)
from appliance.audio.vad import WebRtcVad
from appliance.audio.wake import PACKAGE, WakeWordDetector
from appliance.config import GateSettings, listen_settings, parse_config, session_settings
from appliance.core.listen import Control, GateMode
from appliance.core.session import Action, Send, Session, StateChanged, StopPlayback
from appliance.core.state import State
from appliance.credentials import ApiKey
from appliance.daemon import Daemon
from appliance.demo import DEMO_KEY, speech_recording
from appliance.errors import ConfigError
from appliance.transport import codec
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import PulseEnv

pytest_plugins = ["alsa_env"]

DATA = Path(__file__).parent / "data" / "wake"
RATE = 16000


def clip(name: str) -> np.ndarray:
    import wave

    with wave.open(str(DATA / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def question() -> np.ndarray:
    pcm, rate = speech_recording()
    assert rate == RATE
    return np.frombuffer(pcm, dtype=np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def join(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.int16)


def detections(detector: WakeWordDetector, pcm: np.ndarray) -> list[int]:
    """Where (ms into ``pcm``) the detector fired, fed in 10 ms periods."""
    hits = []
    for i in range(0, len(pcm) - 159, 160):
        if detector(pcm[i : i + 160]):
            hits.append((i + 160) // 16)
    return hits


def best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``b`` sliding over ``a`` (``b`` shorter)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if len(a) < len(b):
        a = np.concatenate([a, np.zeros(len(b) - len(a))])
    size = 1 << (len(a) + len(b)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    energy = window_norms(a, len(b))
    return float(np.max(np.abs(corr[: len(energy)]) / (energy * np.linalg.norm(b) + 1e-9)))


def to24(pcm: np.ndarray) -> np.ndarray:
    out: np.ndarray = soxr.resample(pcm, RATE, 24000).astype(np.int16)
    return out


def loud_part(pcm: np.ndarray) -> np.ndarray:
    """The clip from its first to its last 10 ms block above -40 dBFS."""
    f = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((f**2).mean(axis=1)) > 32768 * 10 ** (-40 / 20))
    return pcm[loud[0] * 160 : (loud[-1] + 1) * 160]


# --- the detector ---------------------------------------------------------------------------


def test_detects_the_wake_word_once_and_nothing_else() -> None:
    detector = WakeWordDetector("okay_nabu")
    assert detector.name == "Okay Nabu" and detector.cutoff == 0.85
    wake = clip("okay_nabu")
    hits = detections(detector, join(silence(2), wake, silence(1)))
    assert len(hits) == 1
    # It fires once the word is over, not before: at most 400 ms after its end.
    end_ms = 2000 + len(wake) // 16
    assert end_ms - 200 <= hits[0] <= end_ms + 400, (hits, end_ms)
    for other in (clip("chatter"), clip("follow_up"), question()):
        assert detections(WakeWordDetector("okay_nabu"), join(silence(0.5), other, silence(1))) == []


def test_the_model_sleeps_in_silence_and_wakes_in_time() -> None:
    detector = WakeWordDetector()
    hits = detections(detector, join(silence(5), clip("okay_nabu"), silence(0.5)))
    assert len(hits) == 1
    # 5 s of digital silence: the model ran for the first second and the word, no more.
    assert detector.steps > 600
    assert detector.model_steps < detector.steps - 350, (detector.model_steps, detector.steps)


def test_refractory_period() -> None:
    wake = clip("okay_nabu")
    twice = join(silence(0.5), wake, silence(1.5), wake, silence(1))
    assert len(detections(WakeWordDetector(refractory_ms=1000), twice)) == 2
    assert len(detections(WakeWordDetector(refractory_ms=5000), twice)) == 1


def test_echo_guard_asks_for_more_evidence() -> None:
    pcm = join(silence(0.5), clip("okay_nabu"), silence(1))
    plain = detections(WakeWordDetector(), pcm)
    guarded = WakeWordDetector()
    guarded.strict = True
    strict = detections(guarded, pcm)
    assert len(plain) == len(strict) == 1
    assert strict[0] - plain[0] >= 60  # two more 30 ms model steps above the cutoff


def test_cutoff_overrides_the_model() -> None:
    pcm = join(silence(0.5), clip("okay_nabu"), silence(1))
    assert detections(WakeWordDetector(cutoff=0.999), pcm) == []
    assert WakeWordDetector(cutoff=0.5).cutoff == 0.5


def test_custom_model_files(tmp_path: Path) -> None:
    pcm = join(silence(0.5), clip("okay_nabu"), silence(1))
    for name in ("okay_nabu.json", "okay_nabu.tflite"):
        shutil.copy(PACKAGE / "models" / name, tmp_path / name)
    by_manifest = WakeWordDetector(str(tmp_path / "okay_nabu.json"))
    assert by_manifest.cutoff == 0.85
    assert len(detections(by_manifest, pcm)) == 1
    bare = WakeWordDetector(str(tmp_path / "okay_nabu.tflite"))
    assert bare.cutoff == 0.9 and bare.name == "okay nabu"
    assert len(detections(bare, pcm)) == 1


def test_bad_models_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all" * 10)
    manifest = tmp_path / "broken.json"
    manifest.write_text('{"model": "garbage.tflite"}')
    missing = tmp_path / "missing.json"
    missing.write_text('{"model": "nowhere.tflite", "micro": {"probability_cutoff": 0.9, "sliding_window_size": 5}}')
    cases = {
        "hey_computer": "neither a built-in wake word (okay_nabu, hey_jarvis, hey_mycroft, alexa) nor a model file",
        str(garbage): "is not a TensorFlow Lite model",
        str(manifest): "is not a microWakeWord model manifest",
        str(missing): "no model file at",
    }
    for wake_word, words in cases.items():
        with pytest.raises(ConfigError) as err:
            WakeWordDetector(wake_word)
        assert err.value.key == "gate.wake_word"
        assert words in str(err.value), str(err.value)


def test_config_keys() -> None:
    g = parse_config({"gate": {"mode": "wake", "wake_word": "hey_jarvis", "follow_up_s": 0}}).gate
    assert (g.mode, g.wake_word, g.follow_up_s, g.wake_listen_s) == ("wake", "hey_jarvis", 0, 5.0)
    assert g.local_turns and not g.send_wake_word and g.wake_cutoff == 0.0
    for key, value in (("wake_cutoff", 1.5), ("wake_listen_s", 0), ("wake_word", ""), ("send_wake_word", "yes")):
        with pytest.raises(ConfigError) as err:
            parse_config({"gate": {"mode": "wake", key: value}})
        assert err.value.key == f"gate.{key}"


def test_a_bad_wake_word_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        '[audio]\ncapture_device = "nowhere"\nplayback_device = "nowhere"\n'
        '[gate]\nmode = "wake"\nwake_word = "hey_computer"\n[gpio]\nenabled = false\n'
    )
    env = {"INWORLD_API_KEY": DEMO_KEY, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert done.returncode == 78, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('appliance: gate.wake_word: "hey_computer" is neither'), done.stderr
    assert "Traceback" not in done.stderr


def test_check_loads_the_wake_word(tmp_path: Path) -> None:
    env = {"INWORLD_API_KEY": DEMO_KEY, "PATH": "/usr/bin:/bin"}
    outs = {}
    for wake_word in ("hey_jarvis", str(tmp_path / "missing.tflite")):
        cfg = tmp_path / "appliance.toml"
        cfg.write_text(f'[gate]\nmode = "wake"\nwake_word = "{wake_word}"\n[gpio]\nenabled = false\n')
        done = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "check", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )
        outs[wake_word] = done
    good = outs["hey_jarvis"]
    assert "ok: wake word 'Hey Jarvis' loads (probability cutoff 0.97)" in good.stdout, good.stdout
    assert "gate.wake_word" not in good.stderr
    bad = outs[str(tmp_path / "missing.tflite")]
    assert bad.returncode == 1
    assert f'problem: gate.wake_word: "{tmp_path / "missing.tflite"}" is neither' in bad.stderr, bad.stderr


# --- the session: listening at once, barge-in by name ------------------------------------------


def ready_session(**gate: Any) -> Session:
    s = Session(session_settings(parse_config({"gate": {"mode": "wake", **gate}})))
    s.connecting()
    s.connected()
    for event in ({"type": "session.created", "session": {"id": "sess_1"}}, {"type": "session.updated", "session": {}}):
        s.server_event(codec.decode(json.dumps(event)), 0.0)
    update = next(json.loads(codec.encode(a.event)) for a in s.take() if isinstance(a, Send))
    # The device ends the turns in wake mode, as in vad mode.
    assert update["type"] == "session.update"
    assert update["session"]["audio"]["input"]["turn_detection"] is None
    assert s.state is State.READY
    return s


def speaking(s: Session) -> None:
    s.server_event(codec.decode(json.dumps({"type": "response.created", "response": {"id": "resp_1"}})), 1.0)
    pcm = base64.b64encode(b"\x10\x00" * 2400).decode()
    delta = {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_a", "delta": pcm}
    s.server_event(codec.decode(json.dumps(delta)), 1.0)
    s.take()
    assert s.state is State.SPEAKING


def test_session_shows_listening_and_interrupts_by_name() -> None:
    s = ready_session()
    s.wake_window(True, 1.0, wake_word=True)
    assert [a for a in s.take() if isinstance(a, StateChanged)] == [StateChanged(State.LISTENING)]
    s.wake_window(False, 2.0)
    assert s.state is State.READY
    # The wake word while the agent speaks: stop the speaker, cancel, show listening.
    speaking(s)
    s.wake_window(True, 3.0, wake_word=True)
    actions = s.take()
    assert any(isinstance(a, StopPlayback) for a in actions)
    assert [a.event.type for a in actions if isinstance(a, Send)] == ["response.cancel"]
    assert s.state is State.LISTENING  # type: ignore[comparison-overlap]  # changed by the call above
    # The follow-up window (no wake word) never interrupts; with barge_in "off" nor does the name.
    quiet = ready_session(barge_in="off")
    speaking(quiet)
    quiet.wake_window(True, 3.0, wake_word=True)
    assert not any(isinstance(a, StopPlayback | Send) for a in quiet.take())


# --- the front end in wake mode --------------------------------------------------------------


class Run:
    """A wake-mode front end fed 10 ms periods; ``at`` maps a period index to a message
    from the loop (follow-up, earcon hold, mute)."""

    def __init__(self, **gate: Any) -> None:
        self.gate = GateSettings(mode=GateMode.WAKE, **gate)
        self.out: list[GateOutput] = []
        self.detector = WakeWordDetector(self.gate.wake_word)
        self.vad = WebRtcVad(self.gate.vad_aggressiveness, self.gate.vad_frame_ms)
        self.fe = FrontEnd(
            device_rate=RATE, settings=listen_settings(self.gate), chunk_ms=40, vad=self.vad, emit=self.out.append,
            wake=self.detector,
        )
        self.fed = 0  # periods

    def feed(self, pcm: np.ndarray, at: dict[int, Control] | None = None) -> None:
        for i in range(0, len(pcm) - 159, 160):
            if at and self.fed in at:
                self.fe.post(at[self.fed])
            self.fe.process(pcm[i : i + 160])
            self.fed += 1

    def sent(self) -> np.ndarray:
        return np.frombuffer(b"".join(o.pcm for o in self.out if isinstance(o, AudioChunk)), np.int16)

    def kinds(self) -> list[str]:
        names: list[str] = []
        for o in self.out:
            name = type(o).__name__
            if isinstance(o, WakeWindow):
                name += "+" if o.open else "-"
            if not names or names[-1] != name or name != "AudioChunk":
                names.append(name)
        return names


def test_speech_without_the_wake_word_sends_nothing_and_runs_no_vad() -> None:
    r = Run()
    r.feed(join(silence(0.5), clip("chatter"), silence(0.5), question(), clip("follow_up"), silence(1)))
    assert r.out == []
    assert r.fe.vad_calls == 0  # the VAD sleeps until the wake word
    assert r.detector.model_steps > 0


def test_wake_word_then_question_is_one_turn_without_the_wake_word() -> None:
    r = Run()
    wake, q = clip("okay_nabu"), question()
    r.feed(join(silence(1), wake, silence(0.3), q, silence(1.5)))
    assert r.kinds() == ["WakeWindow+", "SpeechStarted", "AudioChunk", "SpeechStopped"]
    assert r.out[0] == WakeWindow(True, True)
    start = next(o for o in r.out if isinstance(o, SpeechStarted))
    stop = next(o for o in r.out if isinstance(o, SpeechStopped))
    sent = r.sent()
    assert stop.sent_ms == len(sent) // 24 and not stop.cancelled
    # The question went up whole, from its onset; the wake word did not.
    spoken = loud_part(q)
    assert best_correlation(sent, to24(spoken[: RATE // 2])) > 0.9
    assert best_correlation(sent, to24(spoken)) > 0.9
    assert best_correlation(sent, to24(loud_part(wake))) < 0.5
    # The pre-roll reaches back only to the detection, not the configured 300 ms before
    # where the question's sound rose (up to 500 ms before the onset decision).
    assert start.preroll_ms <= 300 + 500
    # About the question's speech plus pre-roll and hang-over, nothing like the whole feed.
    assert len(sent) / 24 < len(q) / 16 + 300 + 700


def test_send_wake_word_puts_it_ahead_of_the_question() -> None:
    r = Run(send_wake_word=True)
    wake, q = clip("okay_nabu"), question()
    r.feed(join(silence(1), wake, silence(0.3), q, silence(1.5)))
    assert r.kinds() == ["WakeWindow+", "SpeechStarted", "AudioChunk", "SpeechStopped"]
    sent = r.sent()
    assert best_correlation(sent, to24(loud_part(wake))) > 0.9
    assert best_correlation(sent, to24(loud_part(q))) > 0.9
    # The wake word comes first, and the silence before it was not sent.
    assert best_correlation(sent[: len(wake) * 3 // 2 + 2400], to24(loud_part(wake))) > 0.9
    assert len(sent) / 24 < (len(wake) + len(q)) / 16 + 300 + 700


def test_the_window_runs_out_when_nobody_speaks() -> None:
    r = Run(wake_listen_s=2.0)
    r.feed(join(silence(0.5), clip("okay_nabu"), silence(3)))
    assert r.out == [WakeWindow(True, True), WakeWindow(False)]
    assert r.sent().size == 0
    # Asleep again: speech now is not sent.
    r.feed(join(question(), silence(1)))
    assert r.out == [WakeWindow(True, True), WakeWindow(False)]


def test_follow_up_window_needs_no_wake_word() -> None:
    r = Run(follow_up_s=3.0)
    r.feed(join(silence(0.5), clip("okay_nabu"), silence(0.3), question(), silence(1.5)))
    turns = r.kinds().count("SpeechStarted")
    assert turns == 1
    before = len(r.out)
    # Without a follow-up window the answer is not sent ...
    r.feed(join(clip("follow_up"), silence(1)))
    assert len(r.out) == before
    # ... inside one it is, and the window is shown as open first.
    r.feed(join(silence(0.5), clip("follow_up"), silence(1.5)), at={r.fed + 10: Control.FOLLOW_UP})
    new = r.out[before:]
    assert new[0] == WakeWindow(True, False)
    assert [type(o) for o in new if not isinstance(o, AudioChunk)] == [WakeWindow, SpeechStarted, SpeechStopped]
    sent = np.frombuffer(b"".join(o.pcm for o in new if isinstance(o, AudioChunk)), np.int16)
    assert best_correlation(sent, to24(loud_part(clip("follow_up")))) > 0.9
    # An unanswered follow-up window closes after follow_up_s.
    r.feed(silence(4), at={r.fed + 10: Control.FOLLOW_UP})
    assert r.out[-2:] == [WakeWindow(True, False), WakeWindow(False)]


def test_the_wake_earcon_is_never_pre_roll() -> None:
    """The cue the mic hears right after the wake word (the earcon hold) is not sent."""
    r = Run()
    t = np.arange(int(RATE * 0.25)) / RATE
    beep = (8000 * np.sin(2 * np.pi * 880 * t)).astype(np.int16)
    r.feed(join(silence(1), clip("okay_nabu"), silence(0.3)))
    assert r.out == [WakeWindow(True, True)]
    r.feed(
        join(beep, silence(0.05), question(), silence(1.5)),
        at={r.fed: Control.EARCON_HOLD, r.fed + 30: Control.EARCON_RELEASE},
    )
    sent = r.sent()
    assert best_correlation(sent, to24(loud_part(question()))) > 0.9
    assert best_correlation(sent, to24(beep)) < 0.5


def test_mute_closes_the_window() -> None:
    r = Run()
    r.feed(join(silence(0.5), clip("okay_nabu"), silence(0.2)))
    assert r.out == [WakeWindow(True, True)]
    r.fe.post(Control.MUTE_ON)
    r.feed(join(question(), silence(0.5)))
    assert r.out == [WakeWindow(True, True), WakeWindow(False)]


# --- end to end: the daemon, the simulator, clocked devices -----------------------------------


async def _wake_scenario(pulse: PulseEnv) -> dict[str, Any]:
    actions: list[tuple[float, Action]] = []
    async with RealtimeSimulator(api_key=DEMO_KEY, profile="fast") as sim:
        config = parse_config(
            {
                "realtime": {"url": sim.url},
                "audio": {
                    "capture_device": "pmic",
                    "capture_rate": 16000,
                    "playback_device": "pspk",
                    "playback_rate": 24000,
                    # What was sent is compared with the recordings sample by sample; the
                    # echo canceller (tested on its own) would alter it.
                    "processing": {"echo_cancellation": False},
                },
                "gate": {"mode": "wake"},
                "gpio": {"enabled": False},
            }
        )
        daemon = Daemon(config, ApiKey(DEMO_KEY, "test"), observers=[lambda a: actions.append((time.monotonic(), a))])
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop))
        feeders: list[subprocess.Popen[bytes]] = []

        def appends() -> list[dict[str, Any]]:
            return [e for e in sim.received if e.get("type") == "input_audio_buffer.append"]

        async def until(what: str, ok: Callable[[], bool], timeout: float) -> None:
            def why() -> str:
                states = [a.state.value for _, a in actions if isinstance(a, StateChanged)]
                return f"{what}; states {states}"
            await waiting.until(ok, timeout, why)

        async def play(pcm: np.ndarray) -> None:
            """Into the microphone in real time, with a deep buffer: a feeder that the busy
            machine does not schedule for a while must not put gaps into what is heard."""
            proc = subprocess.Popen(
                ["pacat", "--playback", "--raw", "--device=micfeed", f"--rate={RATE}",
                 "--channels=1", "--format=s16le", "--latency-msec=300"],
                stdin=subprocess.PIPE, env=pulse.env(),
            )
            feeders.append(proc)
            assert proc.stdin is not None
            await asyncio.to_thread(proc.communicate, pcm.astype("<i2").tobytes(), 30)

        def state() -> State:
            return daemon.session.state

        result: dict[str, Any] = {}
        try:
            await until("ready", lambda: state() is State.READY, 20)
            # 1. Talk that does not address the device: nothing is sent.
            await play(join(clip("chatter"), silence(0.3), question(), silence(0.8)))
            result["appends_without_wake_word"] = len(appends())
            result["state_without_wake_word"] = state().value
            # 2. The wake word: listening at once, the wake earcon (the user waits for it),
            # then the question.
            wake_at = time.monotonic()
            feed_q = asyncio.create_task(play(join(clip("okay_nabu"), silence(0.8), question(), silence(0.5))))
            await until("listening", lambda: state() is State.LISTENING, 5)
            result["listening_after_s"] = time.monotonic() - wake_at
            result["earcons"] = list(daemon.earcons.played)
            # What the loop told the front end (the cue's hold, while the cue plays).
            controls = daemon.controls
            await until("the cue's hold", lambda: controls.earcon, 2)
            held_at = time.monotonic()
            await until("the end of the cue's hold", lambda: not controls.earcon, 3)
            result["cue_hold_s"] = time.monotonic() - held_at
            await feed_q
            await until("a committed turn", lambda: "response.create" in [e.get("type") for e in sim.received], 10)
            first = list(sim.received)
            # 3. The reply plays; when it ends the follow-up window opens (listening again).
            await until("speaking", lambda: state() is State.SPEAKING, 10)
            await until("the follow-up window", lambda: state() is State.LISTENING, 20)
            await play(join(clip("follow_up"), silence(0.3)))
            await until(
                "a second turn",
                lambda: [e.get("type") for e in sim.received].count("response.create") == 2,
                10,
            )
            result["first"] = first
            result["all"] = list(sim.received)
            result["states"] = [a.state.value for _, a in actions if isinstance(a, StateChanged)]
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)
            for proc in feeders:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(5)
    return result


def audio_of(events: list[dict[str, Any]]) -> np.ndarray:
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e.get("type") == "input_audio_buffer.append")
    return np.frombuffer(pcm, dtype=np.int16)


def assert_contains(sent: np.ndarray, clip16: np.ndarray) -> None:
    """``sent`` holds the clip's first and last 400 ms (checked apart: on this shared machine
    the feeder process can stall, and a stall puts silence into the middle of what the
    clocked microphone hears)."""
    spoken = to24(loud_part(clip16))
    for part in (spoken[: 24 * 400], spoken[-24 * 400 :]):
        assert best_correlation(sent, part) > 0.9


def test_wake_mode_end_to_end(pulse_env: PulseEnv) -> None:
    r = asyncio.run(_wake_scenario(pulse_env))
    # Speech without the wake word: 0 bytes upstream, and the device stayed ready.
    assert r["appends_without_wake_word"] == 0
    assert r["state_without_wake_word"] == "ready"
    # The wake word shows listening at once and plays the wake earcon.
    assert r["listening_after_s"] < 2.5  # the word itself lasts ~1 s; detection follows it
    assert r["earcons"] == ["wake"]
    # One turn, with the question and without the wake word.
    types = [e.get("type") for e in r["first"]]
    assert types.count("input_audio_buffer.commit") == 1 and types.count("response.create") == 1
    sent = audio_of(r["first"])
    assert_contains(sent, question())
    assert best_correlation(sent, to24(loud_part(clip("okay_nabu")))) < 0.5
    # The follow-up question inside the window went up without a wake word.
    second = r["all"][len(r["first"]) :]
    assert [e.get("type") for e in second].count("response.create") == 1
    assert_contains(audio_of(second), clip("follow_up"))
    states = r["states"]
    assert states.count("speaking") >= 1 and states[-1] in ("thinking", "speaking", "listening")
    print(json.dumps({k: round(r[k], 2) for k in ("listening_after_s", "cue_hold_s")}))
