"""Exactly one answer per turn against every server profile: the real daemon (in this
process, on its own event loop) with alsa-lib file devices, VAD-gated speech from the mic
file, and the loopback simulator over real websockets playing each variant of the service.

The invariant, in every profile: each user turn is committed once and gets exactly one
answered (completed) response, no error event is provoked (the one exception: a voice the
service does not know, refused once and then left out), each answer's transcript is logged
once and whole, and the daemon ends ready (nothing lost, nothing hung). ``fast`` is combined
with the other variants where real-time pacing is not the point; ``realistic`` runs as is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from test_e2e_session import KEY, Run, config, running

from appliance.core.confirmed import QUIET_TURN_DETECTION
from appliance.core.session import CallTool, Play, StopPlayback, Transcript
from appliance.core.state import State
from appliance.demo import speech_recording
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator

if TYPE_CHECKING:
    from alsa_env import AlsaEnv

pytest_plugins = ["alsa_env"]

ANSWER = re.compile(r"^(get_time returned .+\. )?You said something \d+\.\d\d seconds long\.$")


def questions(gap_s: float, count: int = 2) -> np.ndarray[Any, np.dtype[np.int16]]:
    """The mic file: ``count`` spoken questions (the shipped recording's speech, 16 kHz),
    ``gap_s`` of silence after each, then a quiet room."""
    pcm, rate = speech_recording()
    speech = np.frombuffer(pcm, dtype=np.int16)[int(0.3 * rate) : int(3.3 * rate)]
    quiet = np.zeros(int(gap_s * rate), dtype=np.int16)
    parts = [np.zeros(rate // 2, dtype=np.int16)]
    for _ in range(count):
        parts += [speech, quiet]
    parts.append(np.zeros(rate * 60, dtype=np.int16))
    return np.concatenate(parts)


@dataclass(frozen=True)
class Case:
    profile: str
    # The answer (the simulator plays the question's own audio back) must have played out
    # before the next question starts, or that question is a barge-in: a 3 s gap left too
    # little on a loaded machine.
    gap_s: float = 4.5
    session: tuple[tuple[str, Any], ...] = ()
    tools: bool = False
    refusals: int = 0  # error events the service sends: the config's fault, or providerData
    logged_errors: int = 0  # of those, the ones the daemon logs as errors (a config fault)

    @property
    def id(self) -> str:
        extra = "+tools" if self.tools else ""
        return self.profile + extra + ("+" + ",".join(k for k, _ in self.session) if self.session else "")


CASES = [
    Case("fast"),
    Case("fast,keeps-turn-detection"),
    Case("fast,auto-tool-response", tools=True),
    Case("fast,auto-tool-response", tools=True, session=(("providerData", {"auto_tool_response": True}),)),
    Case("fast,param-less-errors", session=(("audio", {"output": {"voice": "Nope"}}),),
         refusals=1, logged_errors=1),
    Case("fast,slow-first-audio", gap_s=6.0),  # the next question after the late answer
    Case("fast,text-and-audio", session=(("output_modalities", ["audio", "text"]),)),
    Case("fast,strict"),  # no tools: no providerData sent, nothing refused
    Case("fast,strict", tools=True, refusals=1),  # providerData refused once, then left out
    Case("realistic", gap_s=6.0),
]


def quiet_s(sim: RealtimeSimulator) -> float:
    """How long after the last answer an extra one (a second response to a turn) would have
    shown: the profile's own latency from a trigger to a response's audio, plus slack for a
    loaded machine. The fast profile answers at once; the realistic one within 0.5 s."""
    p = sim.profile
    return (p.response_delay_ms + p.first_audio_delay_ms) / 1000 + 0.5


@pytest.fixture
def sim_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="realtime_sim")
    caplog.set_level(logging.INFO, logger="appliance")
    yield caplog


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_turn_gets_exactly_one_answer(case: Case, alsa_env: AlsaEnv, sim_log: pytest.LogCaptureFixture) -> None:
    turns = 2
    alsa_env.write_mic(questions(case.gap_s, turns))
    script = SimScript(tool_calls=(ToolCall("get_time"),)) if case.tools else None
    tools = [{"name": "get_time"}] if case.tools else None

    async def scenario() -> tuple[Run, list[Any]]:
        async with RealtimeSimulator(api_key=KEY, profile=case.profile, script=script) as sim:
            cfg_here = config(sim.url, tools, gate={"mode": "vad"}, session=dict(case.session))
            async with running(cfg_here, sim) as run:
                def answered() -> bool:
                    agent = [t for t in run.of(Transcript) if t.role == "agent"]
                    return len(agent) >= turns and run.daemon.session.state is State.READY
                await run.until(answered, 60 if "realistic" in case.profile else 40, "an answer per turn")
                await asyncio.sleep(quiet_s(sim))  # anything extra (a second answer) shows by now
                return run, sim.sessions

    t0 = time.monotonic()
    run, sessions = asyncio.run(scenario())
    elapsed = time.monotonic() - t0
    sent = run.types()
    assert len(sessions) == 1, "one connection: nothing dropped or hung"
    assert sent.count("input_audio_buffer.commit") == turns, sent
    # Responses the service made (or was asked for), from its own conversation.
    records = sessions[0].conversation.records()
    answers = [r for r in records if r.item["type"] == "message" and r.item["role"] == "assistant"]
    assert [r.item["status"] for r in answers] == ["completed"] * turns
    calls = [r for r in records if r.item["type"] == "function_call"]
    assert len(calls) == (1 if case.tools else 0)
    assert len(run.of(CallTool)) == len(calls)
    # Each answer's transcript logged once, whole (not doubled, not interleaved).
    agent = [t.text for t in run.of(Transcript) if t.role == "agent"]
    assert len(agent) == turns and all(ANSWER.match(text) for text in agent), agent
    refused = [r for r in sim_log.records if r.name == "realtime_sim.engine" and "refused an event" in r.getMessage()]
    assert len(refused) == case.refusals, [r.getMessage() for r in refused]
    errors = [r.getMessage() for r in sim_log.records if r.name.startswith("appliance") and r.levelno >= logging.ERROR]
    assert len(errors) == case.logged_errors, errors
    assert run.daemon.session.state is State.READY
    assert elapsed < 60
    # What each variant needed of the daemon.
    updates = [e["session"] for e in run.sim.received if e["type"] == "session.update"]
    creates = sent.count("response.create")
    if "keeps-turn-detection" in case.profile:  # asked once for a detector that does nothing
        assert [u["audio"]["input"]["turn_detection"] for u in updates] == [None, QUIET_TURN_DETECTION]
    if "param-less" in case.profile:  # the voice left out, the rest sent again
        assert len(updates) == 2 and "voice" not in updates[1]["audio"]["output"]
    if case.tools:
        server_answers = dict(case.session).get("providerData", {}).get("auto_tool_response")
        assert creates == turns + (0 if server_answers else 1)
    else:
        assert creates == turns


def test_barge_in_at_real_time_pace_cancels_once_and_the_next_turn_is_answered_once(
    alsa_env: AlsaEnv, sim_log: pytest.LogCaptureFixture
) -> None:
    """``realistic``: the second question starts while the first answer plays; the service's
    deltas keep coming for a while after the cancel and must not be played."""
    alsa_env.write_mic(questions(1.8, 2))

    async def scenario() -> tuple[Run, list[Any]]:
        async with RealtimeSimulator(api_key=KEY, profile="realistic") as sim:
            cfg = config(sim.url, gate={"mode": "vad"})
            async with running(cfg, sim) as run:
                def answered() -> bool:
                    agent = [t for t in run.of(Transcript) if t.role == "agent"]
                    return len(agent) >= 1 and run.daemon.session.state is State.READY
                await run.until(answered, 60, "the second answer")
                await asyncio.sleep(quiet_s(sim))
                return run, sim.sessions

    run, sessions = asyncio.run(scenario())
    sent = run.types()
    assert sent.count("input_audio_buffer.commit") == 2
    assert sent.count("response.create") == 2 and sent.count("response.cancel") == 1
    records = sessions[0].conversation.records()
    answers = [r.item["status"] for r in records if r.item["type"] == "message" and r.item["role"] == "assistant"]
    assert answers == ["incomplete", "completed"]
    agent = [t.text for t in run.of(Transcript) if t.role == "agent"]
    assert len(agent) == 1 and ANSWER.match(agent[0]), agent  # the interrupted one is not logged
    # Nothing of the first answer is played after the stop (its late deltas are dropped).
    first_item = next(r.id for r in records if r.item.get("role") == "assistant")
    stop_at = next(i for i, (_, a) in enumerate(run.actions) if isinstance(a, StopPlayback))
    assert not [a for _, a in run.actions[stop_at:] if isinstance(a, Play) and a.item_id == first_item]
    refused = [r.getMessage() for r in sim_log.records if r.name == "realtime_sim.engine" and "refused an event" in r.getMessage()]
    assert refused == []
    assert run.daemon.session.state is State.READY
