"""G.711 on the realtime WebSocket: an adapter that converts audio at the edge.

``[audio] wire_format = "pcmu" | "pcma"`` asks the service for 8 kHz G.711 both ways (the
``session.update`` audio formats). The session keeps producing and consuming PCM16 at 24 kHz;
this wrapper, around a realtime connection whose codec decodes audio as one byte per sample
(``open_connection(..., sample_width=1)``), changes exactly four kinds of typed event:

- ``SessionUpdate``: ``audio.input.format`` / ``audio.output.format`` become
  ``{"type": "audio/pcmu"}`` (or pcma), whichever of the two the update carries;
- ``AppendAudio``: PCM16 24 kHz -> soxr -> 8 kHz -> G.711 (a third of the samples, half the
  bytes each: upstream is 1/6 of PCM16's bytes);
- ``Commit``: the resampler's tail is flushed (one more append) first;
- audio deltas: G.711 -> 8 kHz -> soxr -> PCM16 24 kHz, one resampler per item, flushed
  into one more delta when ``response.output_audio.done`` arrives.

Everything else passes through untouched. Imports the standard library,
``appliance.core.protocol`` and ``appliance.transport.g711``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from appliance.core import protocol
from appliance.core.protocol import (
    AppendAudio,
    ClearInput,
    ClientEvent,
    Commit,
    Incoming,
    ServerEvent,
    SessionUpdate,
)
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

    async def send(self, event: ClientEvent) -> None:
        if isinstance(event, AppendAudio):
            coded = self._encoder.encode(event.audio)
            if coded:
                await self._inner.send(AppendAudio(coded, event_id=event.event_id))
            return
        if isinstance(event, Commit):
            tail = self._encoder.encode(b"", last=True)
            if tail:
                await self._inner.send(AppendAudio(tail))
        elif isinstance(event, ClearInput):
            self._encoder.reset()
        elif isinstance(event, SessionUpdate):
            event = SessionUpdate(self._rewrite(event.session), event_id=event.event_id)
        await self._inner.send(event)

    def _rewrite(self, session: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``session`` with G.711 audio formats (the session's own is untouched)."""
        out = dict(session)
        audio = out.get("audio")
        if isinstance(audio, Mapping):
            audio = out["audio"] = dict(audio)
            for side in ("input", "output"):
                if isinstance(audio.get(side), Mapping):
                    audio[side] = {**audio[side], "format": dict(self._format)}
        return out

    # --- downstream ---------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Incoming]:
        async for event in self._inner.events():
            if isinstance(event, ServerEvent) and event.type in _AUDIO_EVENTS:
                for out in self._downstream(event):
                    yield out
            else:
                yield event

    def _downstream(self, event: ServerEvent) -> list[Incoming]:
        item = event.data.get("item_id")
        if event.type == "response.output_audio.done":
            if item != self._decoding:
                return [event]
            tail = self._decoder.decode(b"", last=True)
            self._decoding = None
            if not tail:
                return [event]
            return [protocol.audio_delta(str(item), tail, event.get_str("response_id")), event]
        if item != self._decoding:
            self._decoder.reset()
            self._decoding = item if isinstance(item, str) else None
        return [ServerEvent(event.type, event.data, self._decoder.decode(event.audio))]

    async def close(self) -> None:
        await self._inner.close()

    @property
    def latency(self) -> float:
        return self._inner.latency


_AUDIO_EVENTS = frozenset({protocol.AUDIO_DELTA, "response.output_audio.done"})
