"""G.711 on the realtime WebSocket: the codec, the edge adapter over real websockets, and the
real daemon end to end with ``[audio] wire_format = "pcmu"``."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from daemon_env import KEY, daemon_config
from transport_e2e import best_correlation, run_daemon_turn, speech_span_ms, until

from appliance.config import parse_config
from appliance.core.protocol import AppendAudio, Commit, CreateResponse, SessionUpdate
from appliance.credentials import ApiKey
from appliance.demo import speech_recording
from appliance.transport import g711, open_transport
from appliance.transport.wire import G711Connection
from realtime_sim.server import RealtimeSimulator


def tone(ms: int, rate: int = 24000, hz: float = 440.0, dbfs: float = -12.0) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return np.rint(32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_the_codec_is_the_standard_g711() -> None:
    # Reference points of ITU-T G.711 (as in audioop / Sun's g711.c).
    silence = np.zeros(4, dtype="<i2").tobytes()
    assert g711.encode(silence, "pcmu") == b"\xff" * 4
    assert g711.encode(silence, "pcma") == b"\xd5" * 4
    full = np.array([32767, -32768], dtype="<i2").tobytes()
    assert g711.encode(full, "pcmu") == b"\x80\x00"
    assert g711.encode(full, "pcma") == b"\xaa\x2a"
    codes = bytes(range(256))
    assert g711.encode(g711.decode(codes, "pcma"), "pcma") == codes
    with pytest.raises(ValueError, match="not a G.711 wire format"):
        g711.G711Encoder("opus")


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_streaming_conversion_keeps_the_signal(law: str) -> None:
    x = tone(1000, hz=1000)
    enc, dec = g711.G711Encoder(law), g711.G711Decoder(law)
    wire = b"".join(enc.encode(c.tobytes(), last=i == 24) for i, c in enumerate(np.split(x, 25)))
    assert abs(len(wire) - 8000) <= 2  # one byte per sample at 8 kHz: 1/6 of PCM16 24 kHz
    back = np.frombuffer(
        b"".join(dec.decode(wire[i : i + 320], last=i + 320 >= len(wire)) for i in range(0, len(wire), 320)),
        dtype="<i2",
    )
    assert abs(len(back) - len(x)) <= 6
    assert best_correlation(back, x[1200:22800]) > 0.995


def realtime_config(url: str, wire_format: str) -> Any:
    return parse_config(
        {"realtime": {"url": url}, "audio": {"wire_format": wire_format}, "gate": {"mode": "vad"}}
    )


def test_pcma_over_the_realtime_websocket() -> None:
    async def scenario() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=0) as sim:
            config = realtime_config(sim.url, "pcma")
            conn = await open_transport(config, ApiKey(KEY, "test"))
            assert isinstance(conn, G711Connection)
            frames = conn.events()
            try:
                await until(frames, "session.created")
                await conn.send(SessionUpdate(config.session.to_api(turn_detection_null=True)))
                await until(frames, "session.updated")
                audio = sim.sessions[0].session["audio"]
                assert audio["input"]["format"] == {"type": "audio/pcma"}
                assert audio["output"]["format"] == {"type": "audio/pcma"}
                x = tone(600)
                for chunk in np.split(x, 15):  # 40 ms chunks, as the gate sends them
                    await conn.send(AppendAudio(chunk.tobytes()))
                await conn.send(Commit())
                await conn.send(CreateResponse())
                events = await until(frames, "response.done")
            finally:
                await conn.close()
            wire = b"".join(
                base64.b64decode(e["audio"]) for e in sim.received
                if e["type"] == "input_audio_buffer.append"
            )
            assert abs(len(wire) - 4800) <= 2  # 600 ms at 8 kHz, one byte per sample
            heard = np.frombuffer(g711.decode(wire, "pcma"), dtype="<i2")
            assert best_correlation(heard, soxr.resample(x, 24000, 8000)[800:4000]) > 0.99
            reply = b"".join(
                e.audio for e in events if e.type == "response.output_audio.delta"
            )
            pcm = np.frombuffer(reply, dtype="<i2")  # the session gets PCM16 at 24 kHz back
            assert abs(len(pcm) - len(x)) <= 30
            assert best_correlation(pcm, x[2400:12000]) > 0.98

    asyncio.run(scenario())


def test_daemon_speaks_pcmu_end_to_end(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], bytes, str, int, dict[str, Any]]:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:

            def replied() -> bool:
                return any(e.get("type") == "response.create" for e in sim.received)

            played, log, code = await run_daemon_turn(
                tmp_path,
                daemon_config(f'url = "{sim.url}"', audio='wire_format = "pcmu"'),
                replied,
            )
            return list(sim.received), played, log, code, sim.sessions[0].session

    received, played, log, code, session = asyncio.run(scenario())
    assert code == 0, log
    assert KEY not in log
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    types = [e["type"] for e in received]
    assert types.count("input_audio_buffer.commit") == 1
    wire = b"".join(base64.b64decode(e["audio"]) for e in received if e["type"] == "input_audio_buffer.append")
    sent8 = np.frombuffer(g711.decode(wire, "pcmu"), dtype="<i2")
    pcm, rate = speech_recording()
    start_ms, end_ms = speech_span_ms(pcm, rate)
    speech8 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 8000)
    assert best_correlation(sent8, speech8[start_ms * 8 : end_ms * 8]) > 0.9
    # The echoed reply arrives as G.711 and reaches the speaker as 24 kHz PCM16.
    played24 = np.frombuffer(played, dtype=np.int16)
    assert abs(len(played24) - len(sent8) * 3) <= 2400, (len(played24), len(sent8))
    speech24 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000)
    assert best_correlation(played24, speech24[start_ms * 24 : (end_ms - 300) * 24]) > 0.85


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"realtime": {"transport": "sip"}},
         'realtime.transport: expected one of "websocket", "webrtc", "voice-sdk", got "sip"'),
        ({"realtime": {"api_url": "wss://api.inworld.ai"}},
         'realtime.api_url: expected an http:// or https:// URL without a query, got "wss://api.inworld.ai"'),
        ({"audio": {"wire_format": "opus"}},
         'audio.wire_format: expected one of "pcm16", "pcmu", "pcma", got "opus"'),
        ({"realtime": {"transport": "voice-sdk"}, "audio": {"wire_format": "pcma"}},
         'audio.wire_format: "pcma" needs realtime.transport = "websocket" (the voice-sdk transport has its own audio encoding)'),
    ],
)
def test_transport_config_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value) == message


def test_a_reloaded_wire_format_reconnects() -> None:
    from appliance.reload import plan_reload

    old = parse_config({"audio": {"wire_format": "pcm16"}})
    assert plan_reload(old, parse_config({"audio": {"wire_format": "pcmu"}})).reconnect
    assert not plan_reload(old, parse_config({"audio": {"wire_format": "pcm16"}})).reconnect
