"""End to end: the real daemon process, real alsa-lib (file plugin), real websockets on loopback.

What the demo does, with assertions on what the simulator received and what reached the
speaker file.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from daemon_env import KEY, config_text
from transport_e2e import best_correlation, run_daemon_turn, speech_span_ms

from appliance.demo import speech_recording
from realtime_sim.server import RealtimeSimulator


async def run_turn(tmp_path: Path) -> tuple[list[dict[str, Any]], bytes, str, int]:
    async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:

        def replied() -> bool:
            return any(e.get("type") == "response.create" for e in sim.received)

        played, log, code = await run_daemon_turn(tmp_path, config_text(sim.url), replied, 30)
        received = list(sim.received)
    return received, played, log, code


def test_one_voice_turn_end_to_end(tmp_path: Path) -> None:
    received, played, log, code = asyncio.run(run_turn(tmp_path))
    assert code == 0, log
    assert KEY not in log

    types = [e["type"] for e in received]
    assert types[0] == "session.update"
    assert types.count("input_audio_buffer.commit") == 1
    assert types.count("response.create") == 1
    assert types.index("input_audio_buffer.commit") < types.index("response.create")

    sent = b"".join(base64.b64decode(e["audio"]) for e in received if e["type"] == "input_audio_buffer.append")
    sent24 = np.frombuffer(sent, dtype=np.int16)
    pcm, rate = speech_recording()
    start_ms, end_ms = speech_span_ms(pcm, rate)
    sent_ms = len(sent24) / 24
    # Silence is not sent: speech + pre-roll (300, from where the sound rose) + the end of
    # turn (end_incomplete_ms, 1000, at most) + onset/offset slack.
    assert sent_ms <= (end_ms - start_ms) + 300 + 1000 + 250, (sent_ms, start_ms, end_ms)
    assert sent_ms < len(pcm) / 2 / rate * 1000 - 1000
    # What was sent is the recorded speech, at 24 kHz, with its onset.
    speech24 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000)
    onset = speech24[start_ms * 24 : (start_ms + 400) * 24]
    assert best_correlation(sent24, onset) > 0.9
    whole = speech24[start_ms * 24 : end_ms * 24]
    assert best_correlation(sent24, whole) > 0.9

    # The simulator's reply echoes the user's audio; it must all reach the speaker file.
    played24 = np.frombuffer(played, dtype=np.int16)
    assert abs(len(played24) - len(sent24)) <= 2400, (len(played24), len(sent24))
    assert best_correlation(played24, sent24[: len(played24) - 2400]) > 0.9
