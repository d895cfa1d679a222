"""appliance: a Raspberry Pi voice appliance for the Inworld Realtime API.

Layout (see docs/architecture.md):
- ``appliance.core``: sans-I/O logic (protocol, session state machine, audio gate, backoff).
  It imports nothing from the adapters and never touches sockets, threads or clocks.
- ``appliance.audio``: ALSA capture/playback threads, ring buffers, resampling, VAD adapter.
- ``appliance.transport``: the websockets client.
- ``appliance.app``: the application layer: audio path, action router, connection (link and
  supervisor), reload applier.
- ``appliance.daemon``: the composition root that wires everything under one TaskGroup.

The loopback realtime server used by the demo and the tests is the separate top-level
package ``realtime_sim`` (same source tree, not part of the product); ``appliance simulate``
and ``appliance demo`` import it on demand.
"""

__version__ = "0.1.0"
