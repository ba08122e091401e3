"""The labelled-Secret watch over real HTTP against a scripted API server: relists on 410
Gone, reports what vanished meanwhile, resumes from bookmarks, survives huge lines and
refusals, and never asks for a Secret without the label selector."""

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import kopf
import pytest

from thingspace_operator.config import OperatorConfig
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.secretwatch import (
    CREDENTIALS_SELECTOR,
    LabelledSecretWatch,
    SecretEvent,
)

BIG = base64.b64encode(b"k" * 300_000).decode()  # one watch line far over aiohttp's limit


def secret(name: str, version: int, value: str = "djE=") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "iot", "name": name, "resourceVersion": str(version)},
        "data": {"password": value},
    }


class ScriptedApiServer:
    """Serves the lists and watch streams it is given, in order, and records requests."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.requests: list[dict[str, str]] = []
        self.closing = asyncio.Event()

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        self.requests.append(dict(request.query))
        script = (self.watches if request.query.get("watch") else self.lists).pop(0)
        if isinstance(script, int):
            return aiohttp.web.Response(status=script)
        if not request.query.get("watch"):
            return aiohttp.web.json_response(script)
        response = aiohttp.web.StreamResponse()
        await response.prepare(request)
        for event in script:
            await response.write(json.dumps(event).encode() + b"\n")
        if not self.watches:  # the last stream stays open, like a quiet watch
            await self.closing.wait()
        return response


@pytest.fixture
async def api() -> AsyncIterator[tuple[ScriptedApiServer, str]]:
    server = ScriptedApiServer(
        lists=[
            403,  # RBAC not yet in place: retried
            {"metadata": {"resourceVersion": "10"}, "items": [secret("a", 1), secret("b", 2)]},
            {"metadata": {"resourceVersion": "20"}, "items": [secret("a", 11, BIG)]},
        ],
        watches=[
            [
                {"type": "MODIFIED", "object": secret("a", 11, BIG)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            ],
            [{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}],
            [{"type": "ADDED", "object": secret("c", 21)}],
        ],
    )
    async with serving(server) as url:
        yield server, url


def connection_to(url: str) -> KubeConnection:
    return KubeConnection(kopf.ConnectionInfo(server=url))


@contextlib.asynccontextmanager
async def serving(
    server: ScriptedApiServer, routes: dict[str, ScriptedApiServer] | None = None
) -> AsyncIterator[str]:
    """The scripted server (or one per path, ``routes``) on a free loopback port; its URL."""
    app = aiohttp.web.Application()
    for path, served in (routes or {"/api/v1/secrets": server}).items():
        app.router.add_get(path, served.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        for served in (routes or {"": server}).values():
            served.closing.set()
        await runner.cleanup()


async def test_watch_relists_on_gone_and_reports_what_vanished(
    api: tuple[ScriptedApiServer, str],
) -> None:
    server, url = api
    events: list[SecretEvent] = []

    async def listener(event: SecretEvent) -> None:
        events.append(event)

    watch = LabelledSecretWatch(connection_to(url), listener, retry_max_seconds=0.05)
    watch.start()
    try:
        async with asyncio.timeout(10):
            while not any(e.name == "c" for e in events):
                await asyncio.sleep(0.02)
    finally:
        await watch.stop()

    seen = [(e.name, e.version, e.data is not None, e.initial) for e in events]
    assert seen == [
        ("a", "1", True, True),
        ("b", "2", True, True),
        ("a", "11", True, False),  # the huge line arrived whole
        ("b", "", False, False),  # deleted while the watch was gone: found by the relist
        ("c", "21", True, False),
    ]
    assert events[2].data == {"password": BIG}
    assert all(q["labelSelector"] == CREDENTIALS_SELECTOR for q in server.requests)
    watch_versions = [q["resourceVersion"] for q in server.requests if q.get("watch")]
    assert watch_versions == ["10", "12", "20"]  # resumed from the bookmark, then relisted


def test_secret_watch_setting_parses_booleans() -> None:
    assert OperatorConfig.from_env({"THINGSPACE_SECRET_WATCH": "false"}).secret_watch is False
    assert OperatorConfig.from_env({"THINGSPACE_SECRET_WATCH": "True"}).secret_watch is True
    with pytest.raises(ValueError, match="THINGSPACE_SECRET_WATCH"):
        OperatorConfig.from_env({"THINGSPACE_SECRET_WATCH": "maybe"})


async def test_a_failing_listener_neither_ends_the_watch_nor_loses_the_event() -> None:
    """The listener failing (the API server refusing a reconcile request, say) is a gap:
    the watch lists again, delivers the event again, and reports the gap."""
    server = ScriptedApiServer(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [secret("a", 1)]},
            {"metadata": {"resourceVersion": "20"}, "items": [secret("a", 11)]},
        ],
        watches=[[{"type": "MODIFIED", "object": secret("a", 11)}], []],
    )
    seen: list[str] = []
    gaps: list[bool] = []

    async def listener(event: SecretEvent) -> None:
        seen.append(event.version)
        if seen == ["1", "11"]:
            raise RuntimeError("the API server said 503")

    async with serving(server) as url:
        connection = connection_to(url)
        watch = LabelledSecretWatch(connection, listener, retry_max_seconds=0.05)
        watch.on_gap = lambda: gaps.append(True)
        watch.start()
        try:
            async with asyncio.timeout(10):
                while len(seen) < 3:
                    await asyncio.sleep(0.02)
            assert watch.tracks(("iot", "a"))
        finally:
            await watch.stop()
    assert seen == ["1", "11", "11"]
    assert gaps == [True]


async def test_a_watch_gone_again_and_again_backs_off_and_reports_a_gap() -> None:
    """One 410 relists at once, 410 after 410 is a fault to back off from; each is a gap
    (events may have been missed): the watch vouches for nothing until it has relisted."""
    expired = {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}
    listing = {"metadata": {"resourceVersion": "10"}, "items": [secret("a", 1)]}
    server = ScriptedApiServer(lists=[listing] * 4, watches=[[expired]] * 3 + [[]])
    gaps: list[float] = []

    async def listener(event: SecretEvent) -> None:
        pass

    async with serving(server) as url:
        watch = LabelledSecretWatch(connection_to(url), listener, retry_max_seconds=0.3)
        watch.on_gap = lambda: gaps.append(asyncio.get_running_loop().time())
        watch.start()
        try:
            async with asyncio.timeout(10):
                while server.lists:
                    await asyncio.sleep(0.02)
        finally:
            await watch.stop()
    assert len(gaps) == 3  # each 410, the first two included
