"""WebRTC: the aiortc adapter against the loopback WebRTC simulator (aiortc on both sides,
real ICE/DTLS/SRTP/SCTP on 127.0.0.1), and the real daemon end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import soxr
from daemon_env import KEY, daemon_config
from transport_e2e import best_correlation, run_daemon_turn, speech_span_ms, until, until_end

from appliance.config import Config, parse_config
from appliance.core.protocol import CancelResponse, Commit, CreateResponse, SessionUpdate, UserText
from appliance.credentials import ApiKey
from appliance.demo import speech_recording
from appliance.errors import AuthenticationError, TransportError
from appliance.transport import open_transport
from appliance.transport.http import request
from appliance.transport.webrtc import WebRtcConnection
from realtime_sim.webrtc import WebRtcSimulator


def webrtc_config(api_url: str) -> Config:
    return parse_config({"realtime": {"transport": "webrtc", "api_url": api_url}})


def test_barge_in_clears_the_output_audio_buffer() -> None:
    async def scenario() -> None:
        async with WebRtcSimulator(api_key=KEY) as sim:
            config = webrtc_config(sim.api_url)
            conn = await open_transport(config, ApiKey(KEY, "test"))
            assert isinstance(conn, WebRtcConnection)
            frames = conn.events()
            try:
                assert (await until(frames, "session.created"))[0].type == "session.created"
                await conn.send(SessionUpdate(config.session.to_api(turn_detection_null=True)))
                await until(frames, "session.updated")
                await conn.send(UserText("hello"))
                await conn.send(CreateResponse())  # a 1 s chirp, in real time
                seen = await until(frames, "response.output_audio.delta")
                assert "output_audio_buffer.started" in [e.type for e in seen]
                await asyncio.sleep(0.2)
                await conn.send(CancelResponse())
                rest = await until(frames, "response.done")
            finally:
                await conn.close()
            assert sim.clears == 1
            sent = [json.loads(t)["type"] for t in sim.events]
            assert sent.index("output_audio_buffer.clear") < sent.index("response.cancel")
            types = [e.type for e in rest]
            assert "output_audio_buffer.cleared" in types
            assert rest[-1].data["response"]["status"] == "cancelled"
            # Less than the 1 s chirp reached the session: the rest was dropped.
            heard = sum(len(e.audio) // 2 for e in seen + rest
                        if e.type == "response.output_audio.delta")
            assert 0 < heard < 24000 * 0.8

    asyncio.run(scenario())


def test_refusals_are_clear_errors() -> None:
    async def scenario() -> None:
        async with WebRtcSimulator(api_key=KEY) as sim:
            with pytest.raises(AuthenticationError, match=r"webrtc ice-servers endpoint refused .* \(HTTP 401\)"):
                await open_transport(webrtc_config(sim.api_url), ApiKey("nope", "test"))
            assert all("nope" not in p and KEY not in p for p in sim.request_paths)
            with pytest.raises(TransportError, match=r"webrtc call request failed with HTTP 400"):
                await request("POST", sim.api_url + "/v1/realtime/calls", ApiKey(KEY, "t"),
                              what="webrtc call", timeout_s=5, body="v=0\r\n",
                              content_type="application/sdp")
            with pytest.raises(TransportError, match=r"HTTP 415"):
                await request("POST", sim.api_url + "/v1/realtime/calls", ApiKey(KEY, "t"),
                              what="webrtc call", timeout_s=5, body="{}",
                              content_type="application/json")

    asyncio.run(scenario())


def test_daemon_over_webrtc_end_to_end(tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes, str, int, WebRtcSimulator]:
        async with WebRtcSimulator(api_key=KEY) as sim:

            def replied() -> bool:
                return bool(sim.calls) and sim.calls[0].reply.sent_audio_frames > 0 and (
                    sim.calls[0].playing is None)

            played, log, code = await run_daemon_turn(
                tmp_path, daemon_config(f'transport = "webrtc"\napi_url = "{sim.api_url}"'), replied,
                lead_s=2.0,  # ICE and DTLS take about a second here
            )
            return played, log, code, sim

    played, log, code, sim = asyncio.run(scenario())
    assert code == 0, log
    assert KEY not in log
    events = sim.received()
    types = [e["type"] for e in events]
    assert types[0] == "session.update"
    assert "input_audio_buffer.append" not in types  # audio went on the RTP track
    assert types.count("input_audio_buffer.commit") == 1 and types.count("response.create") == 1
    assert types.index("input_audio_buffer.clear") < types.index("input_audio_buffer.commit")
    # The committed turn is the speech (through Opus), not the silence the track sent before.
    user = [r for r in sim.sessions[0].conversation.records() if r.is_user_message]
    turn = np.frombuffer(user[0].audio, dtype="<i2")
    pcm, rate = speech_recording()
    start_ms, end_ms = speech_span_ms(pcm, rate)
    speech24 = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 24000)
    # Speech + pre-roll (from where the sound rose) + the end of turn (at most 1000) + slack.
    assert len(turn) / 24 <= (end_ms - start_ms) + 300 + 1000 + 400, len(turn) / 24
    assert best_correlation(turn, speech24[start_ms * 24 : end_ms * 24 - 4800]) > 0.85
    # The echo came back on the RTP track and reached the speaker.
    played24 = np.frombuffer(played, dtype=np.int16)
    assert best_correlation(played24, speech24[start_ms * 24 : end_ms * 24 - 4800]) > 0.7
    states = [line.split("state: ")[1].split()[0] for line in log.splitlines() if "state: " in line]
    assert "Speaking" in states and states[-1] == "Ready", states


def test_reply_audio_without_output_audio_buffer_events() -> None:
    """A service that sends no output_audio_buffer.* events: the track's silence ends the reply."""

    async def scenario() -> None:
        async with WebRtcSimulator(api_key=KEY, buffer_events=False) as sim:
            config = webrtc_config(sim.api_url)
            conn = await open_transport(config, ApiKey(KEY, "test"))
            frames = conn.events()
            try:
                await until(frames, "session.created")
                await conn.send(SessionUpdate(config.session.to_api(turn_detection_null=True)))
                await until(frames, "session.updated")
                await conn.send(UserText("hello"))
                await conn.send(CreateResponse())  # a 1 s chirp, in real time
                events = await until(frames, "response.done")
            finally:
                await conn.close()
            types = [e.type for e in events]
            assert not any(t.startswith("output_audio_buffer.") for t in types)
            last_delta = max(i for i, t in enumerate(types) if t == "response.output_audio.delta")
            assert last_delta < types.index("response.done")
            reply = np.concatenate([np.frombuffer(e.audio, dtype="<i2")
                                    for e in events if e.type == "response.output_audio.delta"])
            loud = np.flatnonzero(np.abs(reply) > 1000)
            # The whole chirp reached the session (through Opus), before response.done.
            assert (loud[-1] - loud[0]) / 24000 > 0.9
            from realtime_sim.engine import reply_tone

            tone = np.frombuffer(reply_tone(), dtype="<i2")
            assert best_correlation(reply, tone[2400:-2400]) > 0.9

    asyncio.run(scenario())


def test_a_vanished_peer_ends_the_connection_with_a_transport_error() -> None:
    async def scenario() -> None:
        async with WebRtcSimulator(api_key=KEY) as sim:
            conn = await open_transport(webrtc_config(sim.api_url), ApiKey(KEY, "test"))
            frames = conn.events()
            try:
                await until(frames, "session.created")
                await sim.calls[0].close()  # the service hangs up
                with pytest.raises(TransportError, match="data channel closed|peer connection"):
                    await until_end(frames, 20)
                with pytest.raises(TransportError, match="data channel is"):
                    await conn.send(Commit())
            finally:
                await conn.close()

    asyncio.run(scenario())


def test_mic_track_catches_up_with_the_preroll_without_gaps() -> None:
    """The pre-roll burst goes out faster than real time; the audio is never cut or padded."""
    from appliance.transport.webrtc import MicTrack

    async def scenario() -> None:
        rng = np.random.default_rng(1)
        preroll = rng.integers(-8000, 8000, 7300, dtype=np.int16)  # not whole 20 ms frames
        chunks = [rng.integers(-8000, 8000, 960, dtype=np.int16) for _ in range(25)]
        track = MicTrack()
        loop = asyncio.get_running_loop()
        done_at = 0.0

        async def gate() -> None:
            nonlocal done_at
            for chunk in chunks:  # 40 ms of live audio every 40 ms
                await asyncio.sleep(0.04)
                track.push(chunk.tobytes())
            done_at = loop.time()

        track.push(preroll.tobytes())  # the turn starts: the gate's pre-roll at once
        feeder = asyncio.create_task(gate())
        out = []
        while not (feeder.done() and track.drained.is_set()):
            frame = await track.recv()
            out.append(frame.to_ndarray().reshape(-1))
        await feeder
        lag = loop.time() - done_at
        track.stop()
        sent = np.concatenate(out)
        expected = np.concatenate([preroll, *chunks])
        assert np.array_equal(sent[: len(expected)], expected)
        assert not sent[len(expected) :].any()  # only the last frame is padded
        # Caught up: the last audio left within the cushion of the live end, not 300 ms later.
        assert lag < 0.15, lag

    asyncio.run(scenario())


def test_an_unusable_sdp_answer_is_a_transport_error() -> None:
    from aiohttp import web

    async def ice(request: web.Request) -> web.Response:
        return web.json_response({"ice_servers": [{"username": "no urls"}]})

    async def call(request: web.Request) -> web.Response:
        return web.Response(status=201, text="v=0\r\nnot an answer\r\n", content_type="application/sdp")

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/v1/realtime/ice-servers", ice)
        app.router.add_post("/v1/realtime/calls", call)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            with pytest.raises(TransportError, match="not a usable SDP answer"):
                await open_transport(webrtc_config(url), ApiKey(KEY, "test"))
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
