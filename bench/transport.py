"""Upstream bytes per second and CPU per audio second of each transport.

For each of websocket (PCM16 24 kHz), websocket G.711 (pcmu), webrtc and voice-sdk, a fresh
client process (so CPU time and peak RSS are its own) talks to the project's simulator for
that transport, which runs in this process on loopback:

1. speech: 10 s of continuous speech (the voiced part of the shipped recording, looped),
   appended in 40 ms chunks at real-time pace, as the gate sends it while you talk;
2. idle: 3 s with the gate closed (nothing appended);
3. reply: commit + response.create; the simulator echoes the 10 s back.

Upstream bytes are counted where each transport hands them to the OS, without TCP/UDP/IP
headers: WebSocket frames with their client framing (2-8 bytes + 4-byte mask), Voice SDK
binary frames (640 + 6 bytes), WebRTC RTP packets (aiortc's octet count + 12-byte RTP header
+ 10-byte SRTP tag; the few data-channel events are left out). CPU is the client process's
user+system time per second of audio (the event loop, the transport, its codecs and
threads), compared within one run because the machine is shared.

Run: ``.venv/bin/python -m bench.transport``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr

SPEECH_S = 10.0
IDLE_S = 3.0
CHUNK_MS = 40
KEY = "bench-key"
KINDS = ("websocket", "websocket-pcmu", "webrtc", "voice-sdk")


# --------------------------------------------------------------------------- client side


def _speech() -> np.ndarray:
    from appliance.demo import speech_recording

    pcm, rate = speech_recording()
    x = np.frombuffer(pcm, dtype=np.int16)
    voiced = x[int(0.6 * rate) : int(2.86 * rate)]  # continuous: no 400 ms pause ends a turn
    wide = soxr.resample(voiced, rate, 24000).astype(np.int16)
    n = int(SPEECH_S * 24000)
    return np.tile(wide, n // len(wide) + 1)[:n]


class _Counting:
    """A realtime connection that counts the WebSocket bytes it sends (frame + framing)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.session_key = inner.session_key
        self.sent = 0

    async def send(self, event: Any) -> None:
        from appliance.transport import codec

        text = codec.encode(event)  # what the connection would send, encoded once
        size = len(text.encode())
        self.sent += size + (6 if size < 126 else 8 if size < 65536 else 14)
        await self._inner.send_text(text)

    def events(self) -> Any:
        return self._inner.events()

    async def close(self) -> None:
        await self._inner.close()

    @property
    def latency(self) -> float:
        return float(self._inner.latency)


async def _client(kind: str, url: str) -> dict[str, Any]:
    from appliance.config import parse_config
    from appliance.core.protocol import (
        AppendAudio,
        Commit,
        CreateResponse,
        ServerEvent,
        SessionUpdate,
    )
    from appliance.credentials import ApiKey
    from appliance.transport import open_transport
    from appliance.transport.websocket import open_connection
    from appliance.transport.wire import G711Connection

    key = ApiKey(KEY, "bench")
    if kind.startswith("websocket"):
        config = parse_config({"realtime": {"url": url}})
        width = 1 if kind.endswith("pcmu") else 2  # G.711 deltas: one byte per sample
        counter = _Counting(await open_connection(config.realtime, key, sample_width=width))
        conn: Any = G711Connection(counter, "pcmu") if kind.endswith("pcmu") else counter
    else:
        config = parse_config({"realtime": {"transport": kind, "api_url": url}})
        conn = await open_transport(config, key)

    async def sent_bytes() -> int:
        if kind.startswith("websocket"):
            return counter.sent
        if kind == "voice-sdk":
            return int(conn.frames_sent) * (640 + 6)
        stats = await conn._pc.getStats()
        total = 0
        for s in stats.values():
            if type(s).__name__ == "RTCOutboundRtpStreamStats":
                total += s.bytesSent + (12 + 10) * s.packetsSent
        return total

    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ServerEvent] = asyncio.Queue()
    reply = {"samples": 0}

    async def read() -> None:
        async for event in conn.events():
            assert isinstance(event, ServerEvent), event
            if event.type == "response.output_audio.delta":
                reply["samples"] += len(event.audio) // 2
            else:
                events.put_nowait(event)

    async def until(kind: str) -> None:
        async with asyncio.timeout(60):
            while (await events.get()).type != kind:
                pass

    reader = asyncio.create_task(read())
    try:
        await until("session.created")
        await conn.send(SessionUpdate(config.session.to_api(turn_detection_null=True)))
        await until("session.updated")
        speech = _speech()
        step = 24 * CHUNK_MS
        b0, c0, start = await sent_bytes(), time.process_time(), loop.time()
        for i, at in enumerate(range(0, len(speech), step)):
            await asyncio.sleep(max(0.0, start + i * CHUNK_MS / 1000 - loop.time()))
            await conn.send(AppendAudio(speech[at : at + step].tobytes()))
        await asyncio.sleep(max(0.0, start + SPEECH_S - loop.time()))
        c1 = time.process_time()
        # The gate closes. The Voice SDK's turn ends on the service's VAD, when the silence
        # tail that its commit sends arrives: that commit waits for the reply phase.
        if kind != "voice-sdk":
            await conn.send(Commit())
        b1 = await sent_bytes()
        await asyncio.sleep(IDLE_S)
        b2, c2 = await sent_bytes(), time.process_time()
        if kind == "voice-sdk":
            await conn.send(Commit())
        await conn.send(CreateResponse())
        await until("response.done")
        c3 = time.process_time()
        reply_s = reply["samples"] / 24000
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await conn.close()
    return {
        "kind": kind,
        "up_speech_Bps": (b1 - b0) / SPEECH_S,
        "up_idle_Bps": (b2 - b1) / IDLE_S,
        "cpu_speech": (c1 - c0) / SPEECH_S,
        "cpu_idle": (c2 - c1) / IDLE_S,
        "cpu_reply": (c3 - c2) / reply_s if reply_s else float("nan"),
        "reply_s": reply_s,

        "rss_mib": _peak_rss_mib(),
    }


def _peak_rss_mib() -> float:
    """VmHWM: this process's own peak (ru_maxrss would include the parent's, from the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- orchestration


async def _run_all() -> list[dict[str, Any]]:
    from realtime_sim.server import RealtimeSimulator
    from realtime_sim.voicesdk import VoiceSdkSimulator
    from realtime_sim.webrtc import WebRtcSimulator

    results = []
    async with (
        RealtimeSimulator(api_key=KEY, profile="fast") as ws_sim,
        VoiceSdkSimulator(api_key=KEY) as sdk_sim,
        WebRtcSimulator(api_key=KEY) as rtc_sim,
    ):
        urls = {"websocket": ws_sim.url, "websocket-pcmu": ws_sim.url,
                "webrtc": rtc_sim.api_url, "voice-sdk": sdk_sim.api_url}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
        for kind in KINDS:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.transport", "--client", kind, urls[kind],
                stdout=asyncio.subprocess.PIPE, env=env,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"bench.transport: the {kind} client failed")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        print(json.dumps(asyncio.run(_client(sys.argv[2], sys.argv[3]))), flush=True)
        return
    results = _run_all_sync()
    base = results[0]
    print(f"{'transport':<16}{'up, speaking':>14}{'up, idle':>11}{'CPU speaking':>14}"
          f"{'CPU idle':>10}{'CPU reply':>11}{'peak RSS':>10}")
    for r in results:
        print(
            f"{r['kind']:<16}{r['up_speech_Bps'] / 1000:>9.1f} kB/s{r['up_idle_Bps'] / 1000:>6.1f} kB/s"
            f"{r['cpu_speech'] * 100:>12.2f} %{r['cpu_idle'] * 100:>8.2f} %"
            f"{r['cpu_reply'] * 100:>9.2f} %{r['rss_mib']:>7.0f} MiB"
        )
    print("(CPU: % of one core per second of audio; upstream while speaking relative to "
          "websocket PCM16: " + ", ".join(
              f"{r['kind']} {r['up_speech_Bps'] / base['up_speech_Bps']:.2f}" for r in results[1:])
          + ")")


def _run_all_sync() -> list[dict[str, Any]]:
    return asyncio.run(_run_all())


if __name__ == "__main__":
    main()
