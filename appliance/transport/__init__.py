"""Transports that carry realtime events to the service, behind one interface.

    base        Connection: the interface (typed realtime events both ways)
    codec       the realtime events' JSON (WebSocket, WebRTC data channel)
    websocket   the realtime WebSocket (``[realtime] transport = "websocket"``)
    wire        G.711 on that WebSocket (``[audio] wire_format = "pcmu" | "pcma"``)
    g711        the G.711 codec (audioop) and its 8 kHz <-> 24 kHz streaming converters
    http        the small HTTPS requests (aiohttp) the next two make first
    voicesdk    the Voice SDK token socket (``transport = "voice-sdk"``)
    webrtc      WebRTC with aiortc (``transport = "webrtc"``)
    rtcaudio    PCM16 <-> aiortc frames, shared with the simulator's WebRTC endpoint

``open_transport`` picks one from the config. The heavier stacks (aiohttp, aiortc, av) are
imported only when chosen, so the WebSocket daemon does not pay for them in memory, and
they are imported on a worker thread: a second of imports on a Pi Zero must not stall the
event loop (and the audio callbacks queued on it).
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.credentials import ApiKey
    from appliance.transport.base import Connection

_MODULES = {"voice-sdk": "appliance.transport.voicesdk", "webrtc": "appliance.transport.webrtc"}


async def open_transport(config: Config, key: ApiKey) -> Connection:
    """Connect with the configured transport; raises ``TransportError`` subclasses only."""
    transport = config.realtime.transport
    if transport in _MODULES:
        module: Any = await asyncio.to_thread(importlib.import_module, _MODULES[transport])
        opener = module.open_voice_sdk if transport == "voice-sdk" else module.open_webrtc
        conn: Connection = await opener(config.realtime, key)
        return conn
    from appliance.transport.websocket import open_connection

    if config.audio.wire_format == "pcm16":
        return await open_connection(config.realtime, key)
    from appliance.transport.wire import G711Connection

    ws = await open_connection(config.realtime, key, sample_width=1)  # G.711: a byte a sample
    return G711Connection(ws, config.audio.wire_format)
