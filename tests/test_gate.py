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
