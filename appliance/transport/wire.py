"""G.711 on the realtime WebSocket: an adapter that converts audio at the edge.

``[audio] wire_format = "pcmu" | "pcma"`` asks the service for 8 kHz G.711 both ways (the
``session.update`` audio formats). The session keeps producing and consuming PCM16 at 24 kHz;
this wrapper, around any realtime-frame connection, rewrites exactly four kinds of event:

- ``session.update``: ``audio.input.format`` / ``audio.output.format`` become
  ``{"type": "audio/pcmu"}`` (or pcma), whichever of the two the update carries;
- ``input_audio_buffer.append``: PCM16 24 kHz -> soxr -> 8 kHz -> G.711 (a third of the
  samples, half the bytes each: upstream is 1/6 of PCM16's bytes);
- ``input_audio_buffer.commit``: the resampler's tail is flushed (one more append) first;
- ``response.output_audio.delta``: G.711 -> 8 kHz -> soxr -> PCM16 24 kHz, one resampler per
  item, flushed into one more delta when ``response.output_audio.done`` arrives.

Everything else passes through untouched. A delta that does not decode is passed on as it
came, so the session's strict decoder logs it like any malformed event. Imports the
standard library, ``appliance.core.protocol`` and ``appliance.transport.g711``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator

from appliance.core import protocol
from appliance.transport import g711
from appliance.transport.base import Connection

log = logging.getLogger(__name__)


class G711Connection:
    """Wraps a realtime connection so the session sees PCM16 24 kHz and the wire G.711."""

    def __init__(self, inner: Connection, law: str) -> None:
        self._inner = inner
        self.session_key = inner.session_key
        self.law = law
        self._format = {"type": g711.FORMATS[law]}
        self._encoder = g711.G711Encoder(law)
        self._decoder = g711.G711Decoder(law)
        self._decoding: str | None = None  # the item the decoder's state belongs to

    # --- upstream -----------------------------------------------------------------------------

    async def send(self, text: str) -> None:
        pcm = protocol.appended_audio(text)
        if pcm is not None:
            coded = self._encoder.encode(pcm)
            if coded:
                await self._inner.send(protocol.append_audio(coded))
            return
        if text == '{"type":"input_audio_buffer.commit"}':
            tail = self._encoder.encode(b"", last=True)
            if tail:
                await self._inner.send(protocol.append_audio(tail))
        elif text == '{"type":"input_audio_buffer.clear"}':
            self._encoder.reset()
        elif '"session.update"' in text:
            text = self._rewrite_session_update(text)
        await self._inner.send(text)

    def _rewrite_session_update(self, text: str) -> str:
        event = json.loads(text)
        if event.get("type") != "session.update":
            return text
        audio = event.get("session", {}).get("audio")
        if isinstance(audio, dict):
            for side in ("input", "output"):
                if isinstance(audio.get(side), dict):
                    audio[side]["format"] = dict(self._format)
        return protocol.encode(event)

    # --- downstream ---------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[str | bytes]:
        async for frame in self._inner.frames():
            if isinstance(frame, str) and '"response.output_audio.' in frame:
                for out in self._downstream(frame):
                    yield out
            else:
                yield frame

    def _downstream(self, frame: str) -> list[str]:
        try:
            event = json.loads(frame)
        except ValueError:
            return [frame]
        if not isinstance(event, dict):
            return [frame]
        kind = event.get("type")
        item = event.get("item_id")
        if kind == "response.output_audio.done" and item == self._decoding:
            tail = self._decoder.decode(b"", last=True)
            self._decoding = None
            if not tail:
                return [frame]
            delta = {k: v for k, v in event.items() if k != "event_id"}
            delta["type"] = "response.output_audio.delta"
            delta["delta"] = base64.b64encode(tail).decode("ascii")
            return [protocol.encode(delta), frame]
        if kind not in ("response.output_audio.delta", "response.audio.delta"):
            return [frame]
        try:
            coded = base64.b64decode(event["delta"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            return [frame]  # the session's decoder names what is wrong
        if item != self._decoding:
            self._decoder.reset()
            self._decoding = item if isinstance(item, str) else None
        event["delta"] = base64.b64encode(self._decoder.decode(coded)).decode("ascii")
        return [protocol.encode(event)]

    async def close(self) -> None:
        await self._inner.close()

    @property
    def latency(self) -> float:
        return self._inner.latency

