"""What the pure core needs of the configuration: ``Config`` mapped onto the core's own
settings types, so ``appliance.core`` never imports the config.

``config.py`` reads and checks the TOML; this module only translates what it produced.
Imports ``appliance.settings``, ``appliance.api_shapes`` and ``appliance.core``.
"""

from __future__ import annotations

from appliance.api_shapes import session_object, tool_object
from appliance.core.endpoint import EndpointSettings
from appliance.core.listen import Detector, ListenSettings
from appliance.core.settings import SessionOptions
from appliance.settings import Config, GateSettings


def listen_settings(gate: GateSettings) -> ListenSettings:
    """The capture-side listening policy's settings (``appliance.core.listen``) from ``[gate]``."""
    micro = gate.detector is Detector.MICRO
    return ListenSettings(
        mode=gate.mode,
        detector=gate.detector,
        endpoint=EndpointSettings(
            complete_ms=gate.end_complete_ms,
            incomplete_ms=gate.end_incomplete_ms,
            min_voiced_ms=gate.min_speech_ms,
        ),
        gate_frame_ms=gate.vad_frame_ms,
        frame_ms=10 if micro else gate.vad_frame_ms,
        start_frames=gate.start_frames,
        start_window=gate.start_window,
        preroll_ms=gate.preroll_ms,
        hangover_ms=gate.hangover_ms,
        warmup_ms=gate.warmup_ms,
        aggressiveness=gate.vad_aggressiveness,
        guard_aggressiveness=gate.barge_in_aggressiveness,
        guard_start=gate.barge_in_start,
        wake_listen_s=gate.wake_listen_s,
        follow_up_s=gate.follow_up_s,
        send_wake_word=gate.send_wake_word,
    )


# Upstream chunks. Where the device ends the turn (gate modes "vad", "push_to_talk", "wake")
# the turn ends with a flush and a commit, so the chunk size while the user speaks adds nothing
# to what the user waits for: chunks are as long as the service recommends (60-100 ms), for
# fewer resampler calls, frames and event-loop wake-ups. Where the server's turn detection
# listens to the stream ("always") they stay short: it hears the end of speech a chunk late.
GATED_CHUNK_MS = 100
STREAMED_CHUNK_MS = 40


def upstream_chunk_ms(config: Config) -> int:
    """The upstream chunk length in ms: ``[audio] chunk_ms``, or by the gate mode when it is
    "auto" (the longest multiple of ``period_ms`` up to ``GATED_CHUNK_MS`` in the gated
    modes)."""
    a = config.audio
    if a.chunk_ms is not None:
        return a.chunk_ms
    if config.gate.local_turns:
        return GATED_CHUNK_MS // a.period_ms * a.period_ms
    return STREAMED_CHUNK_MS


def session_settings(config: Config) -> SessionOptions:
    """What the session core needs of ``config`` (the core does not import this module)."""
    local = config.gate.local_turns
    td = config.session.turn_detection or {}
    policy = config.session_policy
    return SessionOptions(
        session=session_object(config.session, turn_detection_null=local),
        tools=tuple(tool_object(tool) for tool in config.tools),
        local_turns=local,
        barge_in=config.gate.barge_in,
        interrupt_response=bool(td.get("interrupt_response", True)),
        create_response=bool(td.get("create_response", True)),
        greeting=policy.greeting,
        fresh_after_idle_s=policy.fresh_after_idle_s,
        max_turns=policy.max_turns,
        response_timeout_s=config.realtime.response_timeout_s,
        renew_after_s=config.realtime.renew_after_s,
    )
