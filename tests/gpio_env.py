"""gpiozero's real ``MockFactory`` for tests: pins with edges and states, no hardware, no Mock().

One pytest fixture. Load this module as a plugin in each test module that needs it:
``pytest_plugins = ["gpio_env"]`` (next to ``alsa_env`` where both are used).

``mock_pins`` -> ``MockFactory``
    Installed as gpiozero's pin factory for the test (PWM-capable pins, so LEDs can pulse),
    and named in ``GPIOZERO_PIN_FACTORY`` / ``GPIOZERO_MOCK_PIN_CLASS`` for code that builds
    its own; ``mock_pins.pin(17)`` is BCM pin 17, to drive (``drive_low``) or read
    (``state``). Reset and the previous factory restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin


@pytest.fixture
def mock_pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockFactory]:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setenv("GPIOZERO_MOCK_PIN_CLASS", "mockpwmpin")
    old = Device.pin_factory
    mock = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = mock
    try:
        yield mock
    finally:
        mock.reset()
        Device.pin_factory = old
