"""The pure VAD gate: N of M onset, hang-over, warm-up."""

from __future__ import annotations

from appliance.core.gate import Edge, VadGate


def run(gate: VadGate, pattern: str) -> list[tuple[int, Edge]]:
    edges = []
    for i, ch in enumerate(pattern):
        edge = gate.process(ch == "1")
        if edge:
            edges.append((i, edge))
    return edges


def make(**kw: int) -> VadGate:
    args = {"frame_ms": 30, "start_frames": 3, "start_window": 5, "hangover_ms": 300, "warmup_ms": 0} | kw
    return VadGate(**args)


def test_three_of_five_starts_and_hangover_stops() -> None:
    gate = make()
    edges = run(gate, "0010101" + "1" * 10 + "0" * 10)
    assert edges == [(6, Edge.START), (26, Edge.STOP)]


def test_isolated_clicks_do_not_start() -> None:
    assert run(make(), "1000100010001000") == []


def test_short_pause_inside_speech_does_not_stop() -> None:
    edges = run(make(), "111" + "000000000" + "111" + "0" * 10)
    assert [e for _, e in edges] == [Edge.START, Edge.STOP]


def test_warmup_ignores_early_speech() -> None:
    gate = make(warmup_ms=150)
    assert run(gate, "11111") == []
    assert run(gate, "111") == [(2, Edge.START)]


def test_require_asks_for_more_evidence_and_keeps_what_was_seen() -> None:
    gate = make()
    gate.require(4, 6)  # the echo guard while the speaker plays
    assert run(gate, "0111") == []  # 3 of 5 would have started here
    assert run(gate, "1") == [(0, Edge.START)]  # the frames already seen still count
    assert run(gate, "0" * 10) == [(9, Edge.STOP)]
    gate.require(3, 5)
    assert run(gate, "111") == [(2, Edge.START)]


def test_require_rejects_more_frames_than_the_window() -> None:
    import pytest

    with pytest.raises(ValueError):
        make().require(5, 4)


def test_an_end_hint_at_a_pause_stops_without_the_hangover() -> None:
    gate = make(hangover_ms=600)
    assert run(gate, "111") == [(2, Edge.START)]
    assert gate.process(False, may_end=False) is None
    assert gate.process(True, may_end=True) is None  # a voiced frame never ends the turn
    assert gate.process(False, may_end=True) is Edge.STOP
