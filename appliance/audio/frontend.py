"""The capture-side front end: the DSP and buffers between device audio and ``Listener``.

Runs on the capture thread, one call per ALSA period or per block of them (``wants`` tells
the thread how many it may gather: the capture CPU is per wake-up), so it must stay cheap
and allocate little: it keeps the period in a history ring (the pre-roll) at the source
rate, resamples it to 16 kHz for the speech detector (webrtcvad, skipped when a frame is far
below speech energy) and the wake-word detector, and hands their verdicts to the pure
``appliance.core.listen.Listener``, which owns every decision: modes, mute, push-to-talk,
the wake and follow-up windows, the echo guard, the earcon hold, the pre-roll and the
pacing. Only while a turn streams is audio resampled to 24 kHz for upstream (soxr streams),
so a quiet room costs no upstream resampling. What goes upstream leaves through ``emit``
(the daemon hands each output to the event loop with ``call_soon_threadsafe``), so the loop
wakes only when there is something to send, never per period.

The loop thread talks back only through ``post`` (a ``Control`` message on a deque, which is
thread-safe), then wakes the capture thread (``CaptureThread.wake``); the messages are
drained at the next ``wants`` or ``process``. Nothing is read across threads.

Stages, in ``process``: (cancel) -> history -> ``Listener.block`` -> by its route: drop,
send, the wake-word detector, or the speech detector -> ``Listener.frame`` -> chunking ->
``emit``. The speech detector is either the staged pymicro-vad
(``appliance.audio.micro_vad.SpeechStage``: a level stage wakes the model, which catches up
on the recent audio; at a pause in a turn the prosodic hint, ``appliance.audio.prosody``,
judges whether the phrase is complete) or, with ``[gate] detector = "webrtc"``, an energy
pre-check -> webrtcvad on 30 ms frames. With a ``canceller`` (``appliance.audio.aec``), the period is
resampled to 16 kHz, cancelled, and everything after (the detectors and, resampled to
24 kHz, upstream) gets the cancelled signal.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from appliance.audio import prosody
from appliance.audio.micro_vad import SpeechStage
from appliance.audio.reference import CaptureClock
from appliance.audio.ring import SampleRing
from appliance.audio.vad import WebRtcVad
from appliance.core.listen import (
    LISTEN_BATCH_MS,
    WAKE_BATCH_MS,
    WAKE_BLOCK_MS,
    WAKE_LOOKBACK_S,
    Control,
    Detector,
    EndTurn,
    Guard,
    Hint,
    Listener,
    ListenSettings,
    Pace,
    Route,
    StartTurn,
    WakeWindow,
)

# With the listener's names the daemon, the benches and the tests know as the front end's.
__all__ = [
    "ENERGY_FLOOR",
    "LISTEN_BATCH_MS",
    "STREAM_PACE_MS",
    "UPSTREAM_RATE",
    "VAD_RATE",
    "WAKE_BATCH_MS",
    "AudioChunk",
    "Canceller",
    "FrontEnd",
    "GateOutput",
    "SpeechStarted",
    "SpeechStopped",
    "Vad",
    "WakeDetector",
    "WakeWindow",
]

UPSTREAM_RATE = 24000
VAD_RATE = 16000
# Frames quieter than this RMS (about -56 dBFS) cannot be speech; webrtcvad is skipped.
ENERGY_FLOOR = (32768 * 10 ** (-56 / 20)) ** 2
_AEC_FRAME = VAD_RATE // 100  # the canceller's frame (appliance.audio.aec.FRAME)
# A live chunk this many samples short of chunk_ms (the resampler's delay) goes out anyway.
_CHUNK_SLACK = 24
# While a turn streams, the capture thread hands audio over at least this often whatever the
# chunk length: the turn's end is decided on the frames handed over, so a 100 ms chunk must
# not make it up to 100 ms late (the partial chunk and the commit go out at that decision).
# Longer blocks only while no frame in them can decide anything (``Listener.undecided``).
STREAM_PACE_MS = 40
HINT_S = 1.5  # the end-of-turn hint reads this much of the turn's end (prosody.LOOKBACK_S)
AT_ONCE = frozenset({Control.EARCON_HOLD, Control.MUTE_ON, Control.SPEAKER_PLAYING})
"""Control messages that hold more back take effect at once (``FrontEnd.post``): judging
some audio from before them by them is the safe side (the capture clock may run a little
behind after lost audio), as judging the audio before an end of hold or of mute is not."""
# The capture clock that times the control messages (``FrontEnd.post``): a window short
# enough that audio lost to an overrun delays them for a second or two at most...
CLOCK_WINDOW_S = 1.0
# ...and audio handed over later than this after its capture time could not have waited in
# the device's buffer (``capture.BUFFER_S``, 0.5 s): some was lost in between (a device
# reopened after an outage), and the clock starts afresh.
LOST_S = 1.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A turn begins: the pre-roll follows as the first chunks."""

    preroll_ms: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """PCM16 mono at 24 kHz to send upstream."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The turn ended. ``sent_ms`` is how much audio was sent; ``cancelled`` means mute;
    ``discarded``: too little voiced speech to be a request (clear it, do not answer);
    ``silence_ms``: how long before this the user's speech ended."""

    sent_ms: int
    cancelled: bool = False
    discarded: bool = False
    silence_ms: int = 0


GateOutput = SpeechStarted | AudioChunk | SpeechStopped | WakeWindow


class WakeDetector(Protocol):
    """A wake-word detector on 16 kHz PCM16 (``appliance.audio.wake.WakeWordDetector``):
    any number of samples in, True when the wake word ended in them. ``strict`` asks for
    more evidence (set while the speaker plays)."""

    strict: bool

    def __call__(self, pcm: np.ndarray) -> bool: ...


class Vad(Protocol):
    """A voice-activity detector on 16 kHz PCM16 frames (``appliance.audio.vad.WebRtcVad``)."""

    def __call__(self, frame: bytes) -> bool: ...

    def set_aggressiveness(self, level: int) -> None: ...


class Canceller(Protocol):
    """Echo cancellation on 16 kHz PCM16 (``appliance.audio.aec.EchoCanceller``): takes any
    number of samples, returns the processed ones completed so far."""

    def process(self, mono: np.ndarray) -> np.ndarray: ...

    @property
    def idle(self) -> bool:
        """Nothing to cancel for a while: reads may come in blocks again."""

    @property
    def pending(self) -> int:
        """Samples it holds until they complete a frame of its own."""


class _Resampler:
    """A soxr stream, or nothing when the rates already match."""

    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return mono
        out: np.ndarray = self._stream.resample_chunk(mono)
        return out

    def finish(self) -> np.ndarray:
        """What the filter still holds (end of a turn); then ready for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return out

    def clear(self) -> None:
        if self._stream is not None:
            self._stream.clear()


class FrontEnd:
    def __init__(
        self,
        *,
        device_rate: int,
        settings: ListenSettings,
        chunk_ms: int,
        vad: Vad | None,
        emit: Callable[[GateOutput], None],
        canceller: Canceller | None = None,
        wake: WakeDetector | None = None,
        speech: SpeechStage | None = None,
        hint: Callable[[np.ndarray], float] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``vad``: webrtcvad, for ``Detector.WEBRTC``. For ``Detector.MICRO`` the front end
        makes its own staged pymicro-vad (``speech``) and end-of-turn hint (``hint``,
        ``appliance.audio.prosody.complete`` on the last ``HINT_S`` of 16 kHz audio) unless
        given them. ``clock``: the loop's clock (``time.monotonic``), read as each capture
        period is handed over: it times the microphone (``CaptureClock``), and each
        control message takes effect from the audio captured after it was posted. None:
        at the next call (audio fed faster than real time, as in tests)."""
        self._emit = emit
        self._device_rate = device_rate
        self._to16 = _Resampler(device_rate, VAD_RATE, "LQ")
        # Echo cancellation (appliance.audio.aec) works at 16 kHz: with it, everything
        # downstream (the VAD and, resampled to 24 kHz, upstream) is the cancelled signal.
        self._canceller = canceller
        # The history (pre-roll) keeps the source signal at its own rate; it is resampled to
        # 24 kHz only while a turn streams, so a quiet room costs no upstream resampling.
        self._rate = VAD_RATE if canceller is not None else device_rate
        # soxr's filtering qualities hand out audio in blocks of their own (HQ: ~30 ms, and
        # ~16 ms of delay) whatever the input size: that was most of capture-to-wire. Going
        # up from 16 kHz there is nothing to alias, so the block-free cubic "QQ" does (its
        # images of 4-8 kHz speech land at 8-12 kHz some 25 dB down); going down from 44.1
        # or 48 kHz the anti-alias filter matters and HQ stays.
        self._to24 = _Resampler(
            self._rate, UPSTREAM_RATE, "QQ" if self._rate < UPSTREAM_RATE else "HQ"
        )
        self._history = SampleRing(int(self._rate * settings.history_s))
        self._chunk = np.zeros(UPSTREAM_RATE * chunk_ms // 1000, dtype=np.int16)
        self._fill = 0
        # Live audio is resampled a chunk at a time: one soxr call per chunk, not per period
        # (the call, not the samples, is what costs on a small CPU).
        self._batch = np.zeros(self._rate * chunk_ms // 1000, dtype=np.int16)
        self._batch_fill = 0
        self._pace_stream = self._rate * STREAM_PACE_MS // 1000
        self._vad = vad
        self._listener = Listener(settings, self._rate)
        self._inbox: deque[tuple[Control, float]] = deque()
        self._clock = clock
        self._captured = CaptureClock(device_rate, CLOCK_WINDOW_S)
        self._frame = np.zeros(VAD_RATE * settings.frame_ms // 1000, dtype=np.int16)
        self._frame_fill = 0
        # Pacing in device frames (``Listener.pace``).
        self._pace_frame = len(self._frame) * device_rate // VAD_RATE
        self._pace_block = self._pace_frame * self._listener.block_frames
        self._sent = 0
        self.vad_calls = 0
        self._wake = wake
        self._stage = speech
        self._hint = hint
        if settings.uses_detector and settings.detector is Detector.MICRO:
            self._stage = speech or SpeechStage(speech_threshold=settings.endpoint.speech_threshold)
            self._hint = hint or prosody.complete
            # The echo guard's (``ListenSettings.gate_frame_ms``): judged only while it is on.
            self._vad = vad or WebRtcVad(settings.guard_aggressiveness, settings.gate_frame_ms)
            self._frame = np.zeros(VAD_RATE * settings.gate_frame_ms // 1000, dtype=np.int16)

    # -- called on the loop thread --------------------------------------------------------------

    def post(self, msg: Control, at: float | None = None) -> None:
        """Loop thread: tell the capture side (wake it after). A message that holds more
        back (``AT_ONCE``) takes effect at once, for all the audio not judged yet (behind
        any message still waiting); any other from the first period captured at ``at``
        (the ``clock``'s time; now if None) or later, however late the capture thread hands
        that audio over: the end of a hold, of a mute or a press is about what the
        microphone hears from then on (under load the thread ran 0.2-0.4 s behind: a cue's
        tail opened a turn, and a press and its release taken in one call lost the press)."""
        if msg in AT_ONCE or self._clock is None:
            at = -math.inf
        elif at is None:
            at = self._clock()
        self._inbox.append((msg, at))

    # -- called on the capture thread ---------------------------------------------------------

    def _time(self, n: int, now: float) -> None:
        """``n`` samples handed over at ``now``: the capture clock. Handed over more than
        ``LOST_S`` after their time by that clock, audio was lost in between (an overrun, a
        device reopened after an outage), and the clock starts afresh from them."""
        captured = self._captured
        captured.delivered(n, now)
        if now - captured.time_of(captured.samples) > LOST_S:
            self._captured = captured = CaptureClock(self._device_rate, CLOCK_WINDOW_S)
            captured.delivered(n, now)

    def _drain(self) -> None:
        """Take the messages due for the audio handed over so far, in order (the loop
        posts them in time order, so one waiting never holds back a later one past its
        own time)."""
        inbox = self._inbox
        captured = self._captured.time_of(self._captured.samples)
        while inbox and inbox[0][1] <= captured:
            self._listener.control(inbox.popleft()[0])

    def wants(self) -> int:
        """Device frames the capture thread may gather before the next call (0: hand over
        every period as soon as the device has it); ``Listener.pace`` decides.

        The capture thread sleeps on a timer until they are due and hands them over in one
        call (``CaptureThread(wants=...)``), so the cost is a wake-up per decision, not per
        period. Whoever posts a message wakes the capture thread (``CaptureThread.wake``),
        which asks again, so a sleep in a block never delays it."""
        if self._inbox:
            self._drain()
            if self._inbox:
                return 0  # a message waits for its audio: hand every period over
        # The canceller times the microphone by when each read returns (its capture clock
        # wants reads right after each period) while there is echo to cancel; once the
        # speaker has been silent a while it is bypassed and blocks are fine.
        pace = self._listener.pace(self._canceller is not None and not self._canceller.idle)
        if pace is Pace.BLOCK:
            return self._pace_block
        if pace is Pace.FRAME:
            return self._pace_frame
        if pace is Pace.CHUNK:
            # STREAM_PACE_MS at a time, or more while no frame can end the turn (speech goes
            # on: the endpoint core waits for a pause of some length), up to the chunk's end.
            pace_stream = max(self._pace_stream, self._listener.undecided())
            left = min(len(self._batch) - self._batch_fill, pace_stream)
            if self._canceller is not None:  # it hands on whole 10 ms frames only
                left = -(-left // _AEC_FRAME) * _AEC_FRAME - self._canceller.pending
            return -(-left * self._device_rate // self._rate)
        return 0

    def process(self, mono: np.ndarray) -> None:
        """One capture period (mono int16 at the device rate)."""
        if self._clock is not None:
            self._time(len(mono), self._clock())
        if self._inbox:
            self._drain()
        pcm16k = None
        if self._canceller is not None:
            pcm16k = self._canceller.process(self._to16(mono))
            src = pcm16k
        else:
            src = mono
        self._history.write(src)
        self._history.clear()  # a history, not a queue: it is never "full"
        route, decisions = self._listener.block(self._history.write_pos)
        for d in decisions:
            self._apply(d)
        if route is Route.DETECT:
            if pcm16k is None:
                pcm16k = self._to16(mono)
            if self._stage is not None and not self._listener.uses_gate:
                if self._listener.streaming:
                    self._send(src)
                self._stage.feed(
                    pcm16k, self._on_speech, self._in_turn, self._on_wake, self._streaming
                )
            else:
                if self._stage is not None:
                    self._stage.gap()  # the echo guard's webrtcvad has this block
                self._detect(pcm16k, src)
            window = self._listener.block_end()
            if window is not None:
                self._emit(window)
        elif self._stage is not None:
            self._stage.gap()  # the detector misses this block: no catch-up across it
        if route is Route.SEND:
            self._send(src)
        elif route is Route.WAKE and self._wake is not None:
            self._wake.strict = self._listener.playing  # the echo guard, for the wake word
            if self._wake(self._to16(mono) if pcm16k is None else pcm16k):
                self._apply(self._listener.wake_heard(self._lookback()))

    def _apply(self, d: StartTurn | EndTurn | Hint | WakeWindow | Guard) -> None:
        if isinstance(d, StartTurn):
            self._begin(d)
        elif isinstance(d, EndTurn):
            self._end(d)
        elif isinstance(d, Hint):
            if self._stage is not None and self._hint is not None:
                end = self._hint(self._stage.recent(int(VAD_RATE * HINT_S)))
                if (stop := self._listener.hint(end)) is not None:
                    self._end(stop)
        elif isinstance(d, WakeWindow):
            if d.open:
                self._frame_fill = 0
            self._emit(d)
        elif self._vad is not None:
            self._vad.set_aggressiveness(d.aggressiveness)

    def _detect(self, pcm16k: np.ndarray, src: np.ndarray) -> None:
        if self._listener.streaming:
            self._send(src)
        frame = self._frame
        size = len(frame)
        n = len(pcm16k)
        pos = 0
        if self._frame_fill == 0 and n >= size:
            # Whole frames straight from the block (a listening block is nothing else), their
            # energies in one numpy pass: the capture thread's cost is per call, not per sample.
            k = n // size
            frames = pcm16k[: k * size].reshape(k, size)
            energies = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / size
            for i in range(k):
                pos += size
                self._on_frame(frames[i], float(energies[i]), n - pos)
        while pos < n:
            take = min(size - self._frame_fill, n - pos)
            frame[self._frame_fill : self._frame_fill + take] = pcm16k[pos : pos + take]
            self._frame_fill += take
            pos += take
            if self._frame_fill < size:
                break
            self._frame_fill = 0
            f = frame.astype(np.float64)
            self._on_frame(frame, float(np.dot(f, f)) / size, n - pos)

    def _on_frame(self, frame: np.ndarray, energy: float, rest: int) -> None:
        """One VAD frame (mean square ``energy``), ``rest`` samples before the block's end."""
        speech = 0.0
        if energy >= ENERGY_FLOOR and self._vad is not None:
            self.vad_calls += 1
            speech = 1.0 if self._vad(frame.tobytes()) else 0.0
        d = self._listener.frame(speech, rest * self._rate // VAD_RATE)
        if d is not None:
            self._apply(d)

    def _on_speech(self, speech: float, level_db: float, rest: int) -> None:
        """One 10 ms frame the staged detector judged, ``rest`` 16 kHz samples before the
        block's end."""
        self.vad_calls += 1
        d = self._listener.frame(speech, rest * self._rate // VAD_RATE, level_db)
        if d is not None:
            self._apply(d)

    def _in_turn(self) -> bool:
        return self._listener.in_turn

    def _streaming(self) -> bool:
        return self._listener.streaming

    def _on_wake(self, floor_db: float) -> None:
        self._listener.set_room_floor(floor_db)

    def _lookback(self) -> list[float] | None:
        """The wake word's lookback for ``Listener.wake_heard``: energies of the last
        ``WAKE_LOOKBACK_S`` in ``WAKE_BLOCK_MS`` blocks (only when the word is to be sent)."""
        if not self._listener.wants_wake_start:
            return None
        recent = self._history.last(int(self._rate * WAKE_LOOKBACK_S)).astype(np.float32)
        block = self._rate * WAKE_BLOCK_MS // 1000
        usable = len(recent) // block * block
        tail = recent[len(recent) - usable :].reshape(-1, block)
        energies: list[float] = np.einsum("ij,ij->i", tail, tail).tolist()
        return energies

    # -- turn edges ---------------------------------------------------------------------------

    def _begin(self, turn: StartTurn) -> None:
        """Open a turn: the wake word (when it is sent and still in the history), then the
        pre-roll."""
        self._sent = 0
        self._fill = 0
        self._batch_fill = 0
        self._to24.clear()
        lead = None
        if turn.lead is not None:
            start, end = turn.lead
            back = self._history.write_pos - start
            if back <= self._history.capacity:
                lead = self._history.last(back)[: end - start]
        have = min(turn.back, self._history.write_pos)
        ahead = 0 if lead is None else len(lead)
        self._emit(SpeechStarted((ahead + have) * 1000 // self._rate))
        if lead is not None:
            self._send(lead)
        if have:
            self._send(self._history.last(have))
        # Live chunks then start on a period boundary: each goes out as soon as the
        # period that completes it is read, not up to a period later.
        self._flush()

    def _send(self, src: np.ndarray) -> None:
        """Source-rate audio of the turn: gathered a chunk's worth at a time, resampled to
        24 kHz, then cut into chunks. (soxr streams emit in blocks of their own, HQ about
        30 ms, whatever the input size, so batching adds no latency of its own.)"""
        if self._batch_fill == 0 and len(src) >= len(self._batch):
            self._stream(self._to24(src))  # the pre-roll: already a batch
            return
        batch = self._batch
        pos = 0
        while pos < len(src):
            take = min(len(batch) - self._batch_fill, len(src) - pos)
            batch[self._batch_fill : self._batch_fill + take] = src[pos : pos + take]
            self._batch_fill += take
            pos += take
            if self._batch_fill == len(batch):
                self._batch_fill = 0
                self._stream(self._to24(batch))
                if self._fill >= len(self._chunk) - _CHUNK_SLACK:
                    # A few samples short (the resampler's delay): send it now rather than
                    # a whole batch later.
                    self._flush()

    def _stream(self, samples: np.ndarray) -> None:
        chunk = self._chunk
        pos = 0
        while pos < len(samples):
            take = min(len(chunk) - self._fill, len(samples) - pos)
            chunk[self._fill : self._fill + take] = samples[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == len(chunk):
                self._flush()

    def _flush(self) -> None:
        if self._fill:
            self._emit(AudioChunk(self._chunk[: self._fill].tobytes()))
            self._sent += self._fill
            self._fill = 0

    def _end(self, turn: EndTurn) -> None:
        cancelled = turn.cancelled
        if not cancelled and self._batch_fill:
            self._stream(self._to24(self._batch[: self._batch_fill]))
        self._batch_fill = 0
        tail = self._to24.finish()
        if not cancelled:
            self._stream(tail)
            self._flush()
        self._fill = 0
        self._emit(
            SpeechStopped(
                self._sent * 1000 // UPSTREAM_RATE, cancelled, turn.discarded, turn.silence_ms
            )
        )
