"""Acoustic echo cancellation: the speaker's own voice taken out of the microphone.

Owns the WebRTC audio processing module (``pywebrtc_audio.AudioProcessor``: AEC3 echo
canceller, noise suppression, high-pass filter, gain control) and ``load_canceller``, which
builds the canceller the settings ask for. ``pywebrtc-audio`` is optional at install time
(the ``aec`` extra): ``load_canceller`` raises ``ProcessingUnavailable`` when it is
missing, and the daemon then runs without a canceller (the front end's echo guard alone
keeps the device from interrupting itself).

The parts, each in its own module (and every name importable from here as before):

- ``appliance.audio.reference``: ``ReferenceTap``, the speaker's reference handed from the
  playback thread to the capture thread (exactly what was written to the device, with
  when each sample was heard), and ``CaptureClock``, when each microphone sample was
  captured.
- ``appliance.audio.canceller``: ``EchoCanceller`` on the capture thread, which gives each
  10 ms microphone frame the reference heard at the same moment (5 ms ahead, ``LEAD_S``,
  its position kept continuous), runs AEC3 and measures levels. Latencies ALSA does not
  see (the DAC, the air, a sound server) only make the echo come later, which AEC3's delay
  estimator finds (it tracks a few hundred ms).
- ``appliance.core.echo``: the decisions on those levels. Echo coupling: AEC3's suppressor
  also removes the first few hundred ms of the user's voice while the reference plays,
  even when the microphone hears none of the speaker, so while the microphone hears
  nothing of the speaker above the room noise the VAD gets the unprocessed microphone.
  While the speaker plays, a frame the canceller took far below what the microphone heard
  is residual echo and is handed on as silence.
- ``appliance.audio.nearend``: double talk (``[audio.processing] double_talk``). AEC3 also
  silences the user who starts while the reply is loud. A linear canceller (speexdsp's
  MDF) runs beside it on the same frames and reference; a frame it judges the user's goes
  on as the MDF's output instead, and one it judges the echo alone goes on as silence.
  Through real devices the echo path moves with every playback run (the sound server's
  latency at each stream start), slides with two clocks and jumps with underruns, and AEC3
  then lets bursts of echo through as loud as a voice (issue 23). So the echo's delay is
  measured and held 10 ms behind the reference the MDF is given
  (``appliance.audio.drift``, ``appliance.core.drift``), its filter is kept from run to run,
  and while the speaker sounds nothing AEC3 lets through is handed on until the MDF has
  converged and proved itself on the current path (``DoubleTalk.proved``): until then the
  voice cannot interrupt the reply, and a whole reply like that is logged once
  (``EchoCanceller.voice_barge_in``).
- ``appliance.audio.drift``: the echo's delay behind the reference (GCC-PHAT), and the
  reference read between samples.

Imports: numpy, ``appliance.config``, ``appliance.audio.reference``,
``appliance.audio.canceller``, ``appliance.audio.nearend``; pywebrtc_audio lazily, in
``load_canceller``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.audio.canceller import LEAD_S, Apm, EchoCanceller
from appliance.audio.nearend import load_mdf
from appliance.audio.reference import FRAME, RATE, CaptureClock, ReferenceTap, Samples
from appliance.config import ProcessingSettings

__all__ = [
    "FRAME",
    "LEAD_S",
    "RATE",
    "Apm",
    "CaptureClock",
    "EchoCanceller",
    "ProcessingUnavailable",
    "PyWebrtcApm",
    "ReferenceTap",
    "canceller_installed",
    "load_canceller",
]

log = logging.getLogger(__name__)


class ProcessingUnavailable(Exception):
    """The audio processing module is not installed or does not load."""



def canceller_installed() -> bool:
    """Whether the pywebrtc-audio package (the ``aec`` extra) is installed."""
    return importlib.util.find_spec("pywebrtc_audio") is not None


class PyWebrtcApm:
    """pywebrtc-audio's ``AudioProcessor`` (the same AEC3) in the shape of ``Apm``, on the
    canceller's two frame buffers."""

    def __init__(self, processor: Any) -> None:
        self._ap = processor
        self._far: Samples = np.zeros(FRAME, dtype=np.int16)

    def process_reverse_stream(self, frame: Any) -> None:
        self._far[:] = np.frombuffer(frame, dtype=np.int16)

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        self._ap.stream_delay_ms = delay_ms

    def process_stream(self, frame: Any) -> None:
        near: Samples = np.frombuffer(frame, dtype=np.int16)
        near[:] = self._ap.process(near, self._far)


def load_canceller(
    settings: ProcessingSettings,
    tap: ReferenceTap | None,
    clock: Callable[[], float] = time.monotonic,
    speexdsp: str | None = None,
    on_voice_barge_in: Callable[[bool], None] | None = None,
) -> EchoCanceller | None:
    """The canceller ``settings`` asks for, or None when every feature is off.

    Raises ``ProcessingUnavailable`` (one line, naming the missing package) when
    pywebrtc-audio (the ``aec`` extra) is not installed or its native library does not load.
    ``speexdsp`` names the library for the double-talk rule (default: the system's).
    ``on_voice_barge_in`` is called on the capture thread when the canceller turns voice
    barge-in off or back on (``EchoCanceller.voice_barge_in``).
    """
    if not settings.enabled:
        return None
    mdf = None
    if settings.echo_cancellation and settings.double_talk:
        try:
            mdf = load_mdf(FRAME, RATE, library=speexdsp)
        except OSError as exc:
            log.warning(
                "[audio.processing] double_talk: %s; barge-in over a loud reply is slower", exc
            )
    try:
        import pywebrtc_audio
    except ImportError as exc:
        raise ProcessingUnavailable(
            "[audio.processing] needs the pywebrtc-audio package (pip install "
            f"'appliance[aec]'), which is not installed: {exc}"
        ) from exc
    try:
        processor = pywebrtc_audio.AudioProcessor(
            RATE,
            1,
            echo_cancellation=settings.echo_cancellation,
            noise_suppression=settings.noise_suppression,
            high_pass_filter=True,
            auto_gain_control=settings.auto_gain,
        )
    except Exception as exc:  # a native library that fails to load raises anything
        raise ProcessingUnavailable(
            f"[audio.processing]: the WebRTC audio processing module failed to load: {exc}"
        ) from exc
    return EchoCanceller(
        PyWebrtcApm(processor),
        lambda buf: buf,
        tap if settings.echo_cancellation else None,
        always=settings.always_on,
        clock=clock,
        mdf=mdf,
        on_voice_barge_in=on_voice_barge_in,
    )
