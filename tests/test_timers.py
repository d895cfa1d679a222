"""The timer and alarm core (appliance.core.timers) and its tools: synchronous, time as input.

Clocks: ``mono`` is the monotonic clock, ``wall`` epoch seconds; a test moves them apart to
step the wall clock. Local time is UTC+1 (Europe/Paris in winter) so nothing hides behind UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from appliance.config import parse_config
from appliance.core.schema import validate
from appliance.core.timers import (
    WALL_RECHECK_S,
    Chime,
    Kind,
    Save,
    StartRinging,
    StopReason,
    StopRinging,
    TimerAction,
    TimerError,
    Timers,
    TimerSettings,
    spoken_duration,
)
from appliance.timer_tools import TIMER_PARAMETERS, TimerTools

TZ = ZoneInfo("Europe/Paris")
# Monday 7 December 2026, 09:00 local (08:00 UTC).
MONDAY_9 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=TZ).timestamp()
BOOT = "boot-a"


class Clock:
    """Both clocks of one machine: ``advance`` moves both, ``step`` only the wall one."""

    def __init__(self, mono: float = 1000.0, wall: float = MONDAY_9) -> None:
        self.mono, self.wall = mono, wall

    def advance(self, s: float) -> tuple[float, float]:
        self.mono += s
        self.wall += s
        return self.now

    def step(self, s: float) -> None:
        self.wall += s

    @property
    def now(self) -> tuple[float, float]:
        return self.mono, self.wall


def run_until(core: Timers, clock: Clock, end_mono: float) -> list[tuple[float, TimerAction]]:
    """Tick at each deadline the core asks for until ``end_mono``; every action with its time."""
    seen: list[tuple[float, TimerAction]] = [(clock.mono, a) for a in core.take()]
    while True:
        due = core.next_deadline()
        if due is None or due > end_mono:
            clock.advance(end_mono - clock.mono)
            return seen
        clock.advance(max(0.0, due - clock.mono))
        core.tick(*clock.now)
        seen += [(clock.mono, a) for a in core.take()]


def rings(seen: list[tuple[float, TimerAction]]) -> list[tuple[float, str]]:
    return [(t, a.entry.name) for t, a in seen if isinstance(a, StartRinging)]


def test_a_timer_rings_at_its_time_chimes_until_stopped_and_is_forgotten() -> None:
    clock = Clock()
    core = Timers(TimerSettings(max_ring_s=60, ring_interval_s=2.5), TZ)
    entry = core.add_timer(240, "tea", *clock.now)
    assert entry.name == "tea timer"
    assert isinstance(core.take()[-1], Save)
    seen = run_until(core, clock, 1000 + 240 + 6)
    assert rings(seen) == [(1240.0, "tea timer")]
    chimes = [t for t, a in seen if isinstance(a, Chime)]
    assert chimes == [1240.0, 1242.5, 1245.0]
    assert core.is_ringing
    stopped = core.stop(*clock.now)
    assert stopped is not None and stopped.label == "tea"
    actions = core.take()
    assert any(isinstance(a, StopRinging) and a.reason is StopReason.STOPPED for a in actions)
    assert not core.is_ringing and core.next_deadline() is None
    assert core.snapshot(BOOT)["pending"] == [] and core.snapshot(BOOT)["ringing"] == []


def test_an_unanswered_ring_ends_after_max_ring_s_and_the_next_due_rings_after_it() -> None:
    clock = Clock()
    core = Timers(TimerSettings(max_ring_s=10, ring_interval_s=2.5), TZ)
    core.add_timer(5, "eggs", *clock.now)
    core.add_timer(6, "pasta", *clock.now)
    seen = run_until(core, clock, 1000 + 40)
    assert rings(seen) == [(1005.0, "eggs timer"), (1016.0, "pasta timer")]  # 10 s + 1 s gap
    stops = [(t, a.reason) for t, a in seen if isinstance(a, StopRinging)]
    assert stops == [(1015.0, StopReason.TIMEOUT), (1026.0, StopReason.TIMEOUT)]
    assert core.next_deadline() is None


def test_timers_ignore_a_wall_clock_step_and_alarms_follow_it() -> None:
    """An NTP step forward of an hour: the 10-minute timer still rings 10 minutes after it
    was set (not at once), and the 09:30 alarm rings when the wall clock says 09:30."""
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(600, "laundry", *clock.now)
    core.add_alarm(9, 30, "call", *clock.now)
    clock.advance(60)
    clock.step(25 * 60)  # 09:01 becomes 09:26
    seen = run_until(core, clock, 1000 + 700)
    # The step is seen at the wall re-check, WALL_RECHECK_S after the last input (at 1000).
    assert WALL_RECHECK_S == 60
    assert [(round(t), n) for t, n in rings(seen)] == [(1300, "call alarm"), (1600, "laundry timer")]


def test_a_wall_clock_stepped_back_after_a_repeating_alarm_rang_does_not_ring_it_twice() -> None:
    clock = Clock(wall=dt.datetime(2026, 12, 7, 6, 59, tzinfo=TZ).timestamp())
    core = Timers(TimerSettings(max_ring_s=5), TZ)
    core.add_alarm(7, 0, "", *clock.now, repeat=range(7))
    seen = run_until(core, clock, clock.mono + 120)
    assert [n for _, n in rings(seen)] == ["alarm"]
    clock.step(-90)  # back to 06:59:30
    seen = run_until(core, clock, clock.mono + 3600)
    assert rings(seen) == []
    nxt = core.next_due()
    assert nxt is not None
    assert core.local_time(nxt[1]) == dt.datetime(2026, 12, 8, 7, 0, tzinfo=TZ)


def test_alarm_dates_weekdays_and_the_past() -> None:
    clock = Clock()  # Monday 09:00
    core = Timers(TimerSettings(), TZ)
    once = core.add_alarm(8, 0, "", *clock.now)  # 08:00 passed today: tomorrow
    assert core.local_time(core.wall_time(once)) == dt.datetime(2026, 12, 8, 8, 0, tzinfo=TZ)
    weekend = core.add_alarm(10, 0, "gym", *clock.now, repeat=(5, 6))
    assert core.local_time(core.wall_time(weekend)).strftime("%A %H:%M") == "Saturday 10:00"
    with pytest.raises(TimerError, match="in the past"):
        core.add_alarm(8, 0, "", *clock.now, date=dt.date(2026, 12, 7))
    with pytest.raises(TimerError, match="not both"):
        core.add_alarm(8, 0, "", *clock.now, date=dt.date(2026, 12, 9), repeat=(1,))


def test_cancel_by_label_all_or_the_only_one_and_say_what_is_set() -> None:
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(60, "tea", *clock.now)
    core.add_timer(120, "pasta", *clock.now)
    with pytest.raises(TimerError, match=r"several are set \(tea, pasta\)"):
        core.cancel(Kind.TIMER, "", False, *clock.now)
    with pytest.raises(TimerError, match="no timer named 'rice' \\(tea, pasta\\)"):
        core.cancel(Kind.TIMER, "rice", False, *clock.now)
    assert [e.label for e in core.cancel(Kind.TIMER, "TEA", False, *clock.now)] == ["tea"]
    assert [e.label for e in core.cancel(Kind.TIMER, "", False, *clock.now)] == ["pasta"]
    with pytest.raises(TimerError, match="no timer is set"):
        core.cancel(Kind.TIMER, "", True, *clock.now)


def test_cancelling_the_ringing_one_stops_it() -> None:
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(1, "tea", *clock.now)
    run_until(core, clock, 1002)
    assert core.is_ringing
    core.cancel(Kind.TIMER, "tea", False, *clock.now)
    stops = [a for a in core.take() if isinstance(a, StopRinging)]
    assert [s.reason for s in stops] == [StopReason.CANCELLED]
    assert not core.is_ringing


def restart(core: Timers, clock: Clock, boot: str) -> Timers:
    """What a new daemon makes of the saved file (through JSON, as on disk)."""
    saved = json.loads(json.dumps(core.snapshot(BOOT)))
    again = Timers(core.settings, TZ)
    again.restore(saved, boot, *clock.now)
    return again


def test_a_restart_in_the_same_boot_keeps_the_monotonic_deadline_despite_a_clock_step() -> None:
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(600, "bread", *clock.now)
    clock.advance(100)
    clock.step(-3600)  # the wall clock went back an hour while the daemon was down
    again = restart(core, clock, BOOT)
    assert again.remaining(again.pending[0], clock.mono) == 500
    seen = run_until(again, clock, 1000 + 700)
    assert rings(seen) == [(1600.0, "bread timer")]


def test_after_a_reboot_a_timer_is_on_wall_time_and_rings_late_never_early() -> None:
    """Power cut: the monotonic clock restarts at 5 s; the wall clock comes up an hour
    behind (fake-hwclock) and NTP steps it forward later: the timer waits for the step."""
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(600, "stew", *clock.now)
    clock.advance(100)
    booted = Clock(mono=5.0, wall=clock.wall - 3600)
    again = restart(core, booted, "boot-b")
    assert rings(run_until(again, booted, 5 + 1200)) == []  # the clock says it is not time yet
    booted.step(3600 + 1200)  # NTP: it is really 1300 s after the timer was set
    seen = run_until(again, booted, booted.mono + WALL_RECHECK_S + 1)
    starts = [a for _, a in seen if isinstance(a, StartRinging)]
    assert [a.entry.name for a in starts] == ["stew timer"]


def test_what_fell_due_while_down_rings_once_at_start_saying_how_late() -> None:
    clock = Clock()
    core = Timers(TimerSettings(max_ring_s=5), TZ)
    core.add_timer(60, "tea", *clock.now)
    clock.advance(300)
    again = restart(core, clock, BOOT)
    again.tick(*clock.now)
    starts = [a for a in again.take() if isinstance(a, StartRinging)]
    assert [(a.entry.name, round(a.late_s)) for a in starts] == [("tea timer", 240)]
    seen = run_until(again, clock, clock.mono + 600)
    assert rings(seen) == []
    assert restart(again, clock, BOOT).pending == []  # gone from the saved file too


def test_a_ring_cut_by_a_power_failure_rings_again_at_start() -> None:
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(1, "tea", *clock.now)
    run_until(core, clock, 1003)
    assert core.is_ringing
    again = restart(core, clock, "boot-b")
    again.tick(*clock.now)
    assert [a.entry.name for a in again.take() if isinstance(a, StartRinging)] == ["tea timer"]


def test_spoken_durations() -> None:
    assert spoken_duration(240) == "4 minutes"
    assert spoken_duration(5400) == "1 hour 30 minutes"
    assert spoken_duration(61) == "1 minute 1 second"
    assert spoken_duration(45) == "45 seconds"


# --- the tools --------------------------------------------------------------------------------


class Host:
    def __init__(self, clock: Clock) -> None:
        self.timers = Timers(TimerSettings(), TZ)
        self.clock = clock
        self.changes = 0

    def clocks(self) -> tuple[float, float]:
        return self.clock.now

    def changed(self) -> None:
        self.changes += 1


def tool(host: Host, name: str, args: dict[str, Any]) -> Any:
    validate(args, TIMER_PARAMETERS[name])
    return json.loads(TimerTools(host).call(name, args))


def test_the_tools_answer_in_words_the_model_can_speak() -> None:
    host = Host(Clock())
    assert tool(host, "set_timer", {"seconds": 240, "label": "tea"}) == {
        "ok": True,
        "set": "tea timer set for 4 minutes",
        "rings_at": "09:04:00",
    }
    answer = tool(host, "set_alarm", {"time": "7:30", "repeat": ["weekdays"], "label": "work"})
    assert answer["set"] == "work alarm set for 07:30 on Tuesday 8 December"
    assert answer["in"] == "22 hours 30 minutes"
    host.clock.advance(60)
    listed = tool(host, "list_timers", {})
    assert listed["timers"] == [{"label": "tea", "remaining": "3 minutes"}]
    assert listed["alarms"][0]["repeat"] == ["monday", "tuesday", "wednesday", "thursday", "friday"]
    assert tool(host, "cancel_timer", {"all": True}) == {"ok": True, "cancelled": ["tea timer"]}
    with pytest.raises(TimerError, match="no alarm named 'gym'"):
        tool(host, "cancel_alarm", {"label": "gym"})
    assert host.changes == 5  # every call, failed or not, routes the core's actions


def test_the_timer_tools_are_built_ins_declared_by_name() -> None:
    config = parse_config({"tools": [{"name": n} for n in TIMER_PARAMETERS]})
    assert [t.name for t in config.tools if t.builtin] == list(TIMER_PARAMETERS)
    assert config.tools[0].parameters["required"] == ["seconds"]
    assert config.timers == TimerSettings()
    custom = parse_config({"timers": {"max_ring_s": 30, "ring_interval_s": 4}})
    assert custom.timers == TimerSettings(max_ring_s=30.0, ring_interval_s=4.0)


def test_timer_events_carry_a_timer_field_for_the_journal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="appliance.core.timers")
    clock = Clock()
    core = Timers(TimerSettings(), TZ)
    core.add_timer(60, "tea", *clock.now)
    clock.step(3600)
    core.cancel(Kind.TIMER, "tea", False, *clock.now)
    fields = [getattr(r, "TIMER", None) for r in caplog.records]
    assert fields == ["set timer tea", "clock-step", "cancel timer tea"]


def test_the_ringing_led_pattern_has_a_default_and_may_be_configured() -> None:
    from appliance.errors import ConfigError
    from appliance.led_patterns import LedMode

    single = parse_config({}).gpio.ringing_pattern()
    assert (single.mode, single.on_time, single.off_time) == (LedMode.BLINK, 0.25, 0.25)
    rgb = parse_config({"gpio": {"led": "rgb"}}).gpio.ringing_pattern()
    assert rgb.color == (128 / 255, 0.0, 1.0)  # purple
    mine = parse_config({"gpio": {"patterns": {"ringing": {"mode": "pulse", "fade_in": 0.2}}}})
    assert mine.gpio.ringing_pattern().mode is LedMode.PULSE
    with pytest.raises(ConfigError, match=r"timers\.max_ring_s"):
        parse_config({"timers": {"max_ring_s": 1}})
