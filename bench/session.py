"""What the session's life costs: tool-call round trips and the session core's per-event work.

- A tool call, from the arguments to the output text (``Toolbox.call``): the built-in
  ``get_time``, a program that starts fast (``/bin/cat``, echoing its JSON stdin) and a Python
  program (``python3 -c``, what a typical script tool costs to start). Median and 90th
  percentile wall time over repeated calls.
- The session core (``Session``): decoding (the WebSocket's JSON codec) and handling one
  100 ms audio delta (the busiest server event), one ``tick`` (run at the session's next deadline) and one whole function-call
  response (created, arguments.done, done, the result, the outputs and response.create).
  Median CPU time per call.

Run: ``.venv/bin/python -m bench.session``. The machine is shared: compare the figures of
one run with each other, not across runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable

from appliance.config import parse_config, session_settings
from appliance.core.session import Session
from appliance.tools import Toolbox
from appliance.transport import codec

TOOL_CALLS = 40
CORE_CALLS = 20000


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9) - 1]


async def _tool_times(box: Toolbox, name: str) -> list[float]:
    times = []
    for _ in range(TOOL_CALLS):
        t0 = time.perf_counter()
        out = await box.call(name, '{"city": "Oslo"}' if name != "get_time" else "{}")
        times.append((time.perf_counter() - t0) * 1000)
        assert "error" not in json.loads(out), out
    return times


def bench_tools() -> None:
    params = {"properties": {"city": {"type": "string"}}, "required": ["city"]}
    config = parse_config(
        {
            "tools": [
                {"name": "get_time"},
                {"name": "cat", "command": ["/bin/cat"], "parameters": params},
                {
                    "name": "python",
                    "command": [
                        sys.executable,
                        "-c",
                        "import json,sys; print(json.dumps(json.load(sys.stdin)))",
                    ],
                    "parameters": params,
                },
            ]
        }
    )
    box = Toolbox(config.tools)
    print(f"tool call round trip (arguments to output), {TOOL_CALLS} calls each:")
    for name, label in (
        ("get_time", "built-in get_time"),
        ("cat", "program /bin/cat"),
        ("python", "program python3 -c (a typical script)"),
    ):
        median, p90 = _percentiles(asyncio.run(_tool_times(box, name)))
        print(f"  {label:40s} median {median:7.2f} ms   p90 {p90:7.2f} ms")


def _cpu_us(fn: Callable[[], None], calls: int = CORE_CALLS) -> float:
    samples = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        samples.append((time.thread_time() - t0) / calls * 1e6)
    return statistics.median(samples)


def _ready_session() -> Session:
    s = Session(session_settings(parse_config({"tools": [{"name": "get_time"}]})))
    s.connected()
    s.server_event(codec.decode(json.dumps({"type": "session.created", "session": {"id": "s"}})), 0.0)
    s.server_event(codec.decode(json.dumps({"type": "session.updated", "session": {}})), 0.0)
    s.take()
    return s


def bench_core() -> None:
    s = _ready_session()
    s.server_event(codec.decode(json.dumps({"type": "response.created", "response": {"id": "r"}})), 1.0)
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(b"\x01\x00" * 2400).decode(),
        }
    )

    def one_delta() -> None:
        s.server_event(codec.decode(delta), 1.0)
        s.take()

    t = _ready_session()
    clock = [10.0]

    def one_tick() -> None:
        clock[0] += 0.5
        t.tick(clock[0])
        t.take()

    u = _ready_session()
    frames = [
        json.dumps({"type": "response.created", "response": {"id": "r"}}),
        json.dumps(
            {
                "type": "response.function_call_arguments.done",
                "call_id": "c",
                "name": "get_time",
                "arguments": "{}",
            }
        ),
        json.dumps({"type": "response.done", "response": {"id": "r", "status": "completed"}}),
    ]

    def one_call() -> None:
        for frame in frames:
            u.server_event(codec.decode(frame), 2.0)
        u.tool_result("c", '{"local_time": "x"}', 2.1)
        u.server_event(codec.decode(frames[0]), 2.2)
        u.server_event(codec.decode(frames[2]), 2.3)
        u.take()

    print("session core, CPU per call (median of 5 runs):")
    print(f"  100 ms audio delta (decode + handle)      {_cpu_us(one_delta):7.2f} us")
    print(f"  tick (deadline, renewal, idle policy)     {_cpu_us(one_tick):7.2f} us")
    print(f"  function-call response, whole             {_cpu_us(one_call, 2000):7.2f} us")


def main() -> None:
    bench_tools()
    bench_core()


if __name__ == "__main__":
    main()
