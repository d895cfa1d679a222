"""The application layer: the parts ``appliance.daemon`` (the composition root) wires.

- ``audio``: the audio path's adapters (capture thread, front end, playback thread) and the
  control messages the loop posts to the capture side.
- ``router``: routes the pure cores' actions (session, cues) to the adapters; the session
  clock and the cue timer.
- ``link``: one connection: its reader, its single writer, the outgoing queue and the tool
  runs, all in a TaskGroup scoped to the connection.
- ``supervisor``: connect, serve, back off, again; each failure classed retryable or fatal.
- ``reloader``: carries out the plan ``appliance.reload`` makes from two configs.
- ``announcements``: the announcement queue (``appliance.core.announce``) at the router's
  quiet moments, its expiry timer, and no wake-mode follow-up after a "say".

Modules here may import ``appliance.core``, the adapters (``appliance.audio``,
``appliance.transport``, ...) and each other in the order above (a later module may import an
earlier one); none imports ``appliance.daemon``.
"""
