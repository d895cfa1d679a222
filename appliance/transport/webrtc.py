"""WebRTC as a realtime-protocol adapter (``transport = "webrtc"``), with aiortc.

The flow of seeds/03: ``GET {api_url}/v1/realtime/ice-servers`` (Bearer), an
``RTCPeerConnection`` with those servers, the microphone as an Opus audio track (sendrecv, so
the reply comes back on the same transceiver) and the ``oai-events`` data channel, the SDP
offer ``POST``ed to ``{api_url}/v1/realtime/calls`` (Bearer, ``application/sdp``), the answer
applied. Events flow on the data channel in the realtime schema; the service's
``session.created`` arrives there when it opens and the session answers with its
``session.update``, as on the WebSocket.

What the adapter translates, so the session above does not know it is on WebRTC (the
channel's JSON is ``appliance.transport.codec``; audio never passes through JSON here):

- ``AppendAudio`` is not sent on the channel: its PCM16 24 kHz goes into the
  microphone track (aiortc encodes Opus). **The track sends silence frames while the gate
  is closed.** Muting it (handing aiortc no frames, so no RTP) was tried and rejected: a
  receiver's jitter buffer holds the last packets of a turn until more packets come, so
  the end of every turn would reach the service only with the next one. Silence costs
  about 1.4 kB/s and the Opus encoding (docs/transports.md). So that the service's input
  buffer holds the turn and not the silence before it, the first append of a turn is
  preceded by ``input_audio_buffer.clear`` on the channel.
- ``input_audio_buffer.commit`` waits until the track has sent what was queued (the channel
  would otherwise overtake the turn's last RTP packets), then goes out.
- Reply audio arrives on the RTP track, not as ``response.output_audio.delta``: frames heard
  between the service's ``output_audio_buffer.started`` and ``output_audio_buffer.stopped``
  become typed audio deltas (48 kHz stereo -> 24 kHz mono PCM, soxr) for the current item,
  and ``response.done`` is held back until the buffer stopped (plus ``DRAIN_S`` for the
  packets still in the jitter buffer), so the session plays the whole reply.
- A service that sends no ``output_audio_buffer.*`` events (the seed does not name them)
  still works, by a fallback: track audio counts from the reply's audio item on, and
  ``response.done`` is released after ``SILENT_END_S`` of track silence that follows heard
  reply audio.
- Barge-in (``response.cancel`` or ``conversation.item.truncate``) first sends
  ``output_audio_buffer.clear``, as WebRTC requires; track audio is then ignored until the
  next ``output_audio_buffer.started``.

Imports aiortc, av, numpy, ``appliance.core.protocol``, ``appliance.transport.codec``,
``appliance.transport.http`` and ``appliance.transport.rtcaudio`` (the frame format, shared
with the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from appliance.config import RealtimeSettings
from appliance.core import protocol
from appliance.core.protocol import (
    AppendAudio,
    CancelResponse,
    ClearInput,
    ClientEvent,
    Commit,
    Incoming,
    ServerEvent,
    Truncate,
)
from appliance.credentials import ApiKey
from appliance.errors import TransportError
from appliance.transport import codec, rtcaudio
from appliance.transport.http import request, request_json

log = logging.getLogger(__name__)

ICE_PATH = "/v1/realtime/ice-servers"
CALLS_PATH = "/v1/realtime/calls"
CHANNEL = "oai-events"
MAX_LEAD_S = 0.5
"""How far ahead of real time the microphone track may run to catch up a turn's pre-roll."""
CUSHION_FRAMES = 4
"""Queued frames the catching up leaves in place: the gate delivers 40 ms at a time, and a
frame that finds the queue short mid-turn is padded with silence, a gap in the turn."""
CATCH_UP_S = 0.004
"""Per 20 ms frame: 16 ms apart while catching up, 24 ms apart while falling back in step."""
SILENT_END_S = 0.8
"""Without ``output_audio_buffer.*`` events: track silence, after the reply was heard and
``response.done`` came, that ends the reply (longer than a TTS sentence pause)."""
SILENT_PEAK = 64  # -54 dBFS: digital silence or comfort noise
_RELEASE = "release"  # a marker in the inbox, never a server event
DRAIN_S = 0.15
"""After ``output_audio_buffer.stopped``: time for RTP packets still in flight."""
COMMIT_WAIT_S = 2.0


class MicTrack(MediaStreamTrack):
    """The microphone as an audio track: gated audio when there is some, silence otherwise.

    aiortc pulls a frame from ``recv`` whenever it wants one; the track paces itself at
    20 ms per frame. While more than ``CUSHION_FRAMES`` are queued (the gate's pre-roll
    arrives at once when a turn starts) frames go out every 16 ms, so the turn catches up
    with the live microphone (less the cushion) instead of trailing it by the pre-roll; the RTP clock then runs ahead of real
    time by what was caught up (at most ``MAX_LEAD_S``), and silence frames go out every
    24 ms until it is back in step. Timestamps always advance by 20 ms per frame.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = bytearray()
        self._start = 0.0
        self._pts = 0
        self._lead = 0.0
        self.drained = asyncio.Event()
        self.drained.set()
        self.frames = 0
        """Frames handed to the encoder (silence included)."""

    def push(self, pcm: bytes) -> None:
        self._queue += pcm
        self.drained.clear()

    def clear(self) -> None:
        self._queue.clear()
        self.drained.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        size = rtcaudio.FRAME_SAMPLES * 2
        if not self.frames:
            self._start = time.monotonic()
        if len(self._queue) > size * CUSHION_FRAMES:
            self._lead = min(self._lead + CATCH_UP_S, MAX_LEAD_S)
        elif not self._queue:
            self._lead = max(self._lead - CATCH_UP_S, 0.0)
        delay = self._start + self._pts / rtcaudio.RATE - self._lead - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = rtcaudio.pcm_frame(rtcaudio.take_frame(self._queue), self._pts)
        if not self._queue:
            self.drained.set()
        self._pts += rtcaudio.FRAME_SAMPLES
        self.frames += 1
        return frame


class WebRtcConnection:
    """An open peer connection presenting typed realtime events."""

    def __init__(self, pc: RTCPeerConnection, channel: RTCDataChannel, mic: MicTrack,
                 session_key: str) -> None:
        self._pc = pc
        self._channel = channel
        self._mic = mic
        self.session_key = session_key
        self._inbox: asyncio.Queue[Incoming | str | TransportError] = asyncio.Queue()
        self._turn_open = False  # appends flowed since the last commit/clear
        self._cleared_response: str | None = None
        # Reply audio bookkeeping.
        self._playing_response: str | None = None  # between buffer started and stopped
        self._audio_item = ""
        self._response_id = ""
        self._held_done: list[ServerEvent] = []
        self._drain_until: float | None = None
        self._buffer_events = False  # the service sends output_audio_buffer.* events
        self._heard = False  # (fallback) loud reply audio came since the reply started
        self._silent_s = 0.0  # (fallback) silence on the track since then
        self._down = rtcaudio.downsampler()
        self._tasks: set[asyncio.Task[None]] = set()
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._inbox.put_nowait(
            TransportError("the data channel closed")))
        pc.on("connectionstatechange", self._on_state)

    # --- peer connection events ---------------------------------------------------------------

    def watch_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._read_track(track), name="webrtc reply track")
        self._tasks.add(task)

    def _on_state(self) -> None:
        state = self._pc.connectionState
        log.debug("webrtc: connection %s", state)
        if state in ("failed", "closed"):
            self._inbox.put_nowait(TransportError(f"peer connection {state}"))

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            log.warning("webrtc: ignored a binary data channel message of %d bytes", len(message))
            return
        self._inbox.put_nowait(codec.decode(message))

    async def _read_track(self, track: MediaStreamTrack) -> None:
        fresh = True
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                if not (self._audio_on and self._audio_item):
                    fresh = True  # between replies: decoded by aiortc, not resampled
                    continue
                pcm = rtcaudio.mono(frame)
                if frame.sample_rate != rtcaudio.DECODED_RATE:
                    log.warning("webrtc: reply track at %d Hz ignored", frame.sample_rate)
                    continue
                if fresh:
                    self._down = rtcaudio.downsampler()
                    fresh = False
                wide = self._down.resample_chunk(pcm.astype(np.int16))
                if wide.size:
                    self._inbox.put_nowait(protocol.audio_delta(
                        self._audio_item, wide.astype("<i2").tobytes(), self._response_id))
                if not self._buffer_events:
                    self._watch_silence(pcm, frame.samples / rtcaudio.DECODED_RATE)
        except MediaStreamError:
            pass

    def _watch_silence(self, pcm: np.ndarray, seconds: float) -> None:
        """Fallback end of reply for a service that sends no ``output_audio_buffer.*``."""
        if pcm.size and int(np.abs(pcm.astype(np.int32)).max()) >= SILENT_PEAK:
            self._heard, self._silent_s = True, 0.0
            return
        self._silent_s += seconds
        if self._heard and self._held_done and self._silent_s >= SILENT_END_S:
            self._heard, self._silent_s = False, 0.0
            self._inbox.put_nowait(_RELEASE)

    # --- downstream ---------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Incoming]:
        while True:
            timeout = None
            if self._drain_until is not None:
                timeout = max(0.0, self._drain_until - asyncio.get_running_loop().time())
            try:
                async with asyncio.timeout(timeout):
                    message = await self._inbox.get()
            except TimeoutError:
                message = _RELEASE
            if isinstance(message, str):  # _RELEASE
                self._drain_until = None
                self._playing_response = None
                for held in self._held_done:
                    yield held
                self._held_done.clear()
                continue
            if isinstance(message, TransportError):
                raise message
            if isinstance(message, ServerEvent) and message.type != protocol.AUDIO_DELTA:
                if self._on_event(message):
                    yield message
            else:
                yield message  # audio from the track, or a malformed event for the session

    def _on_event(self, event: ServerEvent) -> bool:
        """One data channel event: pass it on (True), hold it back, or use it for the track."""
        kind = event.type
        if kind.startswith("output_audio_buffer."):
            self._buffer_events = True
        if kind == "output_audio_buffer.started":
            self._playing_response = event.get_str("response_id") or self._response_id
            self._drain_until = None
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            if self._playing_response is not None:
                self._drain_until = asyncio.get_running_loop().time() + (
                    DRAIN_S if kind.endswith("stopped") else 0.0)
        elif kind == "response.created":
            self._response_id = str(event.data["response"].get("id", ""))
        elif kind == "response.output_item.added":
            item = event.data["item"]
            if item.get("type") == "message":
                self._audio_item = str(item.get("id", ""))
                if not self._buffer_events:  # fallback: the reply may start on the track now
                    self._playing_response = self._response_id
                    self._heard, self._silent_s = False, 0.0
        elif kind in ("response.done", "response.output_audio.done") and (
            self._playing_response is not None
        ):
            self._held_done.append(event)
            if not self._buffer_events and self._drain_until is None:
                # Fallback: released by track silence (``_watch_silence``), at worst by this.
                self._drain_until = asyncio.get_running_loop().time() + 60.0
            return False
        return True

    @property
    def _audio_on(self) -> bool:
        """Track audio is reply audio: the buffer plays and was not cleared by a barge-in."""
        return self._playing_response is not None and self._playing_response != self._cleared_response

    # --- upstream -----------------------------------------------------------------------------

    async def send(self, event: ClientEvent) -> None:
        if isinstance(event, AppendAudio):
            if not self._turn_open:
                self._turn_open = True
                self._mic.clear()
                self._channel_send(codec.encode(ClearInput()))
            self._mic.push(event.audio)
            return
        if isinstance(event, Commit):
            self._turn_open = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMIT_WAIT_S):
                    await self._mic.drained.wait()
            await asyncio.sleep(0.04)  # the last frame leaves the encoder and the socket
        elif isinstance(event, ClearInput):
            self._turn_open = False
            self._mic.clear()
        elif isinstance(event, CancelResponse | Truncate) and (
            self._cleared_response != self._response_id
        ):
            self._cleared_response = self._response_id
            if self._playing_response is not None:  # in case output_audio_buffer.cleared never comes
                self._drain_until = asyncio.get_running_loop().time() + 1.0
            self._channel_send('{"type":"output_audio_buffer.clear"}')
        self._channel_send(codec.encode(event))

    def _channel_send(self, text: str) -> None:
        if self._channel.readyState != "open":
            raise TransportError(f"the data channel is {self._channel.readyState}")
        self._channel.send(text)

    @property
    def latency(self) -> float:
        """Not measured on WebRTC (ICE consent checks keep the path alive): 0."""
        return 0.0

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._mic.stop()
        await self._pc.close()


def ice_servers(answer: dict[str, Any]) -> list[RTCIceServer]:
    """The ``ice_servers`` of the ice-servers answer, as aiortc wants them (bad ones skipped)."""
    servers: list[RTCIceServer] = []
    for entry in answer.get("ice_servers") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("urls"), str | list):
            log.warning("webrtc: ignored an ICE server entry without urls")
            continue
        servers.append(RTCIceServer(urls=entry["urls"], username=entry.get("username"),
                                    credential=entry.get("credential")))
    return servers


async def open_webrtc(settings: RealtimeSettings, key: ApiKey) -> WebRtcConnection:
    """ICE servers, offer, answer, open data channel; raises ``TransportError`` only."""
    base = settings.api_url.rstrip("/")
    servers = ice_servers(await request_json(
        "GET", base + ICE_PATH, key, what="webrtc ice-servers", timeout_s=settings.connect_timeout_s))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    mic = MicTrack()
    pc.addTrack(mic)
    channel = pc.createDataChannel(CHANNEL, ordered=True)
    conn = WebRtcConnection(pc, channel, mic, f"appliance-{uuid.uuid4().hex[:12]}")
    try:
        pc.on("track", conn.watch_track)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await pc.setLocalDescription(await pc.createOffer())  # gathers candidates
        _, answer = await request(
            "POST", base + CALLS_PATH, key, what="webrtc call", timeout_s=settings.connect_timeout_s,
            body=pc.localDescription.sdp, content_type="application/sdp",
        )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, KeyError, its own errors...
            raise TransportError(
                f"webrtc call answer is not a usable SDP answer ({exc.__class__.__name__})"
            ) from None
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await opened.wait()
        except TimeoutError:
            raise TransportError("webrtc: the data channel did not open (ICE/DTLS failed)") from None
    except BaseException:
        await conn.close()
        raise
    log.info("webrtc: connected", extra={"SESSION_ID": conn.session_key})
    return conn
