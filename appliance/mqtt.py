"""Home Assistant through MQTT (placeholder until the bridge lands)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.home import Home
    from appliance.settings import Config


async def run_bridge(config: Config, home: Home) -> None:
    await asyncio.Event().wait()
