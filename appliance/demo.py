"""``appliance demo``: one real voice turn with no hardware, no API key and no network.

Starts the loopback simulator, points ALSA at the ``file`` plugin (the microphone reads a
shipped speech recording, the speaker writes a file), runs the real daemon against both,
prints transcripts and timings and saves the reply as a WAV.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import wave
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.core.session import Action, StateChanged, Transcript, TurnTimings
from appliance.core.state import State

DEMO_KEY = "ZGVtbzpkZW1vLWtleQ=="  # base64 "demo:demo-key", shaped like a portal key
SPEECH_TEXT = "What is the weather like in Paris today?"
ALSA_CONF = "/usr/share/alsa/alsa.conf"


def speech_recording() -> tuple[bytes, int]:
    """The shipped recording: PCM16 mono and its rate."""
    with (
        resources.as_file(resources.files("appliance") / "data" / "speech.wav") as path,
        wave.open(str(path), "rb") as wav,
    ):
        return wav.readframes(wav.getnframes()), wav.getframerate()


def write_file_devices(directory: Path, mic_raw: Path, speaker_raw: Path) -> Path:
    """An asoundrc with a ``mic`` PCM reading ``mic_raw`` and a ``spk`` PCM writing ``speaker_raw``."""
    asoundrc = directory / "asoundrc"
    asoundrc.write_text(
        f'pcm.mic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{mic_raw}"; format "raw" }}\n'
        f'pcm.spk {{ type file; slave.pcm "null"; file "{speaker_raw}"; format "raw" }}\n'
    )
    return asoundrc


def alsa_config_path(asoundrc: Path) -> str:
    return f"{ALSA_CONF}:{asoundrc}"


def demo_config(url: str) -> dict[str, object]:
    return {
        "realtime": {"url": url},
        "session": {
            "instructions": "You are a friendly voice assistant. Keep responses brief.",
            "audio": {"input": {"transcription": {"model": "assemblyai/u3-rt-pro"}}},
        },
        "audio": {
            "capture_device": "mic",
            "capture_rate": 16000,
            "playback_device": "spk",
            "playback_rate": 24000,
        },
        "gate": {"mode": "vad"},
        "gpio": {"enabled": False},
    }


def run_demo(out: Path) -> int:
    from appliance.cli import simulator_module

    server = simulator_module("server")  # before any file is written: absent is one line
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    pcm, rate = speech_recording()
    mic_raw, speaker_raw = out / "mic.raw", out / "speaker.raw"
    mic_raw.write_bytes(pcm)
    speaker_raw.unlink(missing_ok=True)
    # alsa-lib reads its configuration once per process, at the first PCM opened.
    os.environ["ALSA_CONFIG_PATH"] = alsa_config_path(write_file_devices(out, mic_raw, speaker_raw))
    print(f"microphone: {len(pcm) / 2 / rate:.2f} s recording saying {SPEECH_TEXT!r} ({rate} Hz)")
    ok, sent_ms = asyncio.run(_demo(server.RealtimeSimulator, out / "state"))
    reply = out / "reply.wav"
    played = speaker_raw.read_bytes() if speaker_raw.exists() else b""
    with wave.open(str(reply), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(played)
    print(f"sent upstream: {sent_ms} ms of audio (silence is not sent)")
    print(f"reply: {len(played) / 48000:.2f} s of audio saved to {reply}")
    return 0 if ok and played else 1


async def _demo(simulator: Any, state: Path) -> tuple[bool, int]:
    """``simulator`` is ``realtime_sim.server.RealtimeSimulator``, passed in because the
    product does not import the simulator package at module level."""
    from appliance.config import parse_config
    from appliance.credentials import ApiKey
    from appliance.daemon import Daemon
    from appliance.logs import setup_logging

    setup_logging("warning")
    stop = asyncio.Event()
    t0 = time.monotonic()
    spoke = False

    def observe(action: Action) -> None:
        nonlocal spoke
        stamp = f"[{time.monotonic() - t0:6.2f} s]"
        if isinstance(action, StateChanged):
            print(f"{stamp} state: {action.state.words}")
            spoke = spoke or action.state is State.SPEAKING
            if spoke and action.state is State.READY:
                stop.set()
        elif isinstance(action, Transcript):
            print(f"{stamp} {action.role}: {action.text}")
        elif isinstance(action, TurnTimings):
            print(
                f"{stamp} turn {action.turn_id}: first reply audio {action.latency_ms} ms after end of speech"
            )

    async with simulator(api_key=DEMO_KEY) as sim:
        data = demo_config(sim.url)
        # A state directory of its own: a mute kept by the appliance would silence the demo.
        data["gpio"] = {"enabled": False, "state_dir": str(state)}
        config = parse_config(data, "<demo>")
        daemon = Daemon(config, ApiKey(DEMO_KEY, "demo"), observers=[observe])
        runner = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(stop.wait(), 30)
            ok = True
        except TimeoutError:
            print("demo: the turn did not complete within 30 s")
            ok = False
        stop.set()
        await runner
        appended = [
            e["audio"] for e in sim.received if e.get("type") == "input_audio_buffer.append"
        ]
        sent_ms = sum(len(base64.b64decode(a)) for a in appended) // 48
    return ok, sent_ms
