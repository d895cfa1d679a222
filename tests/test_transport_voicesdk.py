"""The Voice SDK token socket: the adapter against the loopback Voice SDK simulator (aiohttp
server, real websockets and HTTP on loopback), and the real daemon end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import soxr
from daemon_env import KEY, daemon_config
from transport_e2e import best_correlation, run_daemon_turn, speech_span_ms, until, until_end
from websockets.asyncio.client import connect

from appliance.config import Config, parse_config
from appliance.core import protocol
from appliance.core.protocol import AppendAudio, Commit, CreateResponse, SessionUpdate
from appliance.credentials import ApiKey
from appliance.demo import speech_recording
from appliance.errors import AuthenticationError, TransportError
from appliance.transport import open_transport
from appliance.transport.voicesdk import VoiceSdkConnection
from realtime_sim.voicesdk import VoiceSdkSimulator


def sdk_config(api_url: str) -> Config:
    return parse_config({"realtime": {"transport": "voice-sdk", "api_url": api_url}})


def tone(ms: int, rate: int = 24000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    pcm: np.ndarray = np.rint(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return pcm


def test_voice_sdk_turn_through_the_adapter() -> None:
    async def scenario() -> None:
        async with VoiceSdkSimulator(api_key=KEY, reply_pace=0) as sim:
            config = sdk_config(sim.api_url)
            conn = await open_transport(config, ApiKey(KEY, "test"))
            assert isinstance(conn, VoiceSdkConnection)
            frames = conn.events()
            try:
                first = await until(frames, "session.created")
                assert first[0].data["session"]["id"] == conn.session_key
                await conn.send(SessionUpdate(config.session.to_api(turn_detection_null=True)))
                await until(frames, "session.updated")
                x = tone(600)
                for chunk in np.split(x, 15):
                    await conn.send(AppendAudio(chunk.tobytes()))
                await conn.send(Commit())
                await conn.send(CreateResponse())  # not carried; must not break anything
                events = await until(frames, "response.done")
            finally:
                await conn.close()
            # Upstream: 640-byte frames of 16 kHz PCM16: the tone, then 500 ms of silence.
            assert sim.frame_sizes and set(sim.frame_sizes) == {640}
            heard = np.frombuffer(bytes(sim.received_audio[0]), dtype="<i2")
            assert abs(len(heard) - (9600 + 8000)) <= 320
            assert best_correlation(heard, soxr.resample(x, 24000, 16000)[1600:8000]) > 0.99
            assert np.abs(heard[-7000:]).max() < 50
            assert sim.errors_sent == []
            # Downstream: the agent's frames became one synthetic response at 24 kHz.
            types = [e.type for e in events]
            assert types[0] == "response.created"
            assert types[-2:] == ["response.output_audio.done", "response.done"]
            reply = np.concatenate([
                np.frombuffer(e.audio, dtype="<i2")
                for e in events if e.type == "response.output_audio.delta"
            ])
            assert best_correlation(reply, x[2400:12000]) > 0.98

    asyncio.run(scenario())


def test_wrong_key_is_an_authentication_error_and_stays_out_of_urls() -> None:
    async def scenario() -> None:
        async with VoiceSdkSimulator(api_key=KEY) as sim:
            with pytest.raises(AuthenticationError, match=r"voice-sdk token endpoint refused .* \(HTTP 401\)") as err:
                await open_transport(sdk_config(sim.api_url), ApiKey("wrong-key", "test"))
            assert "wrong-key" not in str(err.value)
            assert sim.token_requests == ["/api/v1/sdk/token"]

    asyncio.run(scenario())


def test_unreachable_service_is_a_transport_error() -> None:
    async def scenario() -> None:
        with pytest.raises(TransportError, match="voice-sdk token request failed"):
            await open_transport(sdk_config("http://127.0.0.1:9"), ApiKey(KEY, "test"))

    asyncio.run(scenario())


def test_session_ended_and_errors_reach_the_session_as_realtime_events() -> None:
    async def scenario() -> None:
        async with VoiceSdkSimulator(api_key=KEY, reply_pace=0) as sim:
            conn = await open_transport(sdk_config(sim.api_url), ApiKey(KEY, "test"))
            frames = conn.events()
            try:
                await until(frames, "session.created")
                ws = next(iter(sim._sockets))
                await ws.send_str(json.dumps({"type": "error", "code": "rate_limited", "message": "slow down"}))
                await ws.send_str("not json")
                error = (await until(frames, "error"))[-1]
                assert error.data["error"] == {"type": "voice_sdk_error", "code": "rate_limited", "message": "slow down"}
                assert protocol.check({**error.data, "type": error.type}) == "error"  # what the session checks
                await sim.end_sessions("agent_disconnected")
                with pytest.raises(TransportError, match="session ended: agent_disconnected"):
                    await until_end(frames)
            finally:
                await conn.close()

    asyncio.run(scenario())


def test_simulator_is_strict_about_tokens_and_frames() -> None:
    async def scenario() -> None:
        async with VoiceSdkSimulator(api_key=KEY) as sim:
            ws_url = sim.api_url.replace("http", "ws") + "/api/v1/sdk/ws"
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"token": "made-up"}))
                assert json.loads(await ws.recv())["code"] == "invalid_token"
                await ws.wait_closed()
                assert ws.close_code == 4001
            sim._tokens.add("good")
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"token": "good"}))
                assert [json.loads(await ws.recv())["type"] for _ in range(2)] == ["connected", "agent_ready"]
                await ws.send(b"\x00" * 100)
                error = json.loads(await ws.recv())
                assert error["code"] == "invalid_audio_frame" and "got 100" in error["message"]

    asyncio.run(scenario())


def test_daemon_over_voice_sdk_end_to_end(tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes, str, int, bytes]:
        async with VoiceSdkSimulator(api_key=KEY) as sim:
            played, log, code = await run_daemon_turn(
                tmp_path,
                daemon_config(f'transport = "voice-sdk"\napi_url = "{sim.api_url}"'),
                lambda: sim.sent_frames > 0,
            )
            return played, log, code, bytes(sim.received_audio[0])

    played, log, code, heard = asyncio.run(scenario())
    assert code == 0, log
    assert KEY not in log
    # The turn ends in Ready: the session's response.create was closed although the service
    # answered during the local hang-over.
    states = [line.split("state: ")[1].split()[0] for line in log.splitlines() if "state: " in line]
    assert states[-1] == "Ready", states
    assert "Speaking" in states
    pcm, rate = speech_recording()
    start_ms, end_ms = speech_span_ms(pcm, rate)
    speech16 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 16000)
    heard16 = np.frombuffer(heard, dtype="<i2")
    assert best_correlation(heard16, speech16[start_ms * 16 : end_ms * 16]) > 0.9
    # Only speech (plus pre-roll, the end of turn's silence, at most [gate] end_incomplete_ms,
    # and the 500 ms tail) went out, not the whole file.
    assert len(heard16) / 16 < (end_ms - start_ms) + 400 + 1100 + 500
    played24 = np.frombuffer(played, dtype=np.int16)
    speech24 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000)
    assert best_correlation(played24, speech24[start_ms * 24 : (end_ms - 300) * 24]) > 0.85


def test_a_dropped_socket_is_a_transport_error() -> None:
    async def scenario() -> None:
        async with VoiceSdkSimulator(api_key=KEY) as sim:
            conn = await open_transport(sdk_config(sim.api_url), ApiKey(KEY, "test"))
            frames = conn.events()
            try:
                await until(frames, "session.created")
                await next(iter(sim._sockets)).close(code=1011, message=b"internal error")
                with pytest.raises(TransportError, match=r"closed by server \(code 1011: internal error\)"):
                    await until_end(frames)
            finally:
                await conn.close()

    asyncio.run(scenario())
