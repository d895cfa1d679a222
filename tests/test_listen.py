"""The listening policy (``appliance.core.listen``), synchronously: frames, messages and
sample positions in, decisions out. No audio, no threads, no sleeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.config import GateSettings, listen_settings
from appliance.core.control_state import ControlState
from appliance.core.listen import (
    WAKE_BLOCK_MS,
    Control,
    Decision,
    Detector,
    EndTurn,
    GateMode,
    Guard,
    Hint,
    Listener,
    ListenSettings,
    Pace,
    Route,
    StartTurn,
    WakeWindow,
    wake_word_start,
)

RATE = 16000
FRAME = RATE * 30 // 1000  # samples per 30 ms frame
NO_WARMUP = ListenSettings(warmup_ms=0)
HANGOVER_END = EndTurn(silence_ms=24 * 30)  # 700 ms of hang-over in whole 30 ms frames
MICRO = ListenSettings(detector=Detector.MICRO, frame_ms=10)


class Feed:
    """A listener fed one 30 ms frame per block, as a front end handed single frames."""

    def __init__(self, settings: ListenSettings = NO_WARMUP) -> None:
        self.listener = Listener(settings, RATE)
        self.now = 0
        self.routes: list[Route] = []

    def post(self, *msgs: Control) -> None:
        for msg in msgs:
            self.listener.control(msg)

    def block(self) -> list[Decision]:
        """One block with no frames for the detector (or before they are fed)."""
        self.now += FRAME
        route, out = self.listener.block(self.now)
        self.routes.append(route)
        return list(out)

    def frames(self, pattern: str, probability: float = 1.0) -> list[tuple[int, Decision | Hint]]:
        """``pattern``: "1" voiced, "0" not. Returns (frame index, decision) for each decision."""
        got: list[tuple[int, Decision | Hint]] = []
        for i, ch in enumerate(pattern):
            got += [(i, d) for d in self.block()]
            if self.routes[-1] is Route.DETECT:
                d = self.listener.frame(probability if ch == "1" else 0.0, 0)
                if d is not None:
                    got.append((i, d))
                window = self.listener.block_end()
                if window is not None:
                    got.append((i, window))
        return got


def test_vad_three_of_five_starts_with_the_preroll_and_the_hangover_stops() -> None:
    f = Feed()
    got = f.frames("0010101" + "1" * 10 + "0" * 30)
    assert got == [(6, StartTurn(RATE * 300 // 1000)), (16 + 24, HANGOVER_END)]  # 24 frames of 700 ms
    assert set(f.routes) == {Route.DETECT}


def test_the_preroll_counts_back_from_the_frame_that_opened_the_turn() -> None:
    listener = Listener(NO_WARMUP, RATE)
    listener.block(10 * FRAME)  # a block of ten frames; the turn opens at its third
    decisions = [listener.frame(1.0, (9 - i) * FRAME) for i in range(10)]
    assert decisions[2] == StartTurn(RATE * 300 // 1000 + 7 * FRAME)


def test_a_speech_probability_is_voiced_at_the_threshold() -> None:
    assert Feed(replace(NO_WARMUP, speech_threshold=0.6)).frames("111", probability=0.5) == []
    assert Feed(replace(NO_WARMUP, speech_threshold=0.6)).frames("111", probability=0.6)[0][0] == 2


def micro_frames(
    listener: Listener, probabilities: list[float], level_db: float = -30.0
) -> list[tuple[int, StartTurn | EndTurn | Hint]]:
    """10 ms frames of the micro detector, one per block; (frame index, decision)."""
    got: list[tuple[int, StartTurn | EndTurn | Hint]] = []
    now = 0
    listener.set_room_floor(-70.0)  # as the front end's level stage tells it on waking
    for i, p in enumerate(probabilities):
        now += RATE // 100
        listener.block(now)
        d = listener.frame(p, 0, level_db if p >= 0.5 else -70.0)
        if d is not None:
            got.append((i, d))
    return got


def test_micro_opens_on_speech_and_ends_at_a_pause_the_hint_calls_complete() -> None:
    listener = Listener(MICRO, RATE)
    got = micro_frames(listener, [0.0] * 20 + [0.9] * 40 + [0.0] * 20)
    # Onset after 40 ms voiced; at 200 ms of silence (50 ms before end_complete_ms) the hint
    # is asked for. The pre-roll counts back from the first voiced frame, 30 ms before the
    # deciding one.
    assert got == [(23, StartTurn(RATE * 330 // 1000)), (60 + 19, Hint())]
    assert listener.hint(0.9) is None  # 200 ms of silence, complete ends at 250 ms
    got = micro_frames(listener, [0.0] * 14)
    assert got == [(4, EndTurn(silence_ms=250))]
    assert not listener.streaming


def test_micro_keeps_an_incomplete_phrase_open_through_its_pause() -> None:
    listener = Listener(MICRO, RATE)
    micro_frames(listener, [0.9] * 40 + [0.0] * 20)
    assert listener.hint(0.1) is None
    assert micro_frames(listener, [0.0] * 62 + [0.9] * 30) == []  # 820 ms of pause: one turn
    assert listener.streaming


def test_micro_discards_a_turn_with_too_little_voiced_speech() -> None:
    listener = Listener(MICRO, RATE)
    got = micro_frames(listener, [0.9] * 10 + [0.0] * 200)
    assert [d for _, d in got][0] == StartTurn(RATE * 330 // 1000)
    ends = [d for _, d in got if isinstance(d, EndTurn)]
    assert ends == [EndTurn(discarded=True, silence_ms=1000)]  # no hint came: incomplete_ms


def test_micro_echo_guard_hands_the_turn_to_webrtcvad_while_the_speaker_plays() -> None:
    listener = Listener(replace(MICRO, warmup_ms=0), RATE)
    listener.control(Control.SPEAKER_PLAYING)
    assert listener.block(160)[1] == (Guard(3),)
    assert listener.uses_gate
    # webrtcvad's 30 ms yes/no, 4 of 6 frames as before (the echo guard's figures).
    got = [listener.frame(1.0, 0) for _ in range(4)]
    assert got[:3] == [None] * 3 and isinstance(got[3], StartTurn)
    listener.control(Control.SPEAKER_IDLE)
    listener.block(320)
    assert listener.uses_gate  # the turn it opened ends by the hang-over
    ends = [d for _ in range(24) if (d := listener.frame(0.0, 0)) is not None]
    assert ends == [HANGOVER_END] and not listener.uses_gate


def test_mute_cancels_the_turn_and_drops_everything_until_unmuted() -> None:
    f = Feed()
    f.frames("11111")
    f.post(Control.MUTE_ON)
    assert f.block() == [EndTurn(cancelled=True)]
    assert f.routes[-1] is Route.DROP
    assert f.frames("1111111") == [] and f.routes[-1] is Route.DROP
    assert f.listener.pace() is Pace.BLOCK
    f.post(Control.MUTE_OFF)
    assert [d for _, d in f.frames("111")] == [StartTurn(4800)]


def test_push_to_talk_starts_after_the_cue_and_ends_on_release() -> None:
    f = Feed(ListenSettings(mode=GateMode.PUSH_TO_TALK))
    assert f.block() == [] and f.routes[-1] is Route.DROP
    assert f.listener.pace() is Pace.BLOCK  # nothing to decide until the button
    f.post(Control.TALK_PRESSED, Control.EARCON_HOLD)
    assert f.listener.pace() is Pace.PERIOD
    assert f.block() == [] and f.routes[-1] is Route.DROP  # the "speak now" cue plays
    f.post(Control.EARCON_RELEASE)
    assert f.block() == [StartTurn(0)] and f.routes[-1] is Route.DROP  # the cue is not sent
    assert f.block() == [] and f.routes[-1] is Route.SEND  # type: ignore[comparison-overlap]  # changed by the call above
    assert f.listener.pace() is Pace.CHUNK
    f.post(Control.TALK_RELEASED)
    assert f.block() == [EndTurn()] and f.routes[-1] is Route.DROP


def test_always_streams_from_the_first_block() -> None:
    f = Feed(ListenSettings(mode=GateMode.ALWAYS))
    assert f.block() == [StartTurn(0)]
    assert f.block() == [] and f.routes == [Route.SEND, Route.SEND]


def test_the_echo_guard_switches_the_detector_and_asks_for_more_speech() -> None:
    f = Feed()
    f.post(Control.SPEAKER_PLAYING)
    assert f.block() == [Guard(3)]
    assert f.listener.guarded and f.listener.pace() is Pace.PERIOD  # barge-in must be fast
    assert f.frames("0111") == []  # 3 of 5 would have started here; 4 of 6 are needed
    assert [d for _, d in f.frames("1")] == [StartTurn(4800)]
    f.frames("0" * 30)
    f.post(Control.SPEAKER_IDLE)
    assert f.block() == [Guard(2)]
    assert [i for i, _ in f.frames("111")] == [2]


def test_an_earcon_hold_keeps_the_cue_out_of_new_turns_only() -> None:
    f = Feed()
    f.post(Control.EARCON_HOLD)
    assert f.frames("1" * 10) == []
    assert f.listener.pace() is Pace.PERIOD  # judged while the hold still covers the cue
    f.post(Control.EARCON_RELEASE)
    f.frames("111")
    f.post(Control.EARCON_HOLD)  # a cue during a turn does not cut it
    assert f.frames("1" * 10 + "0" * 24) == [(33, HANGOVER_END)]


def test_pacing_follows_the_state() -> None:
    listener = Listener(NO_WARMUP, RATE)
    assert listener.pace() is Pace.BLOCK and listener.block_frames == 8  # 240 ms
    assert listener.pace(canceller_busy=True) is Pace.PERIOD
    listener.block(FRAME)
    listener.frame(1.0, 0)
    assert listener.pace() is Pace.FRAME  # a voiced frame: one at a time until quiet
    listener.frame(1.0, 0)
    listener.frame(1.0, 0)
    assert listener.streaming and listener.pace() is Pace.CHUNK
    assert Listener(ListenSettings(mode=GateMode.WAKE), RATE).block_frames == 4  # 120 ms


# --- wake mode ------------------------------------------------------------------------------


WAKE = ListenSettings(mode=GateMode.WAKE, warmup_ms=0, wake_listen_s=0.9, follow_up_s=1.5)


def test_wake_mode_hears_only_the_wake_word_until_it_opens_a_window() -> None:
    f = Feed(WAKE)
    assert f.frames("1" * 20) == []
    assert set(f.routes) == {Route.WAKE}  # the speech detector sleeps
    assert f.listener.wake_heard() == WakeWindow(True, True)
    got = f.frames("0011111" + "0" * 30)
    # The pre-roll reaches back only to the window's start (the wake word is not sent).
    assert got[0] == (4, StartTurn(5 * FRAME))
    assert got[1] == (6 + 24, HANGOVER_END)
    assert len(got) == 2  # the turn took the window: no WakeWindow(False)
    assert f.frames("1" * 5) == [] and f.routes[-1] is Route.WAKE  # asleep again


def test_the_wake_window_runs_out() -> None:
    f = Feed(WAKE)
    f.block()
    f.listener.wake_heard()
    assert f.frames("0" * 40) == [(29, WakeWindow(False))]  # 0.9 s = 30 frames
    assert f.routes[-1] is Route.WAKE


def test_the_follow_up_window_opens_after_a_reply_without_the_wake_word() -> None:
    f = Feed(WAKE)
    f.post(Control.FOLLOW_UP)
    assert f.frames("0" * 60) == [(0, WakeWindow(True, False)), (50, WakeWindow(False))]  # 1.5 s
    f.post(Control.FOLLOW_UP)
    got = f.frames("0111" + "0" * 30)
    assert [d for _, d in got] == [WakeWindow(True, False), StartTurn(3 * FRAME), HANGOVER_END]
    # Asked for while a turn streams, or outside wake mode, it opens nothing.
    f.listener.wake_heard()
    assert [d for _, d in f.frames("0111")] == [StartTurn(4 * FRAME)]
    f.post(Control.FOLLOW_UP)
    assert f.frames("0" * 30) == [(23, HANGOVER_END)]
    vad = Feed()
    vad.post(Control.FOLLOW_UP)
    assert vad.frames("0" * 60) == []
    muted = Feed(WAKE)
    muted.post(Control.MUTE_ON, Control.FOLLOW_UP)
    assert muted.frames("0" * 5) == []


def test_an_earcon_in_the_window_is_never_pre_roll() -> None:
    f = Feed(WAKE)
    f.block()
    f.listener.wake_heard()
    f.post(Control.EARCON_HOLD)
    f.frames("1" * 10)  # the wake cue, heard: no turn, and the window starts after it
    f.post(Control.EARCON_RELEASE)
    assert f.frames("0111")[0] == (3, StartTurn(4 * FRAME))


def test_mute_closes_the_window() -> None:
    f = Feed(WAKE)
    f.block()
    f.listener.wake_heard()
    f.post(Control.MUTE_ON)
    assert f.block() == [WakeWindow(False)]
    assert f.frames("1" * 10) == []


def test_send_wake_word_leads_the_turn_with_the_word() -> None:
    f = Feed(replace(WAKE, send_wake_word=True))
    f.frames("0" * 50)
    detected = f.now
    block = RATE * WAKE_BLOCK_MS // 1000
    energies = [0.0] * 50 + [1e6] * 100  # 1.5 s: quiet, then the word's last second
    f.listener.wake_heard(energies)
    start = detected - 100 * block - RATE // 20  # the first loud block, less 50 ms
    got = f.frames("111")
    assert got == [(2, StartTurn(3 * FRAME, (start, detected)))]
    # Only the turn that the wake word's window opened carries the word.
    f.frames("0" * 30)
    f.post(Control.FOLLOW_UP)
    assert [d for _, d in f.frames("0111")][1] == StartTurn(3 * FRAME)


def test_wake_word_start_from_the_lookback_energies() -> None:
    block = RATE * WAKE_BLOCK_MS // 1000
    assert wake_word_start([], RATE) == 0
    # Within 20 dB of the loudest counts as the word; 50 ms of margin before it.
    assert wake_word_start([1.0] * 10 + [200.0, 10000.0, 50.0], RATE) == 13 * block - (10 * block - 800)
    assert wake_word_start([1.0, 200.0, 10000.0], RATE) == 3 * block  # the margin stops at the start
    assert wake_word_start([0.0, 0.0], RATE) == 2 * block  # silence: all of it


# --- the loop's side ------------------------------------------------------------------------


def test_control_state_sends_each_change_once_and_replays_to_a_new_front_end() -> None:
    c = ControlState()
    assert list(c.replay()) == []
    assert c.talk(True) is Control.TALK_PRESSED and c.talk(True) is None
    assert c.mute(True) is Control.MUTE_ON and c.mute(True) is None
    assert c.speaker(True) is Control.SPEAKER_PLAYING and c.speaker(False) is Control.SPEAKER_IDLE
    assert c.hold(True) is Control.EARCON_HOLD and c.hold(False) is Control.EARCON_RELEASE
    assert c.hold(True) is Control.EARCON_HOLD
    assert list(c.replay()) == [Control.TALK_PRESSED, Control.MUTE_ON, Control.EARCON_HOLD]
    fresh = Listener(ListenSettings(), RATE)
    for msg in c.replay():
        fresh.control(msg)
    assert (fresh.talking, fresh.muted, fresh.playing, fresh.earcon) == (True, True, False, True)


@pytest.mark.parametrize("mode", ["vad", "push_to_talk", "always", "wake"])
def test_gate_settings_map_to_the_listener(mode: str) -> None:
    s = listen_settings(GateSettings(mode=GateMode(mode), barge_in_min_speech_ms=300, send_wake_word=True))
    assert s.mode is GateMode(mode)
    assert s.guard_start == (10, 12)  # 300 ms of 30 ms frames, with the same slack as 3 of 5
    assert s.uses_detector is (mode in ("vad", "wake"))
    assert s.history_s == 2 + 1.5 + 5.0
