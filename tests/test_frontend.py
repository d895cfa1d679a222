"""The capture front end on synthetic and recorded audio: pre-roll, gating, chunking, modes."""

from __future__ import annotations

import numpy as np

from appliance.audio.frontend import AudioChunk, FrontEnd, GateOutput, SpeechStarted, SpeechStopped
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings
from appliance.demo import speech_recording


def run(pcm: np.ndarray, rate: int, gate: GateSettings, period_ms: int = 10, **flags: bool) -> list[GateOutput]:
    out: list[GateOutput] = []
    fe = FrontEnd(
        device_rate=rate,
        gate=gate,
        chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms) if gate.mode == "vad" else None,
        emit=out.append,
    )
    for name, value in flags.items():
        setattr(fe, name, value)
    step = rate * period_ms // 1000
    for i in range(0, len(pcm) - step + 1, step):
        fe.process(pcm[i : i + step])
    return out


def recording() -> tuple[np.ndarray, int]:
    pcm, rate = speech_recording()
    return np.frombuffer(pcm, dtype=np.int16), rate


def test_vad_sends_one_turn_with_preroll_and_hangover() -> None:
    pcm, rate = recording()
    out = run(pcm, rate, GateSettings())
    starts = [o for o in out if isinstance(o, SpeechStarted)]
    stops = [o for o in out if isinstance(o, SpeechStopped)]
    assert len(starts) == 1 and len(stops) == 1
    assert starts[0].preroll_ms == 300
    sent = b"".join(o.pcm for o in out if isinstance(o, AudioChunk))
    assert stops[0].sent_ms == len(sent) // 48
    # Far less than the whole recording (4.8 s, 2.2 s of it silence) is sent.
    assert 1500 < stops[0].sent_ms < 4000
    chunks = [o for o in out if isinstance(o, AudioChunk)]
    assert all(len(c.pcm) == 40 * 48 for c in chunks[:-1])


def test_silence_and_noise_send_nothing() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000 * 3) * 30).astype(np.int16)  # about -60 dBFS room noise
    assert run(noise, 16000, GateSettings()) == []
    assert run(np.zeros(16000 * 3, dtype=np.int16), 16000, GateSettings()) == []


def test_stereo_48k_device_is_resampled_to_24k() -> None:
    pcm, rate = recording()
    import soxr

    up = soxr.resample(pcm, rate, 48000).astype(np.int16)
    out = run(up, 48000, GateSettings())
    chunks = [o for o in out if isinstance(o, AudioChunk)]
    assert chunks and all(len(c.pcm) == 40 * 48 for c in chunks[:-1])
    assert sum(isinstance(o, SpeechStarted) for o in out) == 1


def test_push_to_talk_streams_only_while_held() -> None:
    pcm, rate = recording()
    held = run(pcm[:16000], rate, GateSettings(mode="push_to_talk"), talking=True)
    assert isinstance(held[0], SpeechStarted)
    assert sum(len(o.pcm) for o in held if isinstance(o, AudioChunk)) >= 960 * 48
    assert run(pcm, rate, GateSettings(mode="push_to_talk")) == []


def test_muted_sends_nothing() -> None:
    pcm, rate = recording()
    assert run(pcm, rate, GateSettings(), muted=True) == []
    assert run(pcm, rate, GateSettings(mode="always"), muted=True) == []


def test_always_streams_everything() -> None:
    pcm, rate = recording()
    out = run(pcm, rate, GateSettings(mode="always"))
    sent = sum(len(o.pcm) for o in out if isinstance(o, AudioChunk)) // 48
    assert abs(sent - len(pcm) * 1000 // rate) <= 50
