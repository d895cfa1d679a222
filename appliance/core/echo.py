"""Echo cancellation's decisions, sans I/O: levels (dBFS of 10 ms frames), frame counts
and moments in, decisions out.

``appliance.audio.canceller.EchoCanceller`` measures (numpy, on the capture thread) and
drives AEC3 and the linear canceller; what it does with each frame is decided here:

- Idle: with only echo cancellation on, the canceller is bypassed once the speaker has
  been silent for ``IDLE_AFTER_S``.
- Echo coupling: AEC3's suppressor also removes the first few hundred ms of the user's
  voice while the reference plays, even when the microphone hears none of the speaker.
  The canceller therefore measures how much of the speaker the microphone hears (its
  level while the reference is loud against its own floor) and, while that is nothing
  above the room noise (``trusted``), hands the VAD the unprocessed microphone.
- Residual echo: while the speaker plays, a frame the canceller took far below what the
  microphone heard (``residual``) is handed on as silence, and so is everything AEC3 lets
  through while it first converges (``converging``).
- Voice barge-in: since issue 23, what AEC3 lets through while the speaker sounds is
  handed on only when the double-talk rule's linear canceller
  (``appliance.audio.nearend.DoubleTalk``) has converged and proved itself on the current
  echo path (``DoubleTalk.proved``);
  a reply long enough in which it never did turns voice barge-in off until one in which
  it does (``voice_barge_in``), and the canceller logs both changes.

Imports: the standard library only.
"""

from __future__ import annotations

IDLE_AFTER_S = 1.0  # with only AEC on: bypass once the speaker has been silent this long
# Echo coupling: AEC3's suppressor also removes the start of the user's voice while the
# reference plays, even when the microphone hears none of the speaker, which delays
# barge-in by up to a second. When the microphone's level while the speaker plays stays
# within TRUST_DB of its own floor (the echo, if any, is lost in the room noise), the raw
# microphone goes to the VAD instead. That needs the echo at or below the noise; the echo
# guard alone had no self-interruption with echo up to 6 dB above -60 dBFS noise (12 in
# 5 min at 10 dB above), so the rule keeps >= 6 dB of margin (bench.aec prints it).
TRUST_DB = 3.0
LOUD_DBFS = -45.0  # a reference frame this loud counts as "the speaker plays"
# A sound server's idle source is digital silence: a floor of -120 dBFS made "15 dB over the
# floor" (the double-talk rule) true of the faintest sound, and "dB over the floor" of the
# coupling rule meaningless. Frames below SILENT_DBFS are no floor, and none is taken below
# FLOOR_MIN_DBFS (a real microphone's self-noise is far above it).
SILENT_DBFS = -100.0
FLOOR_MIN_DBFS = -90.0
FLOOR_PERCENTILE = 10  # the floor: this percentile of every frame's level
# The coupling rule judges the microphone RUN_SETTLE_S into each playback run (the echo
# path's delay and the sound server's start-up, during which the reference is loud and the
# microphone still hears nothing), and by the 75th percentile of its level over loud frames,
# not the median: a reference misaligned by a few tens of ms against speech puts many loud
# frames on the echo's pauses. Through a PulseAudio loop with a digitally silent floor the
# median made it trust the raw microphone with the speaker clearly audible (issue 23: "0 dB
# over its floor") and the reply was cut.
RUN_SETTLE_S = 0.3
ECHO_PERCENTILE = 75
LEVEL_FRAMES = 1000  # levels kept: the last 10 s of frames...
LOUD_FRAMES = 300  # ...and of frames with the speaker loud (3 s of them)
LOUD_MIN = 50  # no decision before the speaker was loud for 0.5 s
DECIDE_EVERY = 50  # frames between two decisions (0.5 s)
# Bypassed, the levels of one listening block in this many: the floor is a percentile of
# the room's level, which a quarter of its frames give as well, at a quarter of the cost.
IDLE_LEVEL_EVERY = 4
# Residual echo: a frame that the canceller took more than this far below what the
# microphone heard, while the speaker plays, is what is left of the echo (bursts of it pass
# AEC3 on loud, clipped syllables), not the user, whose voice keeps more of its level: it is
# handed on as silence. bench.aec: self-interruptions in 10 min 1 -> 0 (80 ms room),
# 4 -> 1 and 6 -> 1 (150 and 40 ms rooms, other seeds); barge-in p50 200 -> 240 ms
# (25 dB: 270 ms; 31 dB misses the burst the rule is for).
RESIDUAL_DB = 28.0
# While AEC3 first converges (its first SETTLE_FRAMES frames with the speaker loud, about
# 3.5 s of the first reply), it takes as little as 4-25 dB off a loud syllable that follows
# a pause: through the real echo loop the first reply of a new daemon was cut by its own
# echo about 1.2 s in, 3 of 10 times (1 of 10 with a 10 dB residual rule then). Until then
# nothing it lets through while the speaker sounds is handed on: the first seconds of the
# first reply cannot be interrupted (unless the coupling rule finds no echo to cancel).
SETTLE_FRAMES = 300
# Since issue 23, what AEC3 lets through while the speaker sounds is handed on only when
# the double-talk rule's linear canceller has converged and proved itself on the current echo
# path (``DoubleTalk.proved``, see nearend._PROVE_FRAMES); until then the voice cannot
# interrupt the reply. Proved without having converged was not enough: through the real
# loop (30 ms, rate-adapting, where the MDF takes only 4-8 dB off the echo) AEC3's output
# was handed on 3.7 s into a second reply and its leaked echo cut the reply (1 run in 10). A reply with at
# least UNSAFE_FRAMES loud frames (3 s) in which it never did is logged once (and the
# return, once), so a microphone that hears its speaker too loud or too distorted to
# cancel says so instead of cutting its replies.
UNSAFE_FRAMES = 300
# The echo outlasts the reference: after a playback run stops, the room (and the sound
# server's own buffers, which ALSA's delay does not count) still carries it. Where the
# linear canceller had proved itself on the path, AEC3 knows the path and cancels that
# tail; where it had not, AEC3 cannot either, and the tail went on unprocessed as soon as
# the reference fell silent: through the real loop under load (its latency grown to about
# 350 ms) a reply's last syllable came back as a turn of its own. So for TAIL_S after such
# a run, nothing is handed on (the user's first words then, if any, are lost with it).
TAIL_S = 0.5


def idle(always: bool, last_at: float, last_far: float) -> bool:
    """Whether the canceller is bypassed: only echo cancellation is on (not ``always``)
    and the last frame (captured at ``last_at``) came more than ``IDLE_AFTER_S`` after the
    reference last sounded (``last_far``)."""
    return not always and last_at - last_far > IDLE_AFTER_S


def loud(reference_db: float) -> bool:
    """Whether a sounding reference frame counts as the speaker playing loud."""
    return reference_db >= LOUD_DBFS


def settled(at: float, run_at: float) -> bool:
    """Whether a frame captured at ``at`` is far enough into the playback run first heard at
    ``run_at`` for the coupling rule to judge it (``RUN_SETTLE_S``)."""
    return at - run_at >= RUN_SETTLE_S


def decide_now(n_level: int, sounding: bool, floor_stale: bool) -> bool:
    """Whether the coupling rule decides after the ``n_level``-th level: every
    ``DECIDE_EVERY`` frames, and at the first frame that sounds after levels came in
    bypassed (no decision is taken while nothing plays)."""
    return n_level % DECIDE_EVERY == 0 or (sounding and floor_stale)


def floor_db(percentile_db: float | None) -> float:
    """The microphone's floor from the ``FLOOR_PERCENTILE`` of its levels above
    ``SILENT_DBFS`` (None: there were none), never below ``FLOOR_MIN_DBFS``."""
    return max(FLOOR_MIN_DBFS if percentile_db is None else percentile_db, FLOOR_MIN_DBFS)


def trusted(echo_db: float, floor: float) -> bool:
    """The coupling rule: the microphone hardly hears its speaker when the
    ``ECHO_PERCENTILE`` of its level over loud frames (``echo_db``) is within ``TRUST_DB``
    of its floor; the raw microphone then goes to the VAD. The user talking only raises
    that level, so a mistake is the safe one (the canceller stays in charge)."""
    return echo_db <= floor + TRUST_DB


def in_tail(at: float, stopped_at: float, proved: bool) -> bool:
    """Whether a frame captured at ``at``, with the speaker silent, is still within the echo
    tail of a playback run that stopped at ``stopped_at`` on a path where the linear
    canceller had not ``proved`` itself: handed on as silence (``TAIL_S``)."""
    return not proved and at - stopped_at < TAIL_S


def converging(n_loud: int) -> bool:
    """AEC3 is still converging after ``n_loud`` frames with the speaker loud: nothing it
    lets through while the speaker sounds is handed on (``SETTLE_FRAMES``)."""
    return n_loud < SETTLE_FRAMES


def residual(out_db: float, mic_db: float) -> bool:
    """A frame the canceller took to ``out_db`` from the microphone's ``mic_db`` while the
    speaker sounds is residual echo (handed on as silence)."""
    return out_db < mic_db - RESIDUAL_DB


def voice_barge_in(loud_frames: int, proved: bool, barge_in: bool) -> bool:
    """Whether the user's voice may interrupt replies after a playback run with
    ``loud_frames`` loud frames in which the linear canceller did (``proved``) or did not
    prove itself, ``barge_in`` being the answer before it: a run shorter than
    ``UNSAFE_FRAMES`` changes nothing."""
    if loud_frames < UNSAFE_FRAMES:
        return barge_in
    return proved
