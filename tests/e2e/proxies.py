"""Proxies that stand between one operator process and the rest of the world, for the
leader-election tests and the handover benchmark: one records every ThingSpace call the
process makes (so a standby's silence and a fenced leader's last call are facts, not
guesses); one carries its API server traffic and can be cut, as a network partition cuts
it. Both run on an event loop in a thread of the test process.
"""

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from tests.e2e.cluster import OperatorProcess
from tests.e2e.controlplane import free_port

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the proxy received it
    method: str
    path: str
    service: str  # a register call's serviceName ("" for others)


class ReverseProxy:
    """An HTTP reverse proxy on a free local port to ``upstream``. It relays every call as
    it is; a subclass overrides ``_forward`` to see or change calls, relaying with
    ``relay``."""

    def __init__(self, loop: LoopThread, upstream: str, timeout: float | None = None) -> None:
        self._loop, self._upstream = loop, upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        loop.run(self._start())

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        return (await self.relay(request, await request.read())).response()

    async def relay(self, request: web.Request, body: bytes) -> "Relayed":
        """Send the call upstream; its answer, not yet returned to the caller."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return Relayed(answer.status, payload, kept)

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        self._loop.run(stop())


@dataclass(frozen=True)
class Relayed:
    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


class RecordingProxy(ReverseProxy):
    """A reverse proxy to the simulator that records every call passing through."""

    def __init__(self, loop: LoopThread, upstream: str) -> None:
        self.calls: list[Call] = []
        super().__init__(loop, upstream)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service = ""
        if request.method == "POST" and "/callbacks/" in request.path:
            with contextlib.suppress(ValueError):
                service = str(json.loads(body).get("name", ""))
        self.calls.append(Call(time.monotonic(), request.method, request.path, service))
        return (await self.relay(request, body)).response()

    def registers(self) -> list[Call]:
        return [call for call in self.calls if call.service]


HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class CuttableTcpProxy:
    """A byte pipe to ``host:port``. ``cut()`` is a partition: bytes stop flowing both
    ways and new connections hang, with nothing closed (as when packets are dropped)."""

    def __init__(self, loop: LoopThread, host: str, port: int) -> None:
        self._loop, self._target = loop, (host, port)
        self.port = free_port()
        self.cut_at: float | None = None
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        loop.run(self._start())

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()  # a cut holds the bytes for ever
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> None:
        self.cut_at = time.monotonic()
        self._loop.loop.call_soon_threadsafe(self._open.clear)

    def close(self) -> None:
        async def stop() -> None:
            self._open.set()
            if self._server is not None:
                self._server.close()

        self._loop.run(stop())


@dataclass
class Candidate:
    """One operator process of a leader election and the record of its ThingSpace calls."""

    process: OperatorProcess
    calls: RecordingProxy

    @property
    def identity(self) -> str:
        return self.process.identity

    def leading(self) -> bool:
        return self.process.readiness().get("leading") is True

    def quiet(self, seconds: float) -> bool:
        """No ThingSpace call for ``seconds`` (or none at all)."""
        calls = self.calls.calls
        return not calls or time.monotonic() - calls[-1].at > seconds
