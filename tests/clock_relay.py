"""An echo path between two sound cards on their own clocks: ``python clock_relay.py PPM MS``.

PulseAudio's null sinks all run on the machine's one clock, and ``module-loopback`` between
them either holds its rate fixed (one sound card) or adapts it, wandering with its rate
controller (a sound server adapting between two cards). Two real cards (a USB microphone
and the Pi's headphone jack or a USB speaker) do neither: each runs on its own crystal, a
few tens of ppm off the other, and the echo's delay behind the speaker's reference grows
or shrinks at that steady rate for as long as they run.

This relay makes that path: it records what the speaker sink ``spk`` renders (``parec``
from ``spk.monitor``, 16 kHz mono), resamples it by ``1 + PPM / 1e6`` (soxr, a steady
ratio), and plays it into ``micfeed`` (``pacat``, ``MS`` ms of buffering), so the echo the
microphone ``pmic`` hears slides ``PPM`` millionths of a second per second against the
reference: later for a positive PPM (the relay's surplus waits in the recorder's buffer),
earlier for a negative one (the player's buffer drains, ``MS`` ms leave minutes for it).

Runs until killed; ``PULSE_SERVER`` says which PulseAudio. Imports: numpy, soxr.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import soxr

RATE = 16000
BLOCK = 160  # samples: 10 ms


def main(ppm: float, latency_ms: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below stops both
    common = ["--raw", f"--rate={RATE}", "--channels=1", "--format=s16le"]
    rec = subprocess.Popen(
        ["parec", *common, "--device=spk.monitor", "--latency-msec=10"], stdout=subprocess.PIPE
    )
    play = subprocess.Popen(
        ["pacat", "--playback", *common, "--device=micfeed", f"--latency-msec={latency_ms}"],
        stdin=subprocess.PIPE,
    )
    assert rec.stdout is not None and play.stdin is not None
    stream = soxr.ResampleStream(RATE, RATE * (1 + ppm * 1e-6), 1, dtype="float32", quality="HQ")
    try:
        while block := rec.stdout.read(2 * BLOCK):
            x = np.frombuffer(block, dtype="<i2").astype(np.float32)
            y = stream.resample_chunk(x)
            play.stdin.write(np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes())
            play.stdin.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        rec.kill()
        play.kill()


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
