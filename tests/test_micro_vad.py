"""The pymicro-vad adapter on real audio: espeak-ng speech against generated room noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.audio.micro_vad import FRAME_BYTES, MicroVad
from appliance.core.endpoint import Decision, Endpointer, EndpointSettings
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
