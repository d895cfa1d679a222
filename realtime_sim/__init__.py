"""The loopback realtime server: a strict stand-in for Inworld's Realtime API.

It is the peer of ``appliance demo`` and of every end-to-end test. The sans-I/O core
(:class:`SimSession`, in ``engine``) speaks the OpenAI Realtime GA event protocol and rejects
what the real service rejects; :class:`RealtimeSimulator` (``server``) puts it on a
websockets server with the service's handshake checks.

    engine        SimSession: one session's behaviour, no I/O
    ├── validate  strict checks of client events, GA error vocabulary
    ├── vad       energy-based turn detection over the appended audio
    ├── response  lazily produced response event sequences
    ├── conversation  items, per-item audio bookkeeping, ids
    ├── codecs    wire formats (PCM16 24 kHz, G.711 mu-law / A-law 8 kHz)
    └── script    SimScript: scripted tool calls and the session duration cap
    faults        switchable faults (``--fault``): refusals, cuts, stalls, malformed frames
    server        RealtimeSimulator, serve_forever, run_simulator (websockets adapter)
"""

from realtime_sim.engine import SimSession
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator, run_simulator, serve_forever
from realtime_sim.validate import SimError

__all__ = [
    "RealtimeSimulator",
    "SimError",
    "SimScript",
    "SimSession",
    "ToolCall",
    "run_simulator",
    "serve_forever",
]
