"""The WebRTC endpoint on loopback (seeds/03), for the webrtc transport's tests.

``GET /v1/realtime/ice-servers`` answers ``{"ice_servers": []}`` (loopback needs no STUN);
``POST /v1/realtime/calls`` takes an SDP offer (``Content-Type: application/sdp``, Bearer
key, else 415 / 401), answers with aiortc (201, ``application/sdp``). The offer must carry an
audio track and the ``oai-events`` data channel. Behind each call is the realtime
simulator's engine (:class:`SimSession`), as on the WebSocket, with WebRTC's differences:

- ``session.created`` goes out when the data channel opens; events flow on the channel;
- the caller's Opus track is decoded and appended to the input buffer (20 ms at a time);
  a ``commit`` is applied 100 ms after it arrives, as RTP may still carry the turn's end;
- reply audio goes out on the RTP track in real time, never as
  ``response.output_audio.delta``; ``output_audio_buffer.started`` / ``.stopped`` frame
  it, and ``output_audio_buffer.clear`` (WebRTC only) drops what is left and answers
  ``output_audio_buffer.cleared`` (``buffer_events=False`` leaves those events out).

Imports aiohttp (server), aiortc, av, numpy, the simulator's engine and endpoint,
``appliance.transport.codec`` and ``appliance.transport.rtcaudio`` (the frame format, shared
with the webrtc transport).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.simulator.endpoint import Endpoint
from appliance.simulator.engine import SimSession
from appliance.transport import codec, rtcaudio

log = logging.getLogger(__name__)

ICE_PATH = "/v1/realtime/ice-servers"
CALLS_PATH = "/v1/realtime/calls"
CHANNEL = "oai-events"
COMMIT_DELAY_S = 0.1
AHEAD_MS = 300  # reply audio produced ahead of the track
AHEAD_BYTES = rtcaudio.RATE * 2 * AHEAD_MS // 1000


class ReplyTrack(MediaStreamTrack):
    """The agent's voice: queued PCM16 24 kHz in 20 ms frames at real time, else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue = bytearray()
        self._start = 0.0
        self._pts = 0
        self.sent_audio_frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pts:
            delay = self._start + self._pts / rtcaudio.RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            self._start = time.monotonic()
        if self.queue:
            self.sent_audio_frames += 1
        frame = rtcaudio.pcm_frame(rtcaudio.take_frame(self.queue), self._pts)
        self._pts += rtcaudio.FRAME_SAMPLES
        return frame


class _Call:
    """One peer connection: its engine, its tracks and its channel."""

    def __init__(self, sim: WebRtcSimulator, pc: RTCPeerConnection) -> None:
        self.sim = sim
        self.pc = pc
        self.session = SimSession()
        self.reply = ReplyTrack()
        self.channel: RTCDataChannel | None = None
        self.received_audio = bytearray()
        self.wake = asyncio.Event()
        self.incoming: asyncio.Queue[str] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.playing: str | None = None
        self.done_playing = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL:
            log.info("webrtc simulator: closing unexpected data channel %r", channel.label)
            channel.close()
            return
        self.channel = channel
        channel.on("message", self.incoming.put_nowait)
        self.spawn(self.process())
        self.spawn(self.write())

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.spawn(self.listen(track))

    def send(self, event: dict[str, Any]) -> None:
        if event["type"].startswith("output_audio_buffer.") and not self.sim.buffer_events:
            return
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(event))

    async def listen(self, track: MediaStreamTrack) -> None:
        """The caller's microphone: Opus -> 48 kHz -> 24 kHz PCM16 -> the input buffer."""
        down = rtcaudio.downsampler()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                pcm = rtcaudio.mono(frame).astype(np.int16)
                wide = down.resample_chunk(pcm).astype("<i2").tobytes()
                if not wide:
                    continue
                self.received_audio += wide
                if self.channel is not None:  # the session starts with the channel
                    self.session.receive(json.dumps({"type": "input_audio_buffer.append",
                                                     "audio": base64.b64encode(wide).decode()}))
                    self.wake.set()

    async def process(self) -> None:
        """Data channel events, in order."""
        while True:
            text = await self.incoming.get()
            if not isinstance(text, str):
                continue
            self.sim.events.append(text)
            kind = codec.event_type(text)
            if kind == "output_audio_buffer.clear":
                self.sim.clears += 1
                self.reply.queue.clear()
                if self.playing is not None:
                    self.send({"type": "output_audio_buffer.cleared", "response_id": self.playing})
                    self.playing = None
                continue
            if kind == "input_audio_buffer.commit":
                await asyncio.sleep(COMMIT_DELAY_S)
            self.session.receive(text)
            self.wake.set()

    async def write(self) -> None:
        """Engine events to the channel; reply audio to the track, framed by buffer events."""
        while True:
            self.wake.clear()
            if self.session.response_active and len(self.reply.queue) < AHEAD_BYTES:
                self.session.pump(1)
            for event in self.session.events_to_send():
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    if self.playing is None:
                        self.playing = event["response_id"]
                        self.done_playing = False
                        self.send({"type": "output_audio_buffer.started",
                                   "response_id": self.playing})
                    if self.playing == event["response_id"]:
                        self.reply.queue += base64.b64decode(event["delta"])
                    continue
                if kind == "response.done" and event["response"]["id"] == self.playing:
                    self.done_playing = True
                self.send(event)
            if self.playing is not None and self.done_playing and not self.reply.queue:
                await asyncio.sleep(0.02)  # the last frame leaves
                self.send({"type": "output_audio_buffer.stopped", "response_id": self.playing})
                self.playing = None
            if self.session.response_active or self.playing is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await self.wake.wait()
            else:
                await self.wake.wait()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.reply.stop()
        await self.pc.close()


class WebRtcSimulator(Endpoint):
    """``async with WebRtcSimulator(api_key=...) as sim``; ``sim.api_url`` is the base URL."""

    def __init__(self, *, api_key: str, host: str = "127.0.0.1", port: int = 0,
                 buffer_events: bool = True) -> None:
        super().__init__(host=host, port=port)
        self._api_key = api_key
        self.buffer_events = buffer_events
        """Send ``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` (False: a
        service that does not, for the client's fallback)."""
        self.calls: list[_Call] = []
        self.events: list[str] = []
        """Every data channel event received, all calls, in order."""
        self.clears = 0
        """``output_audio_buffer.clear`` events received."""
        self.request_paths: list[str] = []

    @property
    def sessions(self) -> list[SimSession]:
        return [call.session for call in self.calls]

    def received(self) -> list[dict[str, Any]]:
        """The data channel events as parsed JSON (unparseable ones left out)."""
        out = []
        for text in self.events:
            with contextlib.suppress(ValueError):
                out.append(json.loads(text))
        return out

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(ICE_PATH, self._ice)
        router.add_post(CALLS_PATH, self._call)

    async def _close_peers(self) -> None:
        for call in self.calls:
            await call.close()

    def _authorized(self, request: web.Request) -> bool:
        self.request_paths.append(request.path_qs)
        return request.headers.getall("Authorization", []) == [f"Bearer {self._api_key}"]

    async def _ice(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "invalid API key"}, status=401)
        return web.json_response({"ice_servers": []})

    async def _call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "invalid API key"}, status=401)
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="Content-Type must be application/sdp\n")
        offer = await request.text()
        if "m=audio" not in offer or "m=application" not in offer:
            return web.Response(status=400, text="The offer needs an audio track and the "
                                f"{CHANNEL} data channel.\n")
        pc = RTCPeerConnection()
        call = _Call(self, pc)
        self.calls.append(call)
        pc.on("datachannel", call.on_channel)
        pc.on("track", call.on_track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except ValueError as exc:
            return web.Response(status=400, text=f"Invalid SDP offer: {exc}\n")
        pc.addTrack(call.reply)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp,
                            content_type="application/sdp")
