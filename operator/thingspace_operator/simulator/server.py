"""The simulator as an aiohttp app, on a local port (tests) or as a process (the CLI)."""

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import api, control
from .delivery import DELIVERIES, Deliveries
from .state import STATE, SimulatorConfig, SimulatorState

log = logging.getLogger(__name__)


def create_app(
    config: SimulatorConfig | None = None, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    app = web.Application()
    state = SimulatorState(config or SimulatorConfig(), clock)
    app[STATE] = state
    app[DELIVERIES] = deliveries = Deliveries(state)
    app.cleanup_ctx.append(deliveries.context)
    app.router.add_routes(api.ROUTES)
    app.router.add_routes(control.ROUTES)
    return app


class SimulatorServer:
    """The simulator on a local port, as an async context manager (tests and the demo)."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = create_app(config, clock)
        self._host, self._port = host, port
        self._runner = web.AppRunner(self.app, access_log=None)
        self.url = ""

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app[STATE]
        return state

    @property
    def deliveries(self) -> Deliveries:
        deliveries: Deliveries = self.app[DELIVERIES]
        return deliveries

    async def __aenter__(self) -> "SimulatorServer":
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


def run_simulator(
    host: str, port: int, config: SimulatorConfig, listener: socket.socket | None = None
) -> None:
    """Serve on ``listener`` when given (already bound to ``host:port``), else bind."""
    print(f"thingspace-sim listening on http://{host}:{port}", flush=True)
    where: dict[str, Any] = {"sock": listener} if listener else {"host": host, "port": port}
    web.run_app(create_app(config), print=None, access_log=log, **where)
