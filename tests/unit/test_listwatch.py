"""The list-then-watch the inventory is fed by, over real HTTP against a scripted API
server: the watch continues from the listing (so a deletion in between is seen), pages
are followed, a resource not served lists as empty, and the watch counts as listed only
once every scope is. (Relisting on 410 Gone and gaps: tests/unit/test_secretwatch.py.)"""

import asyncio
from typing import Any

from tests.conftest import eventually
from tests.unit.test_secretwatch import ScriptedApiServer, connection_to, serving
from thingspace_operator.kube.listwatch import ListWatch, Scope, WatchEvent

PATH = "/apis/thingspace.io/v1/thingspacecallbacks"


def obj(name: str, version: int, namespace: str = "iot") -> dict[str, Any]:
    meta = {"namespace": namespace, "name": name, "resourceVersion": str(version)}
    return {"metadata": meta, "spec": {"serviceName": "QoS"}}


def recorder() -> tuple[list[tuple[str, str, bool]], Any]:
    seen: list[tuple[str, str, bool]] = []

    async def listener(event: WatchEvent) -> None:
        seen.append((event.type, event.key[1], event.initial))

    return seen, listener


def path(scope: Scope) -> str:
    return f"/apis/thingspace.io/v1/namespaces/{scope}/thingspacecallbacks" if scope else PATH


async def test_the_watch_continues_from_the_listing_so_a_deletion_in_between_is_seen() -> None:
    server = ScriptedApiServer(
        lists=[
            {"metadata": {"continue": "page-2"}, "items": [obj("a", 1)]},
            {"metadata": {"resourceVersion": "10"}, "items": [obj("b", 2)]},
        ],
        watches=[
            [
                {"type": "DELETED", "object": obj("b", 11)},
                {"type": "ADDED", "object": obj("c", 12)},
            ]
        ],
    )
    seen, listener = recorder()
    async with serving(server, {PATH: server}) as url:
        watch = ListWatch(connection_to(url), path, listener, what="callbacks", page_size=1)
        watch.start()
        try:
            await asyncio.wait_for(watch.wait_listed(), 10)
            assert watch.healthy
            await eventually(lambda: len(seen) == 4, what="the watch's two events")
            assert not watch.tracks(("iot", "b"))
            assert watch.tracks(("iot", "c"))
        finally:
            await watch.stop()
    assert seen == [
        ("ADDED", "a", True),
        ("ADDED", "b", True),
        ("DELETED", "b", False),
        ("ADDED", "c", False),
    ]
    listings = [q for q in server.requests if not q.get("watch")]
    assert [q.get("continue") for q in listings] == [None, "page-2"]
    assert all(q["limit"] == "1" for q in listings)
    assert [q["resourceVersion"] for q in server.requests if q.get("watch")] == ["10"]


async def test_a_resource_that_may_be_absent_lists_as_empty_and_is_looked_at_again() -> None:
    """A CRD not installed (yet): listed at once, as empty; its objects once it is."""
    server = ScriptedApiServer(
        lists=[404, {"metadata": {"resourceVersion": "5"}, "items": [obj("a", 1)]}],
        watches=[[]],
    )
    seen, listener = recorder()
    async with serving(server, {PATH: server}) as url:
        connection = connection_to(url)
        watch = ListWatch(
            connection, path, listener, what="accounts", retry_max_seconds=0.05, may_be_absent=True
        )
        watch.start()
        try:
            await asyncio.wait_for(watch.wait_listed(), 10)
            await eventually(lambda: seen, what="the object once the resource is served")
        finally:
            await watch.stop()
    assert seen == [("ADDED", "a", False)]  # new since the (empty) first listing


async def test_a_404_of_a_resource_that_must_be_there_is_a_failure_and_keeps_what_is_known() -> (
    None
):
    listing = {"metadata": {"resourceVersion": "5"}, "items": [obj("a", 1)]}
    server = ScriptedApiServer(lists=[listing, 404, listing], watches=[500, []])
    seen, listener = recorder()
    async with serving(server, {PATH: server}) as url:
        connection = connection_to(url)
        watch = ListWatch(connection, path, listener, what="callbacks", retry_max_seconds=0.05)
        watch.start()
        try:
            await eventually(lambda: not server.lists, what="listed again after the 404")
            await eventually(lambda: watch.healthy, what="healthy once listed")
        finally:
            await watch.stop()
    assert seen == [("ADDED", "a", True)]  # no deletion made up from the 404


async def test_what_a_failed_listing_delivered_is_known_so_its_deletion_is_seen() -> None:
    """A listing that fails at page 2 has already delivered page 1: an object of page 1
    deleted before the next listing must be reported gone, not kept for good."""
    server = ScriptedApiServer(
        lists=[
            {"metadata": {"continue": "page-2"}, "items": [obj("a", 1)]},
            500,
            {"metadata": {"resourceVersion": "10"}, "items": []},
        ],
        watches=[[]],
    )
    seen, listener = recorder()
    async with serving(server, {PATH: server}) as url:
        connection = connection_to(url)
        watch = ListWatch(
            connection, path, listener, what="callbacks", page_size=1, retry_max_seconds=0.05
        )
        watch.start()
        try:
            await asyncio.wait_for(watch.wait_listed(), 10)
        finally:
            await watch.stop()
    assert [(kind, name) for kind, name, _ in seen] == [("ADDED", "a"), ("DELETED", "a")]


async def test_the_watch_counts_as_listed_once_every_scope_is() -> None:
    """Namespace by namespace: one namespace refusing at first holds back completeness
    (and health) until it is listed."""
    listing = {"metadata": {"resourceVersion": "3"}, "items": [obj("a", 1, "team-b")]}
    team_a = ScriptedApiServer(lists=[{"metadata": {"resourceVersion": "3"}}], watches=[[]])
    team_b = ScriptedApiServer(lists=[503, listing], watches=[[]])
    routes = {path("team-a"): team_a, path("team-b"): team_b}
    seen, listener = recorder()
    async with serving(team_a, routes) as url:
        watch = ListWatch(
            connection_to(url),
            path,
            listener,
            ("team-a", "team-b"),
            what="callbacks",
            retry_max_seconds=1.0,  # team-b is listed again a second after its refusal
        )
        watch.start()
        try:
            await eventually(lambda: team_b.requests, what="team-b refused once")
            assert not watch.healthy
            await asyncio.wait_for(watch.wait_listed(), 10)
            assert watch.healthy
            assert seen == [("ADDED", "a", True)]
        finally:
            await watch.stop()
