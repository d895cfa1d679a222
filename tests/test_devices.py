"""Device listing and checking against the session's real ALSA configuration."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from appliance.audio.devices import CANDIDATE_RATES, DeviceInfo, check_device, list_devices

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
