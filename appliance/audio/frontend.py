"""The capture-side front end: device audio in, gate decisions and upstream chunks out.

Runs on the capture thread, one call per ALSA period or per block of them (``wants`` tells
the thread how many it may gather: the capture CPU is per wake-up), so it must stay cheap
and allocate little: it keeps the period in a history ring (the pre-roll) at the source rate, resamples
it to 16 kHz for the VAD, skips webrtcvad when a frame is far below speech energy, and
feeds the pure ``VadGate``. Only while a turn streams is audio resampled to 24 kHz for
upstream (soxr streams), so a quiet room costs no upstream resampling. What it decides goes out through ``emit``
(the daemon hands each output to the event loop with ``call_soon_threadsafe``), so the
loop wakes only when there is something to send, never per period.

The loop thread talks back through three plain attributes: ``talking`` (push-to-talk
held), ``muted``, and ``playing`` (the speaker is playing: the daemon sets it on the
player's started / idle / stopped events). Reading a bool is atomic, so no lock is shared
with the audio thread.

Echo guard: while ``playing``, the microphone may hear the speaker, so the VAD gate needs
stronger evidence before it opens (and so barges in): webrtcvad runs at
``barge_in_aggressiveness`` and the start window must hold ``barge_in_min_speech_ms`` of
voiced frames (``GateSettings.barge_in_start``). The switch happens on this thread, at the
first VAD frame after the flag changes; the VAD keeps its adapted noise model.

Stages, in ``process``: resample -> history (pre-roll) -> mode (mute, always, push-to-talk,
wake, or the VAD path: energy pre-check -> webrtcvad -> ``VadGate``) -> chunking -> ``emit``.
With a ``canceller`` (``appliance.audio.aec``), the period is resampled to 16 kHz, cancelled,
and everything after (the VAD, and upstream after 16 -> 24 kHz) gets the cancelled signal.

Wake mode: until the wake word only the detector (``appliance.audio.wake``) hears the 16 kHz
signal; a detection opens a window (``WakeWindow``) in which the VAD path runs as in vad
mode, with a pre-roll that never reaches back past the detection (nor into an earcon), so
the wake word stays on the device unless ``send_wake_word``. The loop opens the follow-up
window after a reply with ``open_follow_up()`` (a counter only the loop writes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from appliance.audio.ring import SampleRing
from appliance.config import GateSettings
from appliance.core.gate import Edge, VadGate

UPSTREAM_RATE = 24000
VAD_RATE = 16000
# Frames quieter than this RMS (about -56 dBFS) cannot be speech; webrtcvad is skipped.
ENERGY_FLOOR = (32768 * 10 ** (-56 / 20)) ** 2
_AEC_FRAME = VAD_RATE // 100  # the canceller's frame (appliance.audio.aec.FRAME)
# A live chunk this many samples short of chunk_ms (the resampler's delay) goes out anyway.
_CHUNK_SLACK = 24
# Listening (no turn, nothing voiced in the last frame): VAD frames are handed over in
# blocks this long, one capture wake-up per block (see FrontEnd.wants).
LISTEN_BATCH_MS = 240
# Wake mode waiting for its word: shorter blocks, since the listening window opens at the end
# of the block the word was heard in (what follows it there is not sent).
WAKE_BATCH_MS = 120
# Wake mode with ``send_wake_word``: how far back from a detection the wake word may begin.
WAKE_LOOKBACK_S = 1.5


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
    """The turn ended. ``sent_ms`` is how much audio was sent; ``cancelled`` means mute."""

    sent_ms: int
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class WakeWindow:
    """Wake mode: the device listens without the wake word (``open``), because the wake
    word was just heard (``wake_word``: show listening, play the wake earcon, interrupt
    the agent) or a reply just ended (the follow-up window); or it stopped listening
    (``open`` false: the window ran out with no speech, or mute). A turn that starts in
    the window closes it without a ``WakeWindow(False)``."""

    open: bool
    wake_word: bool = False


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
        gate: GateSettings,
        chunk_ms: int,
        vad: Vad | None,
        emit: Callable[[GateOutput], None],
        canceller: Canceller | None = None,
        wake: WakeDetector | None = None,
    ) -> None:
        self._mode = gate.mode
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
        # Wake mode keeps enough history to send the wake word with a late request.
        history_s = 2 + (WAKE_LOOKBACK_S + gate.wake_listen_s if gate.send_wake_word else 0)
        self._history = SampleRing(int(self._rate * history_s))
        self._preroll = self._rate * gate.preroll_ms // 1000
        self._chunk = np.zeros(UPSTREAM_RATE * chunk_ms // 1000, dtype=np.int16)
        self._fill = 0
        # Live audio is resampled a chunk at a time: one soxr call per chunk, not per period
        # (the call, not the samples, is what costs on a small CPU).
        self._batch = np.zeros(self._rate * chunk_ms // 1000, dtype=np.int16)
        self._batch_fill = 0
        self._vad = vad
        self._gate = VadGate(
            frame_ms=gate.vad_frame_ms,
            start_frames=gate.start_frames,
            start_window=gate.start_window,
            hangover_ms=gate.hangover_ms,
            warmup_ms=gate.warmup_ms,
        )
        self._normal = (gate.vad_aggressiveness, gate.start_frames, gate.start_window)
        self._strict = (gate.barge_in_aggressiveness, *gate.barge_in_start)
        self._guarded = False
        self._frame = np.zeros(VAD_RATE * gate.vad_frame_ms // 1000, dtype=np.int16)
        self._frame_fill = 0
        batch_ms = WAKE_BATCH_MS if gate.mode == "wake" else LISTEN_BATCH_MS
        self._listen_frames = max(1, batch_ms // gate.vad_frame_ms)
        self._last_voiced = False
        self._streaming = False
        self._sent = 0
        self.talking = False
        self.muted = False
        self.playing = False
        # An earcon (appliance.earcons) is playing: no turn may start on it; one under way goes on.
        self.earcon = False
        self.vad_calls = 0
        # Wake mode: the detector runs only while no window is open and no turn streams;
        # the VAD only while one is. Window bounds are history (source rate) positions.
        self._wake = wake
        self._listen = int(self._rate * gate.wake_listen_s)
        self._follow_up = int(self._rate * gate.follow_up_s)
        self._send_wake_word = gate.send_wake_word
        self._window_start = 0
        self._window_end: int | None = None
        self._wake_start: int | None = None  # where the wake word began, if it is to be sent
        self._wake_end = 0  # where it was detected
        self.follow_ups = 0  # written by the loop thread only (``open_follow_up``)
        self._follow_ups_seen = 0

    # -- called on the capture thread ---------------------------------------------------------

    def wants(self) -> int:
        """Device frames the capture thread may gather before the next call (0: hand over
        every period as soon as the device has it).

        The capture thread sleeps on a timer until they are due and hands them over in one
        call (``CaptureThread(wants=...)``), so the cost is a wake-up per decision, not per
        period. Streaming: the rest of the current upstream chunk (it cannot go out
        sooner). Listening: ``LISTEN_BATCH_MS`` of VAD frames while the last frame was not
        voiced (a turn needs several voiced frames, and its pre-roll is taken back from the
        frame that opens it, so a batch costs no audio), then one frame at a time until
        the room is quiet again. Speaker playing (local barge-in must be fast), an earcon
        playing (the audio must be judged while ``earcon`` still covers it: a block read
        after the flag drops would hand the cue's end to the VAD), the push-to-talk button
        held before its turn starts, and a canceller at work (until the speaker has been
        silent a second): every period. Whoever changes ``playing``, ``earcon`` or
        ``talking`` wakes the capture thread (``CaptureThread.wake``), so a sleep in a
        block never delays them."""
        if self._canceller is not None and not self._canceller.idle:
            # The canceller times the microphone by when each read returns (its capture
            # clock wants reads right after each period) while there is echo to cancel;
            # once the speaker has been silent a while it is bypassed and blocks are fine.
            return 0
        frame = len(self._frame) * self._device_rate // VAD_RATE
        block = frame * self._listen_frames
        if self.muted:
            return block
        if self._streaming:
            left = len(self._batch) - self._batch_fill
            if self._canceller is not None:  # it hands on whole 10 ms frames only
                left = -(-left // _AEC_FRAME) * _AEC_FRAME - self._canceller.pending
            return -(-left * self._device_rate // self._rate)
        if self._mode == "push_to_talk":
            return 0 if self.talking else block
        if self.playing or self.earcon:
            return 0
        return frame if self._last_voiced else block

    def process(self, mono: np.ndarray) -> None:
        """One capture period (mono int16 at the device rate)."""
        pcm16k = None
        if self._canceller is not None:
            pcm16k = self._canceller.process(self._to16(mono))
            src = pcm16k
        else:
            src = mono
        self._history.write(src)
        self._history.clear()  # a history, not a queue: it is never "full"
        if self.muted:
            if self._streaming:
                self._end(cancelled=True)
            self._gate.reset()
            if self._window_end is not None:
                self._close_window()
            return
        if self._mode == "always":
            if not self._streaming:
                self._begin(0)
            self._send(src)
        elif self._mode == "push_to_talk":
            if self.talking and not self._streaming and not self.earcon:
                self._begin(0)  # after the "speak now" cue, so the cue is not sent
            elif self._streaming and not self.talking:
                self._end()
            elif self._streaming:
                self._send(src)
        elif self._mode == "wake":
            self._run_wake(self._to16(mono) if pcm16k is None else pcm16k, src)
        else:
            self._run_vad(self._to16(mono) if pcm16k is None else pcm16k, src)

    def _run_vad(self, pcm16k: np.ndarray, src: np.ndarray) -> None:
        if self._streaming:
            self._send(src)
        if self.playing is not self._guarded:
            self._set_guard(self.playing)
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
        voiced = self._voiced(frame, energy) and (self._streaming or not self.earcon)
        self._last_voiced = voiced
        edge = self._gate.process(voiced)
        if edge is Edge.START:
            # The history already holds the rest of this block: the pre-roll is counted
            # back from the frame that opened the turn, the rest rides with it.
            self._begin(self._turn_preroll(rest * self._rate // VAD_RATE), self._wake_audio())
        elif edge is Edge.STOP:
            self._end()

    # -- wake mode ----------------------------------------------------------------------------

    def open_follow_up(self) -> None:
        """Loop thread, wake mode: a reply ended; listen without the wake word for
        ``follow_up_s`` (from the next capture period)."""
        self.follow_ups += 1

    def _run_wake(self, pcm16k: np.ndarray, src: np.ndarray) -> None:
        if self.follow_ups != self._follow_ups_seen:
            self._follow_ups_seen = self.follow_ups
            if not self._streaming and self._follow_up:
                self._open_window(self._follow_up, wake_word=False)
        if self._window_end is None and not self._streaming:
            if self._wake is not None:
                self._wake.strict = self.playing  # the echo guard, for the wake word
                if self._wake(pcm16k):
                    self._open_window(self._listen, wake_word=True)
            return
        if self._window_end is not None and self.earcon:
            self._window_start = self._history.write_pos  # the cue is never pre-roll
        self._run_vad(pcm16k, src)
        if self._streaming:
            self._window_end = None  # the turn took the window
        elif self._window_end is not None and self._history.write_pos >= self._window_end:
            self._close_window()

    def _open_window(self, length: int, *, wake_word: bool) -> None:
        now = self._history.write_pos
        self._window_start, self._window_end = now, now + length
        self._wake_start = self._find_wake_start() if wake_word and self._send_wake_word else None
        self._wake_end = now
        self._gate.reset()
        self._frame_fill = 0
        self._emit(WakeWindow(True, wake_word))

    def _close_window(self) -> None:
        self._window_end = None
        self._emit(WakeWindow(False))

    def _find_wake_start(self) -> int:
        """Where the wake word began: the first 10 ms block, in the last
        ``WAKE_LOOKBACK_S``, within 20 dB of the loudest one (less a 50 ms margin)."""
        n = int(self._rate * WAKE_LOOKBACK_S)
        recent = self._history.last(n).astype(np.float32)
        block = self._rate // 100
        usable = len(recent) // block * block
        if not usable:
            return self._history.write_pos
        tail = recent[len(recent) - usable :]
        energy = np.einsum("ij,ij->i", tail.reshape(-1, block), tail.reshape(-1, block))
        first = int(np.argmax(energy > energy.max() / 100))
        back = usable - max(0, first * block - self._rate // 20)
        return self._history.write_pos - back

    def _turn_preroll(self, rest: int) -> int:
        """Pre-roll for a turn the VAD opens, ``rest`` samples (already in the history)
        after the frame that opened it: ``preroll_ms`` before that frame, and in wake mode
        never from before the window, so never the wake word (nor the wake earcon)."""
        if self._mode != "wake":
            return self._preroll + rest
        return min(self._preroll, self._history.write_pos - rest - self._window_start) + rest

    def _wake_audio(self) -> np.ndarray | None:
        """With ``send_wake_word``: the wake word, sent ahead of the pre-roll (None when the
        window was not opened by it, or its audio has left the history)."""
        if self._mode != "wake" or self._wake_start is None:
            return None
        start, self._wake_start = self._wake_start, None
        back = self._history.write_pos - start
        if back > self._history.capacity:
            return None
        return self._history.last(back)[: self._wake_end - start]

    def _set_guard(self, on: bool) -> None:
        """Echo guard on (speaker playing) or off: VAD mode and start evidence."""
        self._guarded = on
        level, frames, window = self._strict if on else self._normal
        if self._vad is not None:
            self._vad.set_aggressiveness(level)
        self._gate.require(frames, window)

    def _voiced(self, frame: np.ndarray, energy: float) -> bool:
        if energy < ENERGY_FLOOR or self._vad is None:
            return False
        self.vad_calls += 1
        return self._vad(frame.tobytes())

    # -- turn edges ---------------------------------------------------------------------------

    def _begin(self, preroll: int, lead: np.ndarray | None = None) -> None:
        """Open a turn: ``lead`` (the wake word, when it is sent) then the pre-roll."""
        self._streaming = True
        self._sent = 0
        self._fill = 0
        self._batch_fill = 0
        self._to24.clear()
        have = min(preroll, self._history.write_pos)
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

    def _end(self, cancelled: bool = False) -> None:
        if not cancelled and self._batch_fill:
            self._stream(self._to24(self._batch[: self._batch_fill]))
        self._batch_fill = 0
        tail = self._to24.finish()
        if not cancelled:
            self._stream(tail)
            self._flush()
        self._fill = 0
        self._streaming = False
        self._emit(SpeechStopped(self._sent * 1000 // UPSTREAM_RATE, cancelled))
