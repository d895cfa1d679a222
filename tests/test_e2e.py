"""End to end: the real daemon process, real alsa-lib (file plugin), real websockets on loopback.

What the demo does, with assertions on what the simulator received and what reached the
speaker file.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from daemon_env import APPLIANCE, KEY, daemon_env, write_config

from appliance.demo import speech_recording, write_file_devices
from appliance.simulator.server import RealtimeSimulator


def speech_span_ms(pcm: bytes, rate: int) -> tuple[int, int]:
    """Where the recording is loud: first and last 10 ms frame above -40 dBFS."""
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    frame = rate // 100
    rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 32768 * 10 ** (-40 / 20))
    return int(loud[0]) * 10, int(loud[-1] + 1) * 10


def best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of b sliding over a (b shorter)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)[: len(a)]
    energy = np.sqrt(np.convolve(a**2, np.ones(len(b)), "valid"))
    peak = np.max(np.abs(corr[: len(energy)]) / (energy * np.linalg.norm(b) + 1e-9))
    return float(peak)


async def run_turn(tmp_path: Path) -> tuple[list[dict[str, Any]], bytes, str, int]:
    pcm, rate = speech_recording()
    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    # Past its end the file plugin replays stale buffer contents: pad with silence so the
    # daemon hears one utterance, however long the turn takes.
    mic.write_bytes(pcm + bytes(2 * rate * 10))
    asoundrc = write_file_devices(tmp_path, mic, spk)
    async with RealtimeSimulator(api_key=KEY) as sim:
        cfg = tmp_path / "appliance.toml"
        write_config(cfg, sim.url)
        log = (tmp_path / "daemon.log").open("wb")
        proc = subprocess.Popen([*APPLIANCE, "run", "--config", str(cfg)], env=daemon_env(asoundrc), stderr=log, stdout=log)
        try:
            deadline = time.monotonic() + 30
            done = False
            while time.monotonic() < deadline and proc.poll() is None:
                await asyncio.sleep(0.2)
                responses = [e for e in sim.received if e.get("type") == "response.create"]
                if responses and spk.exists() and spk.stat().st_size > 0:
                    size = spk.stat().st_size
                    await asyncio.sleep(1.0)  # let playback finish
                    if spk.stat().st_size == size:
                        done = True
                        break
            assert done, "the turn did not complete: " + (tmp_path / "daemon.log").read_text()[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 10)
            log.close()
        received = list(sim.received)
    return received, spk.read_bytes(), (tmp_path / "daemon.log").read_text(), code


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
    # Silence is not sent: speech + pre-roll (300) + hang-over (700) + onset/offset slack.
    assert sent_ms <= (end_ms - start_ms) + 300 + 700 + 250, (sent_ms, start_ms, end_ms)
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
