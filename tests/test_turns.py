"""Turn-taking through the real capture front end (``[gate] detector = "micro"``, the
default): generated room noise opens no turn, speech at 10 dB SNR over it is sent whole with
its first syllable, a complete request ends within 500 ms of its last word, a request with a
pause after an incomplete phrase is one turn, a blip is discarded. Speech is
espeak-ng's (a test dependency), noise ``bench.turn_corpus``'s generators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from appliance.audio import prosody
from appliance.audio.frontend import (
    AudioChunk,
    FrontEnd,
    GateOutput,
    SpeechStarted,
    SpeechStopped,
)
from appliance.audio.micro_vad import SpeechStage
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings, listen_settings
from appliance.core.listen import Detector, ListenSettings
from bench.turn_corpus import KINDS, active_rms, noise
from bench.wake_corpus import synthesize

RATE = 16000
MARGIN = RATE * 50 // 1000


def run(
    pcm: np.ndarray,
    gate: GateSettings | None = None,
    settings: ListenSettings | None = None,
    hint: Callable[[np.ndarray], float] | None = None,
) -> list[tuple[int, GateOutput]]:
    """(sample position after the call, output), fed as the capture thread feeds it."""
    got: list[tuple[int, GateOutput]] = []
    pos = 0
    fe = FrontEnd(
        device_rate=RATE,
        settings=settings or listen_settings(gate or GateSettings()),
        chunk_ms=40,
        vad=None,
        emit=lambda o: got.append((pos, o)),
        hint=hint,
    )
    step = RATE // 100
    while pos + step <= len(pcm):
        n = max(fe.wants(), step)
        chunk = pcm[pos : pos + n]
        pos += n
        fe.process(chunk)
    return got


def mix(
    parts: list[np.ndarray | float], kind: str, level_db: float, snr_db: float = 10.0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Speech parts and silences (seconds) over ``kind`` noise, speech at ``snr_db``; and
    where each part lies."""
    pieces: list[np.ndarray] = [np.zeros(RATE)]
    where: list[tuple[int, int]] = []
    pos = RATE
    for p in parts:
        x = np.zeros(int(p * RATE)) if isinstance(p, float) else p.astype(np.float64)
        if not isinstance(p, float):
            where.append((pos, pos + len(x)))
        pieces.append(x)
        pos += len(x)
    pieces.append(np.zeros(2 * RATE))
    dry = np.concatenate(pieces)
    gain = 32768 * 10 ** ((level_db + snr_db) / 20) / active_rms(dry)
    wet = dry * gain + noise(kind, level_db, len(dry), seed=11)
    return np.clip(np.round(wet), -32768, 32767).astype(np.int16), where


@pytest.mark.parametrize("level", [-60.0, -50.0, -40.0])
def test_room_noise_opens_no_turn_and_costs_no_model(level: float) -> None:
    for kind in KINDS:  # pink, brown, white, hum, fan, air conditioning, mixtures
        pcm = np.round(noise(kind, level, 4 * RATE, seed=5)).astype(np.int16)
        assert run(pcm) == [], kind


def test_the_level_stage_keeps_the_model_asleep_in_steady_noise() -> None:
    stage = SpeechStage()
    pcm = np.round(noise("brown+fan+white", -45.0, 6 * RATE, seed=2)).astype(np.int16)
    for i in range(0, len(pcm), 3840):
        stage.feed(pcm[i : i + 3840], lambda p, lv, r: None, lambda: False, lambda f: None)
    assert stage.model_frames == 0


@pytest.mark.parametrize("kind", ["pink", "fan", "brown+fan+white"])
def test_speech_at_10_db_snr_is_sent_whole_as_one_turn(kind: str) -> None:
    speech = synthesize("what is the weather like tomorrow", "en-us+f3", 175)
    pcm, [(first, last)] = mix([speech], kind, -50.0)
    got = run(pcm)
    starts = [(pos, o) for pos, o in got if isinstance(o, SpeechStarted)]
    stops = [(pos, o) for pos, o in got if isinstance(o, SpeechStopped)]
    assert len(starts) == 1 and len(stops) == 1, got
    at, started = starts[0]
    # The pre-roll reaches back past the first syllable (synthesize keeps 50 ms around it).
    assert at - started.preroll_ms * RATE // 1000 <= first + MARGIN
    end, stopped = stops[0]
    assert not stopped.discarded and end >= last - MARGIN
    sent = sum(len(o.pcm) for _, o in got if isinstance(o, AudioChunk)) // 48
    assert stopped.sent_ms == sent >= (last - first) * 1000 // RATE


@pytest.mark.parametrize(
    ("head", "tail", "voice", "kind", "level"),
    [
        ("set a timer for,", "twelve minutes", "en+m3", "pink", -55.0),
        # pymicro-vad calls these second halves 150-300 ms late in a fan's noise: the level
        # resumes the turn before its 1000 ms for an incomplete phrase run out.
        ("play the song by,", "the beatles", "en+m3", "fan", -50.0),
        ("send a message to,", "my brother saying I am late", "en-us+f3", "fan", -50.0),
    ],
)
def test_a_pause_after_an_incomplete_phrase_is_one_turn(
    head: str, tail: str, voice: str, kind: str, level: float
) -> None:
    speed = 175 if voice == "en-us+f3" else 150
    parts: list[np.ndarray | float] = [
        synthesize(head, voice, speed), 0.7, synthesize(tail, voice, speed)
    ]
    pcm, where = mix(parts, kind, level)
    got = run(pcm)
    stops = [(pos, o) for pos, o in got if isinstance(o, SpeechStopped)]
    assert sum(isinstance(o, SpeechStarted) for _, o in got) == 1
    last = where[1][1] - MARGIN  # synthesize keeps 50 ms around the loud samples
    assert len(stops) == 1 and stops[0][0] >= last and not stops[0][1].discarded
    # The turn ended soon after the last word, and says how long after its speech ended (by
    # the detector's judgement: a final fricative is quiet, so never later than the last sound).
    end, stopped = stops[0]
    assert (end - last) * 1000 // RATE <= 1300
    assert 0 < stopped.silence_ms <= 1300 and end - stopped.silence_ms * RATE // 1000 <= last


QUIET = ("white", -70.0, 44.0)  # a quiet room, speech at -26 dBFS
NOISY = ("pink", -50.0, 10.0)


@pytest.mark.parametrize("room", [QUIET, NOISY], ids=["quiet", "10dB"])
@pytest.mark.parametrize(
    ("text", "voice", "speed"),
    [
        ("what time is it in Tokyo", "en+m3", 150),
        ("remind me to call my sister tonight", "en", 200),
        ("turn off the kitchen lights", "en", 200),
        # Both end at the bottom of the range, but the final pitch read as the last 30 ms
        # voiced with frames 35 dB down was a faint tail (Tokyo) or a last rise: 1000 ms.
        ("what time is it in Tokyo", "en-us+f3", 175),
        ("what is on my calendar today", "en-us+f3", 175),
    ],
)
def test_a_complete_request_ends_within_500_ms_of_its_last_word(
    text: str, voice: str, speed: int, room: tuple[str, float, float]
) -> None:
    # Each ends level or slightly rising but at the bottom of the voice's range: the slope
    # of its last pitch called them incomplete (1000 ms), where the pitch ends calls them
    # complete (end_complete_ms, 250).
    kind, level, snr = room
    pcm, [(_, last)] = mix([synthesize(text, voice, speed)], kind, level, snr)
    got = run(pcm)
    stops = [(pos, o) for pos, o in got if isinstance(o, SpeechStopped)]
    assert sum(isinstance(o, SpeechStarted) for _, o in got) == len(stops) == 1, got
    end, stopped = stops[0]
    assert not stopped.discarded
    assert 0 <= (end - (last - MARGIN)) * 1000 // RATE <= 500


@pytest.mark.parametrize(
    ("head", "tail", "room"),
    [
        ("send a message to,", "my brother saying I am late", QUIET),
        ("play the song by,", "the beatles", NOISY),
    ],
)
def test_the_pre_roll_holds_a_first_syllable_the_vad_is_late_on(
    head: str, tail: str, room: tuple[str, float, float]
) -> None:
    # pymicro-vad calls this voice's first word 300-400 ms late: the turn's start is dated
    # back to where the sound rose, and the pre-roll counts back from there.
    kind, level, snr = room
    parts: list[np.ndarray | float] = [
        synthesize(head, "en-us+f3", 175), 0.7, synthesize(tail, "en-us+f3", 175)
    ]
    pcm, where = mix(parts, kind, level, snr)
    got = run(pcm)
    starts = [(pos, o) for pos, o in got if isinstance(o, SpeechStarted)]
    assert len(starts) == 1, got
    at, started = starts[0]
    assert at - started.preroll_ms * RATE // 1000 <= where[0][0] + MARGIN


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("remind me to call my sister tonight", "pink"),
        ("what is the square root of one hundred and forty four", "aircon"),
    ],
)
def test_the_hint_runs_only_in_pauses_long_enough_to_need_it(text: str, kind: str) -> None:
    # Asked 50 ms before end_complete_ms, once, at the end; asked 120 ms into every pause (as
    # it was), it also ran on the stretches inside these phrases that the level calls quiet.
    pcm, [(_, last)] = mix([synthesize(text, "en", 200)], kind, -45.0)
    settings = listen_settings(GateSettings())
    early = replace(settings, endpoint=replace(settings.endpoint, hint_lead_ms=130))
    asked = {}
    for name, s in (("default", settings), ("at 120 ms", early)):
        calls: list[np.ndarray] = []

        def hint(recent: np.ndarray, calls: list[np.ndarray] = calls) -> float:
            calls.append(recent)
            return prosody.complete(recent)

        got = run(pcm, settings=s, hint=hint)
        assert sum(isinstance(o, SpeechStopped) for _, o in got) == 1
        asked[name] = len(calls)
    assert asked["default"] == 1 < asked["at 120 ms"]


def test_a_blip_of_speech_is_discarded() -> None:
    word = synthesize("hm", "en", 200)[: RATE * 150 // 1000]
    pcm, _ = mix([word], "white", -60.0, snr_db=20.0)
    got = run(pcm)
    stops = [o for _, o in got if isinstance(o, SpeechStopped)]
    assert sum(isinstance(o, SpeechStarted) for _, o in got) == len(stops) == 1
    assert stops[0].discarded


def test_webrtc_remains_reachable() -> None:
    speech = synthesize("turn off the kitchen lights", "en", 175)
    pcm, _ = mix([speech], "white", -70.0, snr_db=30.0)

    got: list[GateOutput] = []
    gate = GateSettings(detector=Detector.WEBRTC)
    fe = FrontEnd(
        device_rate=RATE,
        settings=listen_settings(gate),
        chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms),
        emit=got.append,
    )
    for i in range(0, len(pcm) - 160 + 1, 160):
        fe.process(pcm[i : i + 160])
    stops = [o for o in got if isinstance(o, SpeechStopped)]
    assert len(stops) == 1 and stops[0].silence_ms == 720  # the fixed hang-over
