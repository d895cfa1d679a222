"""The endpoint core: onset, hinted and fixed end of turn, discard, max turn. Synchronous."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from appliance.core.endpoint import Decision, Endpointer, EndpointSettings, Phase

FRAME = 10.0
# The frame arithmetic below assumes a 96 ms onset (ten 10 ms frames).
BASE = EndpointSettings(speech_threshold=0.5, onset_ms=96, onset_window_ms=192)


def feed(ep: Endpointer, probs: list[float]) -> list[tuple[int, Decision]]:
    """Each decision with the index of the frame that produced it."""
    out = []
    for i, p in enumerate(probs):
        d = ep.process(FRAME, p)
        if d is not None:
            out.append((i, d))
    return out


def test_noise_with_low_probability_opens_no_turn() -> None:
    ep = Endpointer(BASE)
    assert feed(ep, [0.3, 0.45, 0.2] * 2000) == []
    assert ep.phase is Phase.IDLE


def test_isolated_voiced_frames_open_no_turn() -> None:
    ep = Endpointer(replace(BASE, onset_ms=100, onset_window_ms=200))
    # One voiced frame in four never reaches 100 ms in a 200 ms window.
    assert feed(ep, [0.9, 0.1, 0.1, 0.1] * 100) == []


def test_onset_after_onset_ms_of_speech_with_lag() -> None:
    ep = Endpointer(replace(BASE, onset_ms=50, onset_window_ms=100))
    got = feed(ep, [0.0] * 20 + [0.9] * 10)
    assert got == [(24, Decision.START)]
    assert ep.onset_lag_ms == 50
    assert ep.phase is Phase.SPEECH


def test_fixed_silence_ends_turn_and_short_pause_does_not() -> None:
    s = replace(BASE, use_hint=False, silence_ms=300, min_voiced_ms=100)
    ep = Endpointer(s)
    probs = [0.9] * 50 + [0.0] * 25 + [0.9] * 50 + [0.0] * 40
    got = feed(ep, probs)
    # Started at frame 9 (96 ms), the 250 ms pause kept the turn, 300 ms of silence ended it.
    assert [d for _, d in got] == [Decision.START, Decision.STOP]
    assert got[1][0] == 125 + 29


def test_too_little_voiced_speech_is_discarded() -> None:
    ep = Endpointer(replace(BASE, use_hint=False, silence_ms=200, min_voiced_ms=300))
    got = feed(ep, [0.9] * 15 + [0.0] * 30)
    assert [d for _, d in got] == [Decision.START, Decision.DISCARD]
    assert ep.phase is Phase.IDLE


def test_hint_complete_ends_turn_after_complete_ms() -> None:
    s = replace(BASE, hint_lead_ms=100, complete_ms=150, incomplete_ms=1000)
    ep = Endpointer(s)
    got = feed(ep, [0.9] * 50 + [0.0] * 5)
    assert [d for _, d in got] == [Decision.START, Decision.HINT]
    assert ep.hint(0.9) is None  # 50 ms of silence so far, 150 needed
    got = feed(ep, [0.0] * 10)
    assert got == [(9, Decision.STOP)]


def test_late_hint_complete_stops_at_once() -> None:
    ep = Endpointer(replace(BASE, hint_lead_ms=100, complete_ms=150, incomplete_ms=1000))
    feed(ep, [0.9] * 50 + [0.0] * 30)
    assert ep.silence_ms == 300
    assert ep.hint(0.8) is Decision.STOP


def test_hint_incomplete_waits_incomplete_ms_and_resumed_speech_keeps_one_turn() -> None:
    ep = Endpointer(replace(BASE, hint_lead_ms=100, complete_ms=150, incomplete_ms=1000))
    feed(ep, [0.9] * 50 + [0.0] * 5)
    assert ep.hint(0.1) is None
    assert feed(ep, [0.0] * 70) == []  # a 750 ms pause
    got = feed(ep, [0.9] * 40 + [0.0] * 5)
    assert [d for _, d in got] == [Decision.HINT]
    assert ep.hint(0.7) is None
    got = feed(ep, [0.0] * 10)
    assert [d for _, d in got] == [Decision.STOP]


def test_no_answer_to_hint_waits_incomplete_ms() -> None:
    ep = Endpointer(replace(BASE, hint_lead_ms=100, complete_ms=150, incomplete_ms=600))
    got = feed(ep, [0.9] * 50 + [0.0] * 60)
    assert [(i, d) for i, d in got][-1] == (109, Decision.STOP)


def test_the_hint_is_asked_only_in_a_pause_long_enough_to_need_it() -> None:
    # Asked hint_lead_ms before complete_ms (the time its answer may take), not at once: the
    # pauses between words, shorter than that, never run the model.
    ep = Endpointer(replace(BASE, hint_lead_ms=50, complete_ms=250, incomplete_ms=1000))
    assert [d for _, d in feed(ep, [0.9] * 50 + ([0.0] * 19 + [0.9] * 10) * 5)] == [
        Decision.START
    ]
    assert feed(ep, [0.0] * 20) == [(19, Decision.HINT)]  # 200 ms into the pause
    assert ep.hint(0.9) is None
    assert feed(ep, [0.0] * 5) == [(4, Decision.STOP)]


def test_hint_after_speech_resumed_is_ignored() -> None:
    ep = Endpointer(replace(BASE, hint_lead_ms=100, complete_ms=150, incomplete_ms=1000))
    feed(ep, [0.9] * 50 + [0.0] * 5 + [0.9] * 3)
    assert ep.phase is Phase.SPEECH
    assert ep.hint(1.0) is None
    assert feed(ep, [0.0] * 10) == [(4, Decision.HINT)]


def test_silence_threshold_above_speech_threshold_cuts_a_lingering_probability() -> None:
    s = replace(BASE,
        use_hint=False, speech_threshold=0.3, silence_threshold=0.9, silence_ms=100,
        min_voiced_ms=100,
    )
    ep = Endpointer(s)
    got = feed(ep, [1.0] * 30 + [0.6] * 10)
    assert [d for _, d in got] == [Decision.START, Decision.STOP]


def test_max_turn_stops_endless_speech_and_waits_for_the_vad_to_let_go() -> None:
    ep = Endpointer(replace(BASE, max_turn_ms=2000))
    got = feed(ep, [0.9] * 300 + [0.0] + [0.9] * 10)
    # Opened at frame 9 with 100 ms of lag, so 2000 ms of turn end at frame 199; the speech
    # going on (television) opens no turn until the VAD has let go once.
    assert got == [(9, Decision.START), (199, Decision.STOP), (310, Decision.START)]


def test_a_lingering_probability_after_the_end_opens_no_new_turn() -> None:
    s = replace(BASE, use_hint=False, silence_ms=100, min_voiced_ms=100)
    ep = Endpointer(s)
    levels = [-50.0] * 100 + [-30.0] * 50 + [-50.0] * 60
    probs = [0.0] * 100 + [0.9] * 50 + [0.9] * 50 + [0.0] * 10
    got = [(i, d) for i, (p, v) in enumerate(zip(probs, levels, strict=True))
           if (d := ep.process(FRAME, p, v)) is not None]
    assert got == [(109, Decision.START), (159, Decision.STOP)]


def test_reset_forgets_the_turn() -> None:
    ep = Endpointer(BASE)
    feed(ep, [0.9] * 30)
    ep.reset()
    assert ep.phase is Phase.IDLE
    assert feed(ep, [0.0] * 200) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speech_threshold": 1.5},
        {"onset_ms": 300, "onset_window_ms": 200},
        {"hint_lead_ms": -10},
        {"complete_ms": 1200, "incomplete_ms": 1000},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EndpointSettings(**kwargs)  # type: ignore[arg-type]


def test_levels_end_a_turn_whose_probability_lingers() -> None:
    s = replace(BASE, use_hint=False, silence_ms=200, min_voiced_ms=100, floor_margin_db=6)
    ep = Endpointer(s)
    # A room at -50 dB for 2 s, speech at -30 dB, then the room again while the VAD's
    # probability stays up for 500 ms: the levels end the silence count at once.
    got = []
    for i, (p, level) in enumerate([(0.0, -50.0)] * 200 + [(0.9, -30.0)] * 50 + [(0.9, -49.0)] * 50):
        d = ep.process(FRAME, p, level)
        if d is not None:
            got.append((i, d))
    assert got == [(209, Decision.START), (269, Decision.STOP)]
    assert ep.floor_db == pytest.approx(-50.0)  # frames the VAD calls speech leave it


def test_floor_follows_the_room_outside_turns_only() -> None:
    ep = Endpointer(replace(BASE, floor_ms=1000))
    for _ in range(300):
        ep.process(FRAME, 0.0, -60.0)
    assert ep.floor_db == pytest.approx(-60.0)
    for _ in range(300):  # the fan comes on: 3 s at -45 dB
        ep.process(FRAME, 0.0, -45.0)
    assert ep.floor_db == pytest.approx(-45.0, abs=1.0)


def test_defaults_take_pymicro_vads_noise_and_open_on_40_ms_at_0_3() -> None:
    ep = Endpointer()
    # pymicro-vad gives room noise at most ~0.12 (bench.turn_corpus, 13 minutes of it).
    assert feed(ep, [0.12, 0.05, 0.2] * 1000) == []
    assert feed(ep, [0.35] * 4) == [(3, Decision.START)]


def feed_levels(ep: Endpointer, frames: list[tuple[float, float]]) -> list[tuple[int, Decision]]:
    """(probability, level dB) frames; each decision with its frame's index."""
    out = []
    for i, (p, level) in enumerate(frames):
        d = ep.process(FRAME, p, level)
        if d is not None:
            out.append((i, d))
    return out


ROOM = [(0.0, -50.0)] * 200  # 2 s of a room at -50 dB: the floor
SPEECH = [(0.9, -30.0)]


@pytest.mark.parametrize("resume_ms", [40, 0])
def test_sound_after_a_quiet_pause_resumes_the_turn_before_the_vad_does(resume_ms: int) -> None:
    s = replace(BASE, min_voiced_ms=100, incomplete_ms=700, resume_ms=resume_ms)
    ep = Endpointer(s)
    # "set a timer for" / 600 ms / "twelve minutes", whose first 300 ms the VAD misses
    # (pymicro-vad in fan noise), then the room.
    frames = ROOM + SPEECH * 60 + [(0.0, -50.0)] * 60 + [(0.0, -30.0)] * 30 + SPEECH * 40
    got = feed_levels(ep, frames + [(0.0, -50.0)] * 100)
    ends = [(i, d) for i, d in got if d in (Decision.STOP, Decision.DISCARD)]
    if resume_ms:  # one turn, ended after the second phrase
        assert [d for _, d in got].count(Decision.START) == 1
        assert ends == [(len(frames) + 69, Decision.STOP)]  # no hint answered: 700 ms
    else:  # the VAD alone: 600 ms of pause + 100 ms of its miss reach 700 ms
        assert ends[0] == (200 + 60 + 69, Decision.STOP)


def test_speech_resumed_by_level_alone_cannot_hold_a_turn_open() -> None:
    s = replace(BASE, min_voiced_ms=100, complete_ms=200, incomplete_ms=500, resume_max_ms=400)
    ep = Endpointer(s)
    # After the speech, a noise 20 dB over the floor comes on and stays (the VAD says 0).
    got = feed_levels(ep, ROOM + SPEECH * 60 + [(0.0, -50.0)] * 10 + [(0.0, -30.0)] * 1000)
    stop = [i for i, d in got if d is Decision.STOP]
    # The noise resumes the speech after 40 ms (frame 273) and holds it 400 ms (to 312); the
    # pause from 313 then ends after 500 ms (no hint answered), the noise notwithstanding.
    assert stop == [313 + 49]


def test_the_start_is_dated_back_to_where_the_sound_rose() -> None:
    ep = Endpointer(replace(BASE, onset_ms=40, onset_window_ms=100))
    # The first syllable: 150 ms of sound the VAD calls silence, a 50 ms stop closure, then
    # 40 ms it calls speech. The closure does not restart the sound; 200 ms of quiet would.
    lead = [(0.0, -30.0)] * 15 + [(0.0, -50.0)] * 5 + SPEECH * 4
    assert feed_levels(ep, ROOM + lead) == [(len(ROOM) + len(lead) - 1, Decision.START)]
    assert ep.onset_lag_ms == 240
    ep = Endpointer(replace(BASE, onset_ms=40, onset_window_ms=100))
    lead = [(0.0, -30.0)] * 15 + [(0.0, -50.0)] * 20 + SPEECH * 4
    feed_levels(ep, ROOM + lead)
    assert ep.onset_lag_ms == 40
    # At most rise_max_ms back, however long the sound before.
    ep = Endpointer(replace(BASE, onset_ms=40, onset_window_ms=100, rise_max_ms=500))
    feed_levels(ep, ROOM + [(0.0, -30.0)] * 60 + SPEECH * 4)
    assert ep.onset_lag_ms == 500


@pytest.mark.parametrize("gap", ["gap", "reset", ""])
def test_after_a_gap_the_next_request_opens_a_turn_though_the_vad_kept_its_state(
    gap: str,
) -> None:
    s = replace(
        BASE, onset_ms=40, onset_window_ms=100, min_voiced_ms=100, complete_ms=200,
        hint_lead_ms=80,
    )
    ep = Endpointer(s)
    # A turn ends on the levels while pymicro-vad's probability still lingers; then the
    # speaker plays (the gate has the frames) and the model is not run: it comes back, on
    # the silence before the next request and on the request, still saying 0.99.
    got = feed_levels(ep, ROOM + SPEECH * 60 + [(0.99, -50.0)] * 12)
    assert [d for _, d in got] == [Decision.START, Decision.HINT]
    assert ep.hint(0.9) is None
    assert [d for _, d in feed_levels(ep, [(0.99, -50.0)] * 10)] == [Decision.STOP]
    if gap:  # the speaker plays (``gap``), or mute or a wake window (``reset``)
        getattr(ep, gap)()
    got = feed_levels(ep, [(0.99, -50.0)] * 30 + [(0.99, -30.0)] * 100 + [(0.0, -50.0)] * 50)
    if gap:  # the silence opens nothing, the request opens its turn on its first frames
        assert got[0] == (30 + 3, Decision.START)
    else:  # the VAD never let go: the request is lost
        assert got == []


@pytest.mark.parametrize("use_hint", [True, False])
def test_no_decision_comes_within_the_undecided_audio(use_hint: bool) -> None:
    # undecided_ms is what a caller may gather before feeding it without deciding late: no
    # frame within it brings a HINT, STOP or DISCARD, whatever the audio and the hints say.
    s = replace(BASE, use_hint=use_hint, max_turn_ms=3000, min_voiced_ms=100, resume_ms=40)
    ep = Endpointer(s)
    rng = np.random.default_rng(3)
    # Speech with pauses of every length, levels that sometimes resume a pause.
    probs = np.repeat(rng.random(400) < 0.6, rng.integers(1, 40, 400)) * 0.9
    levels = np.where(probs > 0, -30.0, rng.choice([-70.0, -40.0], len(probs)))
    assert ep.undecided_ms == 0.0  # outside a turn: the onset is judged frame by frame
    decided_at: list[int] = []
    bound: list[tuple[int, float]] = []
    answers = iter(rng.random(10_000))
    for i, (p, level) in enumerate(zip(probs, levels, strict=True)):
        bound.append((i, ep.undecided_ms))
        d = ep.process(FRAME, float(p), float(level))
        if d is Decision.HINT:
            decided_at.append(i)
            d = ep.hint(float(next(answers)))
        if d is not None and d is not Decision.START:
            decided_at.append(i)
    assert len(decided_at) > 20
    for i, undecided in bound:
        nxt = next((j for j in decided_at if j >= i), None)
        if nxt is not None:
            # frames i..nxt hold (nxt - i + 1) * FRAME ms of audio; the decision ends it
            assert (nxt - i + 1) * FRAME >= undecided, (i, nxt, undecided)


def test_undecided_audio_in_a_turn() -> None:
    ep = Endpointer(replace(BASE, hint_lead_ms=50, complete_ms=250, incomplete_ms=1000))
    feed(ep, [0.9] * 30)
    assert ep.phase is Phase.SPEECH and ep.undecided_ms == 200  # a pause must reach the hint
    feed(ep, [0.0] * 5)
    assert ep.undecided_ms == 150
    got = feed(ep, [0.0] * 15)
    assert [d for _, d in got] == [Decision.HINT]
    assert ep.hint(0.1) is None  # incomplete: the pause ends at 1000 ms, unless speech
    assert ep.undecided_ms == 200  # resumes and a new pause reaches the hint first
    feed(ep, [0.0] * 70)
    assert ep.undecided_ms == 100  # 900 ms of pause
