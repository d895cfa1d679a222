"""Echo cancellation's decisions (``appliance.core.echo``): levels and counts in, decisions
out; synchronous, no audio."""

from __future__ import annotations

import pytest

from appliance.core import echo


def test_idle_only_when_echo_cancellation_alone_and_the_speaker_silent_long_enough() -> None:
    assert echo.idle(False, 10.0, 10.0 - echo.IDLE_AFTER_S - 0.01)
    assert not echo.idle(False, 10.0, 10.0 - echo.IDLE_AFTER_S)  # not yet: strictly longer
    assert not echo.idle(True, 10.0, -1e9)  # noise suppression or gain: every frame runs


def test_a_reference_frame_is_loud_from_minus_45_dbfs() -> None:
    assert echo.loud(-45.0)
    assert echo.loud(-10.0)
    assert not echo.loud(-45.1)


def test_the_coupling_rule_judges_only_after_the_run_settled() -> None:
    assert not echo.settled(5.29, 5.0)
    assert echo.settled(4.5, 4.0)
    assert echo.settled(0.3, 0.0)
    assert echo.settled(0.0, float("-inf")) is True


def test_decisions_come_every_half_second_and_when_sound_follows_bypassed_levels() -> None:
    assert echo.decide_now(echo.DECIDE_EVERY * 3, False, False)
    assert not echo.decide_now(echo.DECIDE_EVERY * 3 + 1, True, False)
    assert echo.decide_now(7, True, True)
    assert not echo.decide_now(7, False, True)  # nothing plays: no decision yet


@pytest.mark.parametrize(
    ("percentile", "floor"),
    [(-60.0, -60.0), (-95.0, echo.FLOOR_MIN_DBFS), (None, echo.FLOOR_MIN_DBFS)],
)
def test_the_floor_is_never_below_a_real_microphones_self_noise(
    percentile: float | None, floor: float
) -> None:
    assert echo.floor_db(percentile) == floor


def test_the_raw_microphone_is_trusted_only_with_the_echo_within_3_db_of_the_floor() -> None:
    assert echo.trusted(-57.0, -60.0)
    assert echo.trusted(-70.0, -60.0)
    assert not echo.trusted(-56.9, -60.0)


def test_aec3_converges_over_its_first_3_s_of_loud_speaker() -> None:
    assert echo.converging(0)
    assert echo.converging(echo.SETTLE_FRAMES - 1)
    assert not echo.converging(echo.SETTLE_FRAMES)


def test_a_frame_taken_more_than_28_db_down_is_residual_echo() -> None:
    assert echo.residual(-60.1, -32.0)
    assert not echo.residual(-60.0, -32.0)  # exactly 28 dB: the user's voice keeps it
    assert not echo.residual(-40.0, -32.0)


def test_voice_barge_in_changes_only_after_a_long_reply() -> None:
    short = echo.UNSAFE_FRAMES - 1
    assert echo.voice_barge_in(short, False, True) is True  # too short to judge
    assert echo.voice_barge_in(short, True, False) is False
    assert echo.voice_barge_in(echo.UNSAFE_FRAMES, False, True) is False  # never proved
    assert echo.voice_barge_in(echo.UNSAFE_FRAMES, True, False) is True  # back again
    assert echo.voice_barge_in(echo.UNSAFE_FRAMES, True, True) is True


def test_the_echo_tail_of_an_unproved_path_is_silenced_for_half_a_second() -> None:
    # The run stopped at 10.0 s on a path the linear canceller never proved itself on.
    assert echo.in_tail(10.0, 10.0, proved=False)
    assert echo.in_tail(10.49, 10.0, proved=False)
    assert not echo.in_tail(10.5, 10.0, proved=False)
    # On a proved path AEC3 knows the echo and cancels its tail: nothing is held back.
    assert not echo.in_tail(10.1, 10.0, proved=True)
    assert not echo.in_tail(10.0, float("-inf"), proved=False)  # no run stopped yet
