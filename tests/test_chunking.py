"""Upstream chunk sizes by gate mode, and the end of a turn with long chunks.

In the gated modes the device ends the turn with a flush and a commit, so chunks are long
(100 ms, the service's recommended range is 60-100 ms); where the server's turn detection
listens ("always") they stay 40 ms. The last partial chunk of a turn must leave when the turn
ends, not a chunk later, and the end must be decided as early as with short chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.audio.frontend import (
    STREAM_PACE_MS,
    AudioChunk,
    FrontEnd,
    GateOutput,
    SpeechStarted,
    SpeechStopped,
)
from appliance.audio.vad import WebRtcVad
from appliance.config import (
    GATED_CHUNK_MS,
    STREAMED_CHUNK_MS,
    GateSettings,
    listen_settings,
    parse_config,
    upstream_chunk_ms,
)
from appliance.demo import speech_recording
from appliance.errors import ConfigError


def config(audio: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
    return {"realtime": {"url": "ws://localhost:1"}, "audio": audio, "gate": gate}


@pytest.mark.parametrize(
    ("mode", "period_ms", "expected"),
    [
        ("vad", 10, GATED_CHUNK_MS),
        ("push_to_talk", 10, GATED_CHUNK_MS),
        ("wake", 10, GATED_CHUNK_MS),
        ("always", 10, STREAMED_CHUNK_MS),
        ("vad", 20, 100),
        ("vad", 40, 80),  # the longest multiple of the period up to 100 ms
        ("always", 40, 40),
    ],
)
def test_auto_chunk_length_follows_the_gate_mode(mode: str, period_ms: int, expected: int) -> None:
    for audio in ({"period_ms": period_ms}, {"period_ms": period_ms, "chunk_ms": "auto"}):
        c = parse_config(config(audio, {"mode": mode}))
        assert c.audio.chunk_ms is None
        assert upstream_chunk_ms(c) == expected
    assert GATED_CHUNK_MS == 100 and STREAMED_CHUNK_MS == 40


@pytest.mark.parametrize("mode", ["vad", "always", "push_to_talk"])
def test_an_explicit_chunk_length_is_kept_in_every_mode(mode: str) -> None:
    c = parse_config(config({"chunk_ms": 60}, {"mode": mode}))
    assert upstream_chunk_ms(c) == 60


def test_a_bad_chunk_length_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r'audio\.chunk_ms: expected "auto" or a whole number'):
        parse_config(config({"chunk_ms": "long"}, {}))
    with pytest.raises(ConfigError, match=r"audio\.chunk_ms: expected a whole number from 20 to 100, got 120"):
        parse_config(config({"chunk_ms": 120}, {}))


def recording() -> tuple[np.ndarray, int]:
    pcm, rate = speech_recording()
    return np.frombuffer(pcm, dtype=np.int16), rate


def paced_turn(chunk_ms: int) -> tuple[list[tuple[int, GateOutput]], list[int]]:
    """The recording through a vad-mode front end, fed as the capture thread feeds it (what
    ``wants`` asks for, whole 10 ms periods): each output with the input position (samples)
    at the end of the call that emitted it, and the sizes asked for while streaming."""
    pcm, rate = recording()
    gate = GateSettings()
    out: list[tuple[int, GateOutput]] = []
    pos = 0
    fe = FrontEnd(
        device_rate=rate,
        settings=listen_settings(gate),
        chunk_ms=chunk_ms,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms),
        emit=lambda o: out.append((pos, o)),
    )
    streaming: list[int] = []
    started = stopped = False
    period = rate // 100
    while pos < len(pcm):
        want = -(-max(fe.wants(), period) // period) * period
        if started and not stopped:
            streaming.append(want)
        pos += want
        fe.process(pcm[pos - want : pos])
        started = any(isinstance(o, SpeechStarted) for _, o in out)
        stopped = any(isinstance(o, SpeechStopped) for _, o in out)
    return out, streaming


def test_long_chunks_end_the_turn_as_early_as_short_ones_with_everything_sent() -> None:
    short, _ = paced_turn(40)
    long, asked = paced_turn(100)
    chunks = [len(o.pcm) for _, o in long if isinstance(o, AudioChunk)]
    # Live chunks are 100 ms (a resampler delay short at most); the pre-roll's last and the
    # turn's last are partial.
    assert sum(c >= 99 * 48 for c in chunks) >= len(chunks) - 3 > 10
    assert all(c <= 100 * 48 for c in chunks)
    # The capture thread hands audio over every 40 ms while a frame may end the turn, and up
    # to the rest of the chunk while none can (the speech goes on).
    assert asked and max(asked) <= 100 * 16
    assert sum(a > STREAM_PACE_MS * 16 for a in asked) > len(asked) // 3

    def end(outputs: list[tuple[int, GateOutput]]) -> tuple[int, int, int]:
        at = next(p for p, o in outputs if isinstance(o, SpeechStopped))
        stop = next(o for _, o in outputs if isinstance(o, SpeechStopped))
        sent = sum(len(o.pcm) for _, o in outputs if isinstance(o, AudioChunk)) // 48
        return at, stop.sent_ms, sent

    short_at, short_sent_ms, short_sent = end(short)
    long_at, long_sent_ms, long_sent = end(long)
    # The end is decided on the same 30 ms frames, within a pacing step of each other.
    assert abs(long_at - short_at) <= STREAM_PACE_MS * 16, (long_at, short_at)
    # The last partial chunk leaves in the call that ends the turn, just before SpeechStopped,
    # which counts everything sent: nothing is held back for a chunk that never fills.
    last_chunk = max(i for i, (_, o) in enumerate(long) if isinstance(o, AudioChunk))
    assert isinstance(long[last_chunk + 1][1], SpeechStopped)
    assert long[last_chunk][0] == long_at
    assert long_sent_ms == long_sent and short_sent_ms == short_sent
    # All the audio up to the end goes out: the same turn as with 40 ms chunks, give or
    # take the pacing step at the end.
    assert abs((long_sent - long_at / 16) - (short_sent - short_at / 16)) <= 2, (long_sent, short_sent)
