"""Device listing and checking against the session's real ALSA configuration."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from appliance.audio.devices import (
    CANDIDATE_RATES,
    DeviceInfo,
    check_device,
    list_devices,
    quiet_alsa_lib,
)

if TYPE_CHECKING:
    from alsa_env import AlsaEnv, PulseEnv

pytest_plugins = ["alsa_env"]  # the alsa_env and pulse_env fixtures


def find(devices: list[DeviceInfo], name: str, direction: str) -> DeviceInfo:
    for device in devices:
        if device.name == name and device.direction == direction:
            return device
    raise AssertionError(f"{direction} {name!r} not listed: {[d.name for d in devices]}")


def test_lists_every_pcm_and_what_it_takes_without_hanging(alsa_env: AlsaEnv) -> None:
    alsa_env.remove(alsa_env.absent_file)
    t0 = time.monotonic()
    devices = list_devices()
    assert time.monotonic() - t0 < 5
    mic = find(devices, "mic", "capture")
    assert mic.error is None and mic.usable
    assert mic.rates == CANDIDATE_RATES
    assert {1, 2} <= set(mic.channels)
    spk = find(devices, "spk", "playback")
    assert spk.usable
    absent = find(devices, "absent", "capture")
    assert absent.error is not None and "No such file" in absent.error
    assert not absent.usable and absent.rates == ()


def test_check_device_accepts_exactly_what_was_asked(alsa_env: AlsaEnv) -> None:
    assert check_device("mic", "capture", 16000, 1) is None
    assert check_device("spk", "playback", 48000, 2) is None
    problem = check_device("nosuchpcm", "playback", 24000, 1)
    assert problem is not None and "'nosuchpcm'" in problem and "cannot open" in problem


def test_check_device_names_the_rate_and_channels_the_device_refused(pulse_env: PulseEnv) -> None:
    # PulseAudio's ALSA plugin tops out at 384 kHz and 32 channels; pyalsaaudio would
    # quietly settle for those.
    rate_problem = check_device("pmic", "capture", 500000, 1)
    assert rate_problem is not None and "asked 500000 Hz, got 384000 Hz" in rate_problem
    channel_problem = check_device("pspk", "playback", 48000, 64)
    assert channel_problem is not None and "asked 64 channels" in channel_problem
    assert check_device("pspk", "playback", 48000, 2) is None


FORGET_PROBE = """
import pathlib, sys
import alsaaudio
from appliance.audio.devices import forget_alsa_config, quiet_alsa_lib
quiet_alsa_lib()
extra = pathlib.Path(sys.argv[1])

def opens():
    try:
        alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK, device="late").close()
    except alsaaudio.ALSAAudioError as exc:
        return str(exc)
    return "opens"

print(opens())
extra.write_text('pcm.late { type file; slave.pcm "null"; file "%s"; format "raw" }' % (extra.parent / "late.raw"))
print(opens())  # alsa-lib still has its first reading of the configuration
print(forget_alsa_config())
print(opens())
"""


def test_a_reload_sees_pcms_added_to_a_loaded_file_and_alsa_lib_prints_nothing(
    tmp_path: Path,
) -> None:
    """/etc/asound.conf is loaded by alsa.conf's hooks, and alsa-lib does not notice when
    such a file changes: "Unknown PCM" until the cached configuration is dropped. Its
    error lines ("ALSA lib pcm.c:...") go to the log, not to stderr (the journal)."""
    extra = tmp_path / "extra.conf"  # the role of /etc/asound.conf
    asoundrc = tmp_path / "asoundrc"
    asoundrc.write_text(f'@hooks [ {{ func load files [ "{extra}" ] errors false }} ]\n')
    env = {k: v for k, v in os.environ.items() if k != "ALSA_CONFIG_PATH"}
    result = subprocess.run(
        [sys.executable, "-c", FORGET_PROBE, str(extra)],
        env={**env, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{asoundrc}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.splitlines() == [
        "No such file or directory [late]",
        "No such file or directory [late]",
        "True",
        "opens",
    ], result.stdout + result.stderr
    assert result.stderr == ""


def test_alsa_lib_errors_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    import alsaaudio

    assert quiet_alsa_lib()
    with caplog.at_level(logging.DEBUG, logger="appliance.audio.devices"), pytest.raises(
        alsaaudio.ALSAAudioError
    ):
        alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK, device="nosuchpcm")
    assert any(
        "alsa-lib: Unknown PCM" in r.getMessage() and "pcm.c:" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
