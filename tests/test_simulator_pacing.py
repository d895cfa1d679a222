"""The simulator's timing over a real socket: real-time replies and a first-audio delay by
default, the old speed with ``profile="fast"``, a long wait with ``slow-first-audio``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from realtime_sim import RealtimeSimulator

KEY = "c2ltOmtleQ=="
QUERY = "?key=pace-1&protocol=realtime"
Json = dict[str, Any]
TEXT_TURN: Json = {"type": "conversation.item.create", "item": {
    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await body()

    asyncio.run(bounded())


async def timed_turn(sim: RealtimeSimulator) -> list[tuple[float, Json]]:
    """A text turn; every server event until response.done with its arrival time (s)."""
    headers = {"Authorization": f"Basic {KEY}"}
    ws: ClientConnection
    async with connect(sim.url + QUERY, additional_headers=headers, compression=None) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps(TEXT_TURN))
        await ws.send(json.dumps({"type": "response.create"}))
        seen: list[tuple[float, Json]] = []
        while not seen or seen[-1][1]["type"] != "response.done":
            event = json.loads(await ws.recv())
            seen.append((time.monotonic(), event))
    return seen


def first(seen: list[tuple[float, Json]], event_type: str) -> float:
    return next(t for t, e in seen if e["type"] == event_type)


def last(seen: list[tuple[float, Json]], event_type: str) -> float:
    return [t for t, e in seen if e["type"] == event_type][-1]


def test_by_default_replies_stream_at_real_time_after_a_first_audio_delay() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY) as sim:
            seen = await timed_turn(sim)
        created = first(seen, "response.created")
        first_audio = first(seen, "response.output_audio.delta")
        assert 0.28 <= first_audio - created < 1.5  # 300 ms of model + TTS latency
        # 1 s of reply in 10 chunks: the last is sent 0.9 s after the first, at real time.
        assert last(seen, "response.output_audio.delta") - first_audio >= 0.85

    run(body)


def test_the_fast_profile_keeps_the_old_speed() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="fast") as sim:
            fast = await timed_turn(sim)
        assert sim.profile.reply_pace == 4.0 and sim.profile.first_audio_delay_ms == 0
        span = last(fast, "response.output_audio.delta") - first(fast, "response.created")
        # 4x real time and no first-audio delay: about 0.23 s where realistic takes >= 1.2 s
        # (a generous bound, as the machine may be loaded).
        assert span < 0.8

    run(body)


def test_slow_first_audio_waits_seconds_before_the_reply() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="slow-first-audio",
                                     reply_pace=0) as sim:
            seen = await timed_turn(sim)
        created = first(seen, "response.created")
        assert first(seen, "response.output_audio.delta") - created >= 2.45
        assert first(seen, "response.output_item.added") - created >= 2.45  # nothing before

    run(body)


def test_a_cancel_during_the_first_audio_delay_ends_the_response_without_audio() -> None:
    async def body() -> None:
        async with RealtimeSimulator(api_key=KEY, profile="slow-first-audio") as sim:
            headers = {"Authorization": f"Basic {KEY}"}
            async with connect(sim.url + QUERY, additional_headers=headers,
                               compression=None) as ws:
                await ws.recv()
                await ws.send(json.dumps(TEXT_TURN))
                await ws.send(json.dumps({"type": "response.create"}))
                events: list[Json] = []
                while not events or events[-1]["type"] != "response.created":
                    events.append(json.loads(await ws.recv()))
                await ws.send(json.dumps({"type": "response.cancel"}))
                while events[-1]["type"] != "response.done":
                    events.append(json.loads(await ws.recv()))
        assert events[-1]["response"]["status"] == "cancelled"
        assert not [e for e in events if e["type"] == "response.output_audio.delta"]

    run(body)
