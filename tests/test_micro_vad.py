"""The pymicro-vad adapter on real audio: espeak-ng speech against generated room noise; the
staged detector coasting through a turn's speech inside the real capture front end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStopped
from appliance.audio.micro_vad import FRAME_BYTES, MicroVad, SpeechStage
from appliance.config import GateSettings, listen_settings
from appliance.core.endpoint import Decision, Endpointer, EndpointSettings
from appliance.demo import speech_recording
from bench.turn_corpus import noise
from bench.wake_corpus import read_wav

DATA = Path(__file__).parent / "data" / "wake"


def probabilities(pcm: np.ndarray) -> np.ndarray:
    vad = MicroVad()
    data = pcm.astype(np.int16).tobytes()
    return np.array(
        [vad(data[i : i + FRAME_BYTES]) for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]
    )


def decisions(pcm: np.ndarray) -> list[Decision]:
    ep = Endpointer(EndpointSettings(use_hint=False))
    return [d for p in probabilities(pcm) if (d := ep.process(10, float(p))) is not None]


@pytest.mark.parametrize("clip", ["chatter", "follow_up"])
def test_espeak_speech_is_speech(clip: str) -> None:
    speech = read_wav(DATA / f"{clip}.wav").astype(np.float64)
    room = noise("pink", -50.0, len(speech) + 64000, seed=3)
    pcm = room.copy()
    pcm[16000 : 16000 + len(speech)] += speech
    probs = probabilities(pcm)
    assert (probs >= 0.5).mean() > 0.3
    assert decisions(pcm)[:2] == [Decision.START, Decision.STOP]


@pytest.mark.parametrize("kind", ["pink", "brown", "white", "hum", "fan"])
@pytest.mark.parametrize("level", [-60.0, -40.0])
def test_room_noise_is_not_speech(kind: str, level: float) -> None:
    pcm = noise(kind, level, 5 * 16000, seed=7)
    assert probabilities(pcm).max() < 0.3
    assert decisions(pcm) == []


def test_wrong_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="320-byte"):
        MicroVad()(bytes(480))


RATE = 16000


def through_frontend(pcm: np.ndarray, stage: SpeechStage) -> tuple[list[tuple[int, GateOutput]], bytes]:
    """The turn decisions (sample position after the call, output) and the audio sent, fed
    as the capture thread feeds the front end (``[gate]`` defaults: the micro detector)."""
    got: list[tuple[int, GateOutput]] = []
    sent: list[bytes] = []
    pos = 0

    def emit(o: GateOutput) -> None:
        if isinstance(o, AudioChunk):
            sent.append(o.pcm)
        else:
            got.append((pos, o))

    fe = FrontEnd(
        device_rate=RATE,
        settings=listen_settings(GateSettings()),
        chunk_ms=40,
        vad=None,
        emit=emit,
        speech=stage,
    )
    while pos + RATE // 100 <= len(pcm):
        n = max(fe.wants(), RATE // 100)
        chunk = pcm[pos : pos + n]
        pos += n
        fe.process(chunk)
    return got, b"".join(sent)


def voice_then(tail: np.ndarray) -> np.ndarray:
    """The shipped recording's voice (its silences cut) after 1 s of room, then ``tail``
    and 2 s of room; pink room noise at -50 dBFS under all of it."""
    speech = np.frombuffer(speech_recording()[0], dtype=np.int16).astype(np.float64)
    frames = speech[: len(speech) // 160 * 160].reshape(-1, 160)
    active = np.flatnonzero((frames * frames).mean(axis=1) > (32768 * 10 ** (-45 / 20)) ** 2)
    voice = speech[active[0] * 160 : (active[-1] + 1) * 160]
    dry = np.concatenate([np.zeros(RATE), voice, tail, np.zeros(2 * RATE)])
    wet = dry + noise("pink", -50.0, len(dry), seed=11)
    return np.clip(np.round(wet), -32768, 32767).astype(np.int16)


def test_the_model_coasts_through_a_turns_speech_and_the_turn_is_the_same() -> None:
    pcm = voice_then(np.zeros(0))
    always = SpeechStage(coast_max_ms=0)
    coasting = SpeechStage()
    turn, audio = through_frontend(pcm, always)
    assert [type(o).__name__ for _, o in turn] == ["SpeechStarted", "SpeechStopped"]
    # Same decisions at the same samples, the same audio sent, on a third fewer model runs.
    assert through_frontend(pcm, coasting) == (turn, audio)
    assert coasting.model_frames < 0.75 * always.model_frames


@pytest.mark.parametrize(("kind", "level"), [("white", -20.0), ("brown", -15.0)])
def test_a_loud_noise_after_speech_holds_a_turn_at_most_a_second_longer(
    kind: str, level: float
) -> None:
    """The model does not coast through a level that no longer swings like speech's."""
    pcm = voice_then(noise(kind, level, 4 * RATE, seed=3))
    ends = []
    for stage in (SpeechStage(coast_max_ms=0), SpeechStage()):
        got, _ = through_frontend(pcm, stage)
        ends.append(next(pos for pos, o in got if isinstance(o, SpeechStopped)))
    always, coasting = ends
    assert coasting <= always + RATE  # and the noise lasts 4 s
