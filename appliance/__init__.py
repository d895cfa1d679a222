"""appliance: a Raspberry Pi voice appliance for the Inworld Realtime API.

Layout (see README "Architecture"):
- ``appliance.core``: sans-I/O logic (protocol, session state machine, audio gate, backoff).
  It imports nothing from the adapters and never touches sockets, threads or clocks.
- ``appliance.audio``: ALSA capture/playback threads, ring buffers, resampling, VAD adapter.
- ``appliance.transport``: the websockets client.
- ``appliance.daemon``: the composition root that wires everything under one TaskGroup.
- ``appliance.simulator``: the loopback realtime server used by the demo and the tests.
"""

__version__ = "0.1.0"
