"""Following the echo's delay: the fit (``appliance.core.drift``, synchronous, no audio) and
the measurement and fractional reference (``appliance.audio.drift``, on synthetic audio
with a known delay and drift)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from appliance.audio.drift import EchoDelay, FractionalReader
from appliance.audio.reference import FRAME, RATE, ReferenceTap
from appliance.core.drift import DEADBAND, HELD, MAX_STEP, STEADY_RATE, DriftFit

DelayAt = Callable[[float], float]

# --- the fit ------------------------------------------------------------------------------


def _follow(
    fit: DriftFit, delay_at: DelayAt, seconds: float, start: float = 0.0,
    every: float = 0.25,
) -> list[bool]:
    """Feed measurements of a path whose echo lies ``delay_at(t)`` behind the uncompensated
    reference, as the canceller does: each frame steps the phase, each measurement sees
    the delay behind the compensated reference. Returns, per measurement, whether the
    reference was placed since the last one."""
    placed = []
    moved = False
    t = start
    next_measure = start + every
    while t < start + seconds:
        moved |= fit.step(t, FRAME / RATE)
        if t >= next_measure:
            placed.append(moved | fit.add(t, delay_at(t) + fit.phase, 0.6, 0))
            moved = False
            next_measure += every
        t += FRAME / RATE
    return placed


def test_two_agreeing_measurements_place_the_echo_where_the_linear_canceller_expects_it(
) -> None:
    fit = DriftFit()
    assert not fit.placed
    placed = _follow(fit, lambda t: 655.4, 3.0)
    assert placed[:2] == [False, True] and not any(placed[2:])
    assert fit.placed
    assert 655.4 + fit.phase == pytest.approx(HELD, abs=1e-6)
    assert fit.rate == pytest.approx(0.0, abs=1e-6)


def test_a_drifting_echo_is_held_still_behind_the_compensated_reference() -> None:
    fit = DriftFit()
    drift = 1.3  # samples/s: the echo comes later and later (a rate-adapting loop)
    _follow(fit, lambda t: 700.0 + drift * t, 8.0)
    assert fit.rate == pytest.approx(-drift, abs=0.05)
    # The compensated delay (what the linear canceller sees) stands where it is held.
    assert 700.0 + drift * 8.0 + fit.phase == pytest.approx(HELD, abs=0.2)


def test_a_new_run_a_few_ms_off_is_placed_at_once_and_keeps_the_rate() -> None:
    fit = DriftFit()
    _follow(fit, lambda t: 700.0 + 1.0 * t, 6.0)
    fit.restart()
    assert fit.phase == 0.0 and not fit.placed
    # The next run starts 37 samples later (the sound server's start-up), same drift.
    placed = _follow(fit, lambda t: 737.0 + 1.0 * t, 4.0, start=10.0)
    assert placed[:2] == [False, True] and not any(placed[2:])
    assert 737.0 + 14.0 + fit.phase == pytest.approx(HELD, abs=0.3)


def test_before_its_first_measurement_a_run_carries_the_last_rate_on() -> None:
    fit = DriftFit()
    _follow(fit, lambda t: 700.0 - 1.5 * t, 6.0)
    fit.restart()
    for k in range(100):  # one second of frames, no measurement
        fit.step(20.0 + k / 100, FRAME / RATE)
    assert fit.phase == pytest.approx(1.5, abs=0.1)


def test_weak_peaks_disagreeing_peaks_and_outliers_do_not_move_the_compensation() -> None:
    fit = DriftFit()
    assert not fit.add(0.0, 500.0, 0.05, 0)  # not the echo
    assert not fit.add(0.1, 500.0, 0.2, 0)  # too weak to place the reference
    assert not fit.add(0.2, 25.0, 0.6, 0)  # a clear peak, but alone so far
    assert not fit.add(0.3, 500.0, 0.6, 0)  # another, far from it
    assert not fit.placed
    rng = np.random.default_rng(3)
    t = 0.0
    for k in range(24):
        delay = 500.0 + (40.0 if k % 7 == 3 else float(rng.normal(0, 0.1)))  # a few outliers
        fit.add(t, delay + fit.phase, 0.6, 0)
        t += 0.25
    assert fit.rate == pytest.approx(0.0, abs=0.1)
    assert 500.0 + fit.phase == pytest.approx(HELD, abs=0.5)


def test_the_lines_noise_does_not_move_the_reference_of_a_path_that_stands_still() -> None:
    """Measurements of an echo that does not move, each off by its noise (bench.aec's rooms:
    the line's intercept wandered 0.55 samples peak to peak): once placed, the reference
    stays where it is, so the echo stays still under the filter."""
    fit = DriftFit()
    rng = np.random.default_rng(5)
    noise = iter(rng.normal(0.0, 0.15, 2000))
    _follow(fit, lambda t: 655.0 + next(noise), 2.0)
    placed_at = fit.phase
    phases = []
    t = 2.0
    for k in range(3000):  # 30 s of frames, a measurement every 0.25 s
        fit.step(t, FRAME / RATE)
        phases.append(fit.phase)
        if k % 25 == 0:
            fit.add(t, 655.0 + next(noise) + fit.phase, 0.6, 0)
        t += 0.01
    assert all(p == placed_at for p in phases)  # 0.37 samples of wander without the dead band
    assert fit.steady


def test_the_compensation_slides_no_faster_than_its_step() -> None:
    fit = DriftFit()
    _follow(fit, lambda t: 700.0, 3.0)
    # The echo slides 2 samples (within the line's noise allowance, no jump): the phase
    # follows gradually.
    before = fit.phase
    phases = []
    placed = []
    t = 3.0
    for k in range(600):
        placed.append(fit.step(t, FRAME / RATE))
        phases.append(fit.phase)
        if k % 25 == 0:
            placed.append(fit.add(t, 700.0 + min(2.0, (t - 3.0) * 4) + fit.phase, 0.6, 0))
        t += 0.01
    assert not any(placed)
    steps = np.abs(np.diff([before, *phases]))
    assert steps.max() <= MAX_STEP + 1e-9
    # A steady path: followed to within the dead band (the line's noise is not motion).
    assert 702.0 + fit.phase == pytest.approx(HELD, abs=DEADBAND + 1e-6)


def test_a_jump_of_the_echo_path_places_the_reference_again() -> None:
    fit = DriftFit()
    _follow(fit, lambda t: 700.0, 3.0)
    # An underrun the player's timing did not see: the echo comes 20 samples later from
    # now on. One measurement off the line is an outlier; three in a row are a jump.
    placed = _follow(fit, lambda t: 720.0, 1.0, start=3.0)
    assert placed[:2] == [False, False] and placed[2]
    assert 720.0 + fit.phase == pytest.approx(HELD, abs=1e-6)


def test_a_slew_of_the_players_timing_leaves_the_placed_reference_on_the_echo() -> None:
    """The player's timing slews the reference a sample later now and then in a run's first
    seconds (PulseAudio's timing tightening): the echo itself did not move, so the
    compensated reference must not either, nor may the slews read as drift."""
    fit = DriftFit()
    raw = [700.0]  # where the echo lies behind the uncompensated reference
    _follow(fit, lambda t: raw[0], 3.0)
    assert raw[0] + fit.phase == pytest.approx(HELD, abs=1e-6)
    t, placed = 3.0, []
    for k in range(400):
        if k % 25 == 10 and k < 100:  # four slews in a second
            raw[0] += 1.0
            fit.rebase(1.0)
        placed.append(fit.step(t, FRAME / RATE))
        assert raw[0] + fit.phase == pytest.approx(HELD, abs=1e-6)
        if k % 25 == 0:
            placed.append(fit.add(t, raw[0] + fit.phase, 0.6, 0))
        t += FRAME / RATE
    assert not any(placed) and raw[0] == 704.0
    assert fit.rate == pytest.approx(0.0, abs=1e-6) and fit.steady


# --- the measurement and the fractional reference -------------------------------------------


def _delayed(x: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """``x`` heard ``delay[n]`` samples late at sample n (band-limited interpolation)."""
    n = np.arange(len(x))
    return np.asarray(np.interp(n - delay, n, x.astype(np.float64)))


def test_the_echo_delay_is_measured_to_a_fraction_of_a_sample() -> None:
    rng = np.random.default_rng(1)
    # Speech-like: noise shaped to fall above 1 kHz.
    far = np.convolve(rng.standard_normal(RATE), np.ones(4) / 4, "same") * 6000
    for true in (0.0, 123.4, 2000.7):
        mic = _delayed(far, np.full(len(far), true)) * 0.5 + rng.normal(0, 30, len(far))
        delay = EchoDelay()
        for k in range(len(far) // FRAME):
            s = slice(k * FRAME, (k + 1) * FRAME)
            delay.add(mic[s].astype(np.int16), far[s].astype(np.int16))
        measured, quality = delay.measure()
        assert measured == pytest.approx(true, abs=0.35)
        assert quality > 0.3


def test_the_fractional_reader_reads_between_samples() -> None:
    tap = ReferenceTap(RATE)
    t = np.arange(RATE) / RATE
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    tap.written(tone, 0, 100.0)
    reader = FractionalReader()
    out = np.zeros(FRAME, dtype=np.int16)
    pos = 4000.3
    assert reader.read(tap, 100.0, out, pos)
    expect = 8000 * np.sin(2 * np.pi * 440 * (pos + np.arange(FRAME)) / RATE)
    assert np.max(np.abs(out - expect)) < 20  # about -52 dB of the tone
    whole = np.zeros(FRAME, dtype=np.int16)
    assert reader.read(tap, 100.0, whole, 4000.0)
    assert np.array_equal(whole, tone[4000 : 4000 + FRAME])


def test_a_placement_on_a_wrong_peak_is_mended_by_the_next_three_measurements() -> None:
    """Two clear peaks that agreed but were not the echo (bench.echo_loop's 100 ms loop
    once placed the reference 1675 samples off): the measurements that follow put the
    line elsewhere, and the reference is placed again there at once rather than slid
    there at 5 samples a second."""
    fit = DriftFit()
    fit.add(0.0, 25.0, 0.6, 0)
    assert fit.add(0.25, 25.0, 0.6, 0)
    placed = _follow(fit, lambda t: 1700.0, 7.0, start=0.5)
    # The third measurement in a row off where it was placed: before any line is fitted
    # (bench.echo_loop's -40 ppm loop, a peak 39 samples off, was mended only after 4 s).
    assert placed[:3] == [False, False, True] and not any(placed[3:])
    assert 1700.0 + fit.phase == pytest.approx(HELD, abs=0.5)


def test_one_far_measurement_does_not_keep_the_line_from_being_fitted() -> None:
    """A measurement far off the rest (a reverberant syllable, the user over the reply)
    is left out of the line; fitted through all of them it pulled the line off the rest,
    which then all looked like outliers until the far one was KEEP_S old."""
    fit = DriftFit()
    path = _line_at(655.0, 1.3)
    _follow(fit, path, 0.6)
    assert fit.placed and fit.rate == 0.0
    fit.add(0.7, path(0.7) + 39.0 + fit.phase, 0.6, 0)
    _follow(fit, path, 2.0, start=0.75)
    assert fit.rate == pytest.approx(-1.3, abs=0.1)


def test_a_drift_at_a_rate_that_holds_is_followed_and_one_that_wanders_is_not() -> None:
    """Two sound cards on their own crystals slide at a steady ratio: once the pooled line
    predicts each measurement, the voice may interrupt replies there. A sound server
    adapting its rate changes it (bench.echo_loop: -0.3 to -2.2 samples a second): that
    path is not steady. A still path, or one drifting by a few ppm, is."""
    still, slow, crystal, adapting = DriftFit(), DriftFit(), DriftFit(), DriftFit()
    _follow(still, lambda t: 655.0, 6.0)
    _follow(slow, lambda t: 655.0 + 0.1 * t, 6.0)
    first = DriftFit()
    _follow(first, lambda t: 655.0 + 1.3 * t, 2.5)
    assert not first.steady  # its rate is not known yet to hold
    _follow(crystal, lambda t: 655.0 + 1.3 * t, 8.0)
    _follow(adapting, _wandering, 20.0)
    assert still.steady and slow.steady and not still.tracked
    assert abs(crystal.rate) > STEADY_RATE and crystal.steady and crystal.tracked
    assert 655.0 + 1.3 * 8.0 + crystal.phase == pytest.approx(HELD, abs=0.1)
    assert abs(adapting.rate) > STEADY_RATE and not adapting.steady


def test_a_drifting_paths_rate_holds_across_runs_and_each_run_shows_it_anew() -> None:
    """A new playback run is placed afresh, a few ms off the last, and the pooled rate
    carries on: the run is followed at it from its first measurement. The voice waits for
    the run's own first predictions: a rate-adapting loop changed its rate as a reply
    began (bench.echo_loop's 10 ms loop, a reply cut 1.3 s in)."""
    fit = DriftFit()
    _follow(fit, lambda t: 655.0 - 0.64 * t, 8.0)  # -40 ppm
    assert fit.tracked
    for rate, tracked in ((-0.64, True), (-1.6, False)):
        fit.restart()
        path = _line_at(700.0, rate)
        placed = _follow(fit, path, 0.6, start=20.0)
        assert any(placed) and not fit.tracked  # placed, nothing predicted yet
        _follow(fit, path, 1.4, start=20.6)
        assert fit.tracked is tracked and fit.steady is tracked
        if tracked:
            assert fit.rate == pytest.approx(0.64, abs=0.02)
            assert 700.0 - 0.64 * 22.0 + fit.phase == pytest.approx(HELD, abs=0.1)


def test_a_run_placed_a_little_off_its_echo_is_put_on_it_by_its_next_measurements() -> None:
    """The measurement that places a run is not the clearest (PLACE_QUALITY): when it lies
    0.8 samples off the echo, the pooled line is put where the run's next measurements
    say, and they are predicted within a second of the placement."""
    fit = DriftFit()
    _follow(fit, _line_at(655.0, 0.96), 8.0)  # +60 ppm
    fit.restart()
    true = _line_at(700.0, 0.96)

    def path(t: float) -> float:
        return true(t) + (0.8 if t < 20.6 else 0.0)

    _follow(fit, path, 1.8, start=20.0)
    assert fit.tracked
    _follow(fit, true, 1.0, start=21.8)
    assert fit.tracked
    assert true(22.8) + fit.phase == pytest.approx(HELD, abs=DEADBAND + 0.1)


def test_a_weak_measurement_does_not_hide_a_jump_of_the_echo_path() -> None:
    """Measurements over the user's voice are weaker: one below PLACE_QUALITY amid those
    that show the jump leaves their count as it was (it reset it, and through a two-clock
    loop an echo 80 samples earlier was placed again only 2.8 s later)."""
    fit = DriftFit()
    _follow(fit, lambda t: 700.0, 3.0)
    t = 3.25
    for quality, placed in ((0.6, False), (0.6, False), (0.2, False), (0.6, True)):
        assert fit.add(t, 620.0 + fit.phase, quality, 0) is placed
        t += 0.25
    assert 620.0 + fit.phase == pytest.approx(HELD, abs=1e-6)


def _line_at(start: float, rate: float) -> DelayAt:
    return lambda t: start + rate * t


def _wandering(t: float) -> float:
    """An echo whose drift switches between -0.3 and -2.2 samples a second every 2 s."""
    rates, every = (0.3, 2.2), 2.0
    k = int(t // every)
    whole = sum(rates[i % 2] * every for i in range(k))
    return 655.0 + whole + rates[k % 2] * (t - k * every)
