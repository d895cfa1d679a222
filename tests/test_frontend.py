"""The capture front end on synthetic and recorded audio: pre-roll, gating, chunking, modes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from appliance.audio.frontend import (
    LISTEN_BATCH_MS,
    STREAM_PACE_MS,
    WAKE_BATCH_MS,
    AudioChunk,
    FrontEnd,
    GateOutput,
    SpeechStarted,
    SpeechStopped,
)
from appliance.audio.vad import WebRtcVad
from appliance.config import GateSettings, listen_settings
from appliance.core.listen import Control, Detector, GateMode
from appliance.demo import speech_recording


def make(
    rate: int, gate: GateSettings, emit: Callable[[GateOutput], None], *controls: Control, vad: bool = True
) -> FrontEnd:
    """A front end on ``gate`` (webrtcvad in vad mode) told ``controls`` by the loop."""
    fe = FrontEnd(
        device_rate=rate,
        settings=listen_settings(gate),
        chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms) if vad and gate.mode == "vad" else None,
        emit=emit,
    )
    for msg in controls:
        fe.post(msg)
    return fe


def run(pcm: np.ndarray, rate: int, gate: GateSettings, *controls: Control, period_ms: int = 10) -> list[GateOutput]:
    out: list[GateOutput] = []
    fe = make(rate, gate, out.append, *controls)
    step = rate * period_ms // 1000
    for i in range(0, len(pcm) - step + 1, step):
        fe.process(pcm[i : i + step])
    return out


def recording() -> tuple[np.ndarray, int]:
    pcm, rate = speech_recording()
    return np.frombuffer(pcm, dtype=np.int16), rate


def test_vad_sends_one_turn_with_preroll_and_hangover() -> None:
    pcm, rate = recording()
    out = run(pcm, rate, GateSettings())
    starts = [o for o in out if isinstance(o, SpeechStarted)]
    stops = [o for o in out if isinstance(o, SpeechStopped)]
    assert len(starts) == 1 and len(stops) == 1
    # 300 ms counted back from where the sound rose: the recording's first syllable is loud
    # for 280 ms before pymicro-vad's first voiced frame, which was just caught before.
    assert 300 + 280 <= starts[0].preroll_ms <= 300 + 400
    sent = b"".join(o.pcm for o in out if isinstance(o, AudioChunk))
    assert stops[0].sent_ms == len(sent) // 48
    # Far less than the whole recording (4.8 s, 2.2 s of it silence) is sent.
    assert 1500 < stops[0].sent_ms < 4000
    chunks = [o for o in out if isinstance(o, AudioChunk)]
    # 40 ms each, but for the last of the pre-roll and the last of the turn (and live chunks
    # may be a resampler delay, 1 ms at most, short).
    assert all(len(c.pcm) <= 40 * 48 for c in chunks)
    assert sum(len(c.pcm) < 39 * 48 for c in chunks) <= 2


def test_silence_and_noise_send_nothing() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000 * 3) * 30).astype(np.int16)  # about -60 dBFS room noise
    assert run(noise, 16000, GateSettings()) == []
    assert run(np.zeros(16000 * 3, dtype=np.int16), 16000, GateSettings()) == []


def test_stereo_48k_device_is_resampled_to_24k() -> None:
    pcm, rate = recording()
    import soxr

    up = soxr.resample(pcm, rate, 48000).astype(np.int16)
    out = run(up, 48000, GateSettings())
    chunks = [o for o in out if isinstance(o, AudioChunk)]
    assert chunks and all(len(c.pcm) <= 40 * 48 for c in chunks)
    assert sum(len(c.pcm) < 39 * 48 for c in chunks) <= 2
    assert sum(isinstance(o, SpeechStarted) for o in out) == 1


def test_push_to_talk_streams_only_while_held() -> None:
    pcm, rate = recording()
    out: list[GateOutput] = []
    fe = make(rate, GateSettings(mode=GateMode.PUSH_TO_TALK), out.append, Control.TALK_PRESSED)
    for i in range(0, rate, 160):  # held for 1 s
        fe.process(pcm[i : i + 160])
    fe.post(Control.TALK_RELEASED)
    fe.process(pcm[rate : rate + 160])
    assert isinstance(out[0], SpeechStarted) and isinstance(out[-1], SpeechStopped)
    sent = sum(len(o.pcm) for o in out if isinstance(o, AudioChunk)) // 48
    assert abs(sent - 1000) <= 10 and out[-1].sent_ms == sent  # all of it, resampler tail too
    assert run(pcm, rate, GateSettings(mode=GateMode.PUSH_TO_TALK)) == []


def test_muted_sends_nothing() -> None:
    pcm, rate = recording()
    assert run(pcm, rate, GateSettings(), Control.MUTE_ON) == []
    assert run(pcm, rate, GateSettings(mode=GateMode.ALWAYS), Control.MUTE_ON) == []


def test_always_streams_everything() -> None:
    pcm, rate = recording()
    out = run(pcm, rate, GateSettings(mode=GateMode.ALWAYS))
    sent = sum(len(o.pcm) for o in out if isinstance(o, AudioChunk)) // 48
    # All but what the last 40 ms batch and the resampler still hold (the turn never ends).
    assert abs(sent - len(pcm) * 1000 // rate) <= 100


def onset_ms(pcm: np.ndarray, rate: int, gate: GateSettings, *controls: Control) -> int | None:
    """When SpeechStarted is emitted, in ms of input (10 ms periods)."""
    out: list[GateOutput] = []
    fe = make(rate, gate, out.append, *controls)
    step = rate // 100
    for i in range(0, len(pcm) - step + 1, step):
        fe.process(pcm[i : i + step])
        if out:
            assert isinstance(out[0], SpeechStarted)
            return (i + step) * 1000 // rate
    return None


def noisy(pcm: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    x = pcm.astype(np.float64)
    level = np.sqrt(np.mean(x[np.abs(x) > 300] ** 2))
    noise = np.random.default_rng(seed).standard_normal(len(x)) * level * 10 ** (-snr_db / 20)
    out: np.ndarray = np.clip(x + noise, -32768, 32767).astype(np.int16)
    return out


def test_echo_guard_needs_more_speech_while_the_speaker_plays() -> None:
    pcm, rate = recording()
    pcm = noisy(pcm, 20)
    gate = GateSettings(detector=Detector.WEBRTC)  # the guard's evidence is webrtcvad's in both
    normal = onset_ms(pcm, rate, gate)
    guarded = onset_ms(pcm, rate, gate, Control.SPEAKER_PLAYING)
    assert normal is not None and guarded is not None
    # 4 voiced frames of 6 instead of 3 of 5: at least one 30 ms frame later, and not by much.
    assert normal + 30 <= guarded <= normal + 90, (normal, guarded)


def test_echo_guard_ignores_a_short_burst_only_while_playing() -> None:
    pcm, rate = recording()
    start = next(i for i in range(0, len(pcm), 160) if np.abs(pcm[i : i + 160]).max() > 3000)
    burst = np.concatenate([np.zeros(rate, np.int16), pcm[start : start + rate * 3 // 10]])
    burst = np.concatenate([burst, np.zeros(rate, np.int16)])
    gate = GateSettings(barge_in_min_speech_ms=600)
    assert onset_ms(burst, rate, gate) is not None  # 300 ms of speech starts a turn
    assert onset_ms(burst, rate, gate, Control.SPEAKER_PLAYING) is None  # but does not barge in


def test_echo_guard_switches_the_vad_mode_and_back() -> None:
    gate = GateSettings(vad_aggressiveness=1, barge_in_aggressiveness=3)
    vad = WebRtcVad(1, 30)
    fe = FrontEnd(device_rate=16000, settings=listen_settings(gate), chunk_ms=40, vad=vad, emit=lambda o: None)
    quiet = np.zeros(160, np.int16)
    fe.process(quiet)
    assert vad.aggressiveness == 1
    fe.post(Control.SPEAKER_PLAYING)
    fe.process(quiet)
    assert vad.aggressiveness == 3
    fe.post(Control.SPEAKER_IDLE)
    fe.process(quiet)
    assert vad.aggressiveness == 1


def test_blocks_of_what_wants_asks_send_the_same_turn_as_single_periods() -> None:
    # The capture thread hands over as many frames as wants() asks for (listening: a 240 ms
    # block of VAD frames, one frame after a voiced one; streaming: the rest of the chunk)
    # instead of one period at a time.
    pcm, rate = recording()
    gate = GateSettings()
    out: list[GateOutput] = []
    fe = make(rate, gate, out.append)
    sizes: list[int] = []
    pos = 0
    while pos < len(pcm):
        want = fe.wants()
        sizes.append(want)
        fe.process(pcm[pos : pos + max(want, rate // 100)])
        pos += max(want, rate // 100)
    by_period = run(pcm, rate, gate)
    sent = b"".join(o.pcm for o in out if isinstance(o, AudioChunk))
    sent_by_period = b"".join(o.pcm for o in by_period if isinstance(o, AudioChunk))
    assert [type(o) for o in out if not isinstance(o, AudioChunk)] == [SpeechStarted, SpeechStopped]
    # The onset and the end are decided per 30 ms VAD frame either way: the same turn,
    # give or take a frame of hang-over.
    assert abs(len(sent) - len(sent_by_period)) <= 30 * 48, (len(sent), len(sent_by_period))
    assert sent[: 200 * 48] == sent_by_period[: 200 * 48]  # the pre-roll and onset
    # Listening it asked for blocks of LISTEN_BATCH_MS (single 30 ms frames after a voiced
    # one); streaming, for 40 ms chunks.
    assert sizes.count(LISTEN_BATCH_MS * rate // 1000) > 5 and sizes.count(640) > 30
    assert len(sizes) < len(pcm) // 160 // 3  # fewer than a third of the calls of 10 ms periods


def test_speech_streams_in_whole_chunks_and_the_turn_ends_no_later() -> None:
    # 100 ms chunks (the gated modes' "auto"): while no frame can end the turn (speech goes on;
    # the endpoint core needs 200 ms of pause to ask for its hint), the capture thread may
    # gather the rest of the chunk in one block instead of STREAM_PACE_MS at a time; near a
    # possible decision it is handed over in 40 ms blocks again.
    pcm, rate = recording()
    pace = STREAM_PACE_MS * rate // 1000

    def feed(cap: bool) -> tuple[list[GateOutput], list[int], int | None]:
        """As the capture thread feeds it; ``cap``: at most STREAM_PACE_MS while a turn
        streams (the pacing before)."""
        out: list[GateOutput] = []
        fe = FrontEnd(
            device_rate=rate, settings=listen_settings(GateSettings()), chunk_ms=100, vad=None, emit=out.append
        )
        sizes: list[int] = []
        stopped_at = None
        pos = 0
        while pos < len(pcm):
            n = max(fe.wants(), rate // 100)
            started = any(isinstance(o, SpeechStarted) for o in out)
            if cap and started and stopped_at is None:
                n = min(n, pace)
            fe.process(pcm[pos : pos + n])
            pos += n
            sizes.append(n)
            if stopped_at is None and any(isinstance(o, SpeechStopped) for o in out):
                stopped_at = pos
        return out, sizes, stopped_at

    out, sizes, stopped_at = feed(cap=False)
    before, before_sizes, before_stopped_at = feed(cap=True)
    assert [type(o) for o in out if not isinstance(o, AudioChunk)] == [SpeechStarted, SpeechStopped]
    assert out == before  # the same turn, to the sample
    assert stopped_at is not None and before_stopped_at is not None
    assert stopped_at <= before_stopped_at  # its end handed over no later
    # Most of the turn came in blocks longer than 40 ms: far fewer calls.
    assert sum(n for n in sizes if pace < n <= 100 * rate // 1000) > rate
    assert len(sizes) < len(before_sizes) * 2 // 3


def test_wants_every_period_while_the_speaker_plays_and_in_push_to_talk() -> None:
    fe = make(48000, GateSettings(), print)
    assert fe.wants() == LISTEN_BATCH_MS // 30 * 1440  # whole 30 ms VAD frames at 48 kHz
    fe.post(Control.SPEAKER_PLAYING)  # local barge-in must be fast
    assert fe.wants() == 0
    fe.post(Control.SPEAKER_IDLE)
    fe.post(Control.EARCON_HOLD)  # judged while the hold still covers the cue
    assert fe.wants() == 0
    ptt = make(16000, GateSettings(mode=GateMode.PUSH_TO_TALK), print)
    # Nothing to decide until the button (which wakes the thread).
    assert ptt.wants() == LISTEN_BATCH_MS * 16
    ptt.post(Control.TALK_PRESSED)
    assert ptt.wants() == 0  # held: the turn starts at the next period
    ptt.process(np.zeros(160, np.int16))
    assert ptt.wants() == 640  # streaming: the rest of the 40 ms chunk
    # Waiting for the wake word: shorter blocks (the window opens at the end of one).
    wake = make(16000, GateSettings(mode=GateMode.WAKE), print, vad=False)
    assert wake.wants() == WAKE_BATCH_MS * 16 < LISTEN_BATCH_MS * 16


def test_a_press_counts_from_the_audio_captured_after_it_however_late_the_thread() -> None:
    """Under load the capture thread hands audio over 0.3 s after it was captured. A 50 ms
    press of the talk button, posted as the loop saw it, still opens a turn on the audio
    captured while it was held (the daemon answers such a tap with the "too short" cue):
    taken at the thread's next call, the press and the release came in one call, and the
    press was lost."""

    def streamed(timed: bool) -> int:
        out: list[GateOutput] = []
        now = [0.0]
        fe = FrontEnd(
            device_rate=16000, settings=listen_settings(GateSettings(mode=GateMode.PUSH_TO_TALK)),
            chunk_ms=40, vad=None, emit=out.append, clock=lambda: now[0],
        )
        lag = 0.3
        for k in range(200):  # 10 ms periods, each handed over `lag` after its capture
            t = (k + 1) / 100
            now[0] = t + (lag if k >= 50 else 0.0)  # on time for the first 0.5 s
            if k == 80:  # the loop sees the press at 0.8 s and the release 50 ms later
                fe.post(Control.TALK_PRESSED, 0.8 if timed else None)
                fe.post(Control.TALK_RELEASED, 0.85 if timed else None)
            fe.process(np.full(160, 1000, np.int16))
        return sum(len(o.pcm) for o in out if isinstance(o, AudioChunk)) // 48

    # The period that opens a push-to-talk turn is not sent (the "speak now" cue's).
    assert streamed(timed=True) == 30
    assert streamed(timed=False) == 0


@pytest.mark.parametrize(("lost_s", "after_s"), [(5.0, 0.0), (0.4, 3.0)])
def test_after_lost_audio_a_press_counts_at_once(lost_s: float, after_s: float) -> None:
    """The microphone was gone for 5 s (a USB device reopened), or an overrun lost 0.4 s: the
    capture clock starts afresh, or forgets the loss within a second or two; else a press
    would wait for that much audio before it counted."""
    out: list[GateOutput] = []
    now = [0.0]
    fe = FrontEnd(
        device_rate=16000, settings=listen_settings(GateSettings(mode=GateMode.PUSH_TO_TALK)),
        chunk_ms=40, vad=None, emit=out.append, clock=lambda: now[0],
    )
    period = np.full(160, 1000, np.int16)

    def periods(n: int) -> None:
        for _ in range(n):
            now[0] += 0.01
            fe.process(period)

    periods(100)
    now[0] += lost_s  # no audio for that long, then the device's next period
    periods(1 + round(after_s * 100))
    fe.post(Control.TALK_PRESSED)
    periods(2)
    assert any(isinstance(o, SpeechStarted) for o in out)


def test_a_hold_takes_effect_at_once_even_when_the_clock_runs_behind() -> None:
    """An overrun lost 0.4 s, so for a second or so the capture clock dates the audio 0.4 s
    early. A cue's hold posted then covers the cue's first audio all the same: a hold is
    never late (while the end of a hold waits for the audio after it)."""
    out: list[GateOutput] = []
    now = [0.0]
    gate = GateSettings(mode=GateMode.VAD, detector=Detector.WEBRTC)
    fe = FrontEnd(
        device_rate=16000, settings=listen_settings(gate), chunk_ms=40,
        vad=WebRtcVad(gate.vad_aggressiveness, gate.vad_frame_ms), emit=out.append,
        clock=lambda: now[0],
    )
    silence = np.zeros(160, np.int16)
    for _ in range(300):
        now[0] += 0.01
        fe.process(silence)
    now[0] += 0.4  # the loss
    for _ in range(10):
        now[0] += 0.01
        fe.process(silence)
    fe.post(Control.EARCON_HOLD)
    pcm, _ = recording()  # the cue, as webrtcvad takes it: speech, from its first syllable
    pcm = pcm[16000 * 6 // 10 :]
    for i in range(len(pcm) // 160):
        now[0] += 0.01
        fe.process(pcm[i * 160 : (i + 1) * 160])
    assert out == []
