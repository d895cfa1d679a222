"""An aiohttp server on loopback: the lifecycle the WebRTC and Voice SDK endpoints share.

``async with Endpoint(...) as sim`` starts it (port 0: any free one) and ``sim.api_url`` is
its base URL; a subclass adds its routes (``_routes``) and closes what it holds before the
server goes (``_close_peers``). Imports aiohttp (server).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from aiohttp import web


class Endpoint(ABC):
    """The base of the simulator's HTTP endpoints on loopback."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the simulator is not started")
        return f"http://{self._host}:{self._runner.addresses[0][1]}"

    @abstractmethod
    def _routes(self, router: web.UrlDispatcher) -> None:
        """Add the endpoint's handlers."""

    async def _close_peers(self) -> None:  # noqa: B027  (a hook: nothing to close by default)
        """Close the endpoint's own connections, before the server itself."""

    async def start(self) -> None:
        app = web.Application()
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def close(self) -> None:
        await self._close_peers()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
