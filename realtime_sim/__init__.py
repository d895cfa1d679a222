"""realtime_sim: the loopback stand-in for Inworld's Realtime API, and the test room.

Not part of the product: it ships from the same source tree (``pip install -e .``,
``make setup-test``) for ``appliance demo``, ``appliance simulate``, the tests and the
benches, which import it on demand. It stands in for the service, so it imports nothing of
the daemon's session, protocol or transport code (``appliance.core.session``,
``appliance.core.protocol``, ``appliance.transport``, ``appliance.daemon``); only the test
room drives the daemon's audio front end, which is what it exists to test.

The sans-I/O core (:class:`SimSession`, in ``engine``) speaks the OpenAI Realtime GA event
protocol the way the real service does: by default it paces replies at real time, answers
after a first-audio delay, sends transcripts on their own schedule, and accepts Inworld's
extensions (``session.providerData``) and beta aliases while logging what the GA schema
would reject. A :class:`ServerProfile` (``profiles``) selects variants of the service
(``fast``, ``keeps-turn-detection``, ``auto-tool-response``, ``param-less-errors``,
``slow-first-audio``, ``text-and-audio``, ``strict``); :class:`RealtimeSimulator`
(``server``) puts the engine on a websockets server with the service's handshake checks.

    engine        SimSession: one session's behaviour, no I/O (delays are timers on a clock
    │             the adapter feeds in)
    ├── profiles  ServerProfile and the named variants (simulate --profile NAME)
    ├── validate  the GA schema's checks, GA error vocabulary
    ├── vad       energy-based turn detection over the appended audio
    ├── response  lazily produced response event sequences
    ├── conversation  items, per-item audio bookkeeping, ids
    ├── codecs    wire formats (PCM16 24 kHz, G.711 mu-law / A-law 8 kHz)
    └── script    SimScript: scripted tool calls and the session duration cap
    faults        switchable faults (``--fault``): refusals, cuts, stalls, malformed frames
    server        RealtimeSimulator, serve_forever, run_simulator (websockets adapter)
    webrtc        the WebRTC endpoint (aiortc), with rtcaudio (frames) and wire (event type)
    voicesdk      the Voice SDK token socket (aiohttp), on endpoint
    room          the echo test room (espeak-ng voices, loudspeaker, reverb) and the
                  front-end runner for tests/test_aec.py and bench/aec.py
"""

from realtime_sim.engine import SimSession
from realtime_sim.profiles import PROFILES, ServerProfile
from realtime_sim.script import SimScript, ToolCall
from realtime_sim.server import RealtimeSimulator, run_simulator, serve_forever
from realtime_sim.validate import SimError

__all__ = [
    "PROFILES",
    "RealtimeSimulator",
    "ServerProfile",
    "SimError",
    "SimScript",
    "SimSession",
    "ToolCall",
    "run_simulator",
    "serve_forever",
]
