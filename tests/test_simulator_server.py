"""The simulator's websockets adapter, through a real websockets client on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime_sim import RealtimeSimulator, serve_forever

KEY = "dGVzdC1rZXk6c2VjcmV0"
QUERY = "?key=voice-1&protocol=realtime"
Json = dict[str, Any]


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await body()

    asyncio.run(bounded())


def client(url: str, key: str = KEY) -> connect:
    return connect(url, additional_headers={"Authorization": f"Basic {key}"}, compression=None)


async def recv(ws: ClientConnection) -> Json:
    event: Json = json.loads(await ws.recv())
    return event


async def until(ws: ClientConnection, event_type: str) -> list[Json]:
    """Events up to and including the first of ``event_type``."""
    events: list[Json] = []
    while not events or events[-1]["type"] != event_type:
        events.append(await recv(ws))
    return events


async def send(ws: ClientConnection, event: Json) -> None:
    await ws.send(json.dumps(event))


TEXT_TURN = {"type": "conversation.item.create", "item": {
    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}}


@pytest.mark.parametrize(("suffix", "key", "status", "said"), [
    (QUERY, "wrong", 401, b"Authorization"),
    ("?key=voice-1", KEY, 400, b"protocol"),
    ("?key=voice-1&protocol=openai", KEY, 400, b"protocol"),
    ("?protocol=realtime", KEY, 400, b"key"),
    ("?key=&protocol=realtime", KEY, 400, b"key"),
])
def test_handshake_is_refused(suffix: str, key: str, status: int, said: bytes) -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY) as sim:
            with pytest.raises(InvalidStatus) as caught:
                async with client(sim.url + suffix, key):
                    pass
            assert caught.value.response.status_code == status
            assert said in caught.value.response.body
            assert sim.connections == 0

    run(body)


def test_wrong_path_is_404() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY) as sim:
            url = f"ws://127.0.0.1:{sim.port}/api/v1/realtime/other{QUERY}"
            with pytest.raises(InvalidStatus) as caught:
                async with client(url):
                    pass
            assert caught.value.response.status_code == 404

    run(body)


def test_a_text_turn_gets_audio_and_response_done() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast", reply_pace=0) as sim:
            assert sim.url == f"ws://127.0.0.1:{sim.port}/api/v1/realtime/session"
            async with client(sim.url + QUERY) as ws:
                created = await recv(ws)
                assert created["type"] == "session.created"
                await send(ws, TEXT_TURN)
                await send(ws, {"type": "response.create"})
                events = await until(ws, "response.done")
            types = [e["type"] for e in events]
            assert types[:3] == ["conversation.item.added", "conversation.item.done",
                                 "response.created"]
            audio = b"".join(base64.b64decode(e["delta"]) for e in events
                             if e["type"] == "response.output_audio.delta")
            assert len(audio) == 48_000  # the 1 s reply chirp, PCM16 at 24 kHz
            assert events[-1]["response"]["status"] == "completed"
            assert [e["type"] for e in sim.received] == ["conversation.item.create",
                                                         "response.create"]
            assert sim.connections == 1
            assert sim.request_paths == ["/api/v1/realtime/session" + QUERY]

    run(body)


def test_a_paced_response_can_be_cancelled_mid_way() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY, reply_pace=1.0, reply_chunk_ms=100) as sim:
            async with client(sim.url + QUERY) as ws:
                await recv(ws)
                await send(ws, TEXT_TURN)
                await send(ws, {"type": "response.create"})
                await until(ws, "response.output_audio.delta")
                await send(ws, {"type": "response.cancel"})
                events = await until(ws, "response.done")
            deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
            assert len(deltas) < 5  # 10 chunks at real time would take a second
            assert events[-1]["response"]["status"] == "cancelled"
            item_id = events[-1]["response"]["output"][0]["id"]
            assert sim.sessions[0].audio_sent_ms(item_id) == 100 * (len(deltas) + 1)

    run(body)


def test_binary_frames_get_an_error_event() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY) as sim, client(sim.url + QUERY) as ws:
            await recv(ws)
            await ws.send(b"\x00\x01\x02")
            error = await recv(ws)
            assert error["type"] == "error"
            assert error["error"]["code"] == "invalid_event"

    run(body)


def test_events_from_several_connections_are_recorded_in_order() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY) as sim:
            async with client(sim.url + QUERY) as one, client(sim.url + QUERY) as two:
                await recv(one)
                await recv(two)
                await send(one, {"type": "input_audio_buffer.clear", "event_id": "a"})
                await recv(one)
                await send(two, {"type": "input_audio_buffer.clear", "event_id": "b"})
                await recv(two)
            assert [e["event_id"] for e in sim.received] == ["a", "b"]
            assert sim.connections == 2
            assert len(sim.sessions) == 2

    run(body)


def test_close_disconnects_clients_cleanly() -> None:
    async def body() -> None:
        sim = RealtimeSimulator(api_key=KEY, reply_pace=0.5)
        await sim.start()
        async with client(sim.url + QUERY) as ws:
            await recv(ws)
            await send(ws, TEXT_TURN)
            await send(ws, {"type": "response.create"})
            await until(ws, "response.output_audio.delta")
            await sim.close()
            with pytest.raises(ConnectionClosed) as caught:
                while True:
                    await ws.recv()
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001

    run(body)


def test_serve_forever_prints_its_url_and_stops_on_sigint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def body() -> None:
        task = asyncio.create_task(serve_forever(0, KEY))
        while "ws://" not in (out := capsys.readouterr().out):
            await asyncio.sleep(0.01)
        url = out.split()[-1]
        async with client(url + QUERY) as ws:
            assert (await recv(ws))["type"] == "session.created"
        os.kill(os.getpid(), signal.SIGINT)
        await task

    run(body)
