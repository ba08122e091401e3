"""The elector's requests against a scripted Lease endpoint: the paths a healthy API server
rarely takes (404 on a write, the Lease deleted under a leader, a conflict on release, a
standby stopped in the middle of taking the Lease). The healthy paths run against a real
kube-apiserver in tests/e2e/test_leader_election.py."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from aiohttp import web

from tests.conftest import eventually
from thingspace_operator.kube import rejections
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.leader import LeaderElector, LeaseConfig
from thingspace_operator.thingspace.client import ClientPool
from thingspace_operator.thingspace.errors import AuthenticationFailed
from thingspace_operator.thingspace.models import AppCredentials, CredentialsSource

PATH = "/apis/coordination.k8s.io/v1/namespaces/ops/leases"


class LeaseServer:
    """One Lease with resourceVersions, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.namespace_exists = True
        self.conflicts_to_inject = 0
        self.refused_creates = 0
        self.closing = False
        self.writes: list[str] = []
        self.changed = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get(PATH, self.watch),
                web.post(PATH, self.create),
                web.get(PATH + "/{name}", self.read),
                web.put(PATH + "/{name}", self.update),
            ]
        )
        return app

    async def read(self, _: web.Request) -> web.Response:
        if self.lease is None:
            return web.json_response({"reason": "NotFound"}, status=404)
        return web.json_response(self.lease)

    async def create(self, request: web.Request) -> web.Response:
        if not self.namespace_exists:
            self.refused_creates += 1
            return web.json_response({"reason": "NotFound"}, status=404)
        if self.lease is not None:
            return web.json_response({"reason": "AlreadyExists"}, status=409)
        return await self._store(await request.json(), "create")

    async def update(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.lease is None:
            return web.json_response({"reason": "NotFound"}, status=404)
        if self.conflicts_to_inject or body["metadata"]["resourceVersion"] != str(self.version):
            self.conflicts_to_inject = max(0, self.conflicts_to_inject - 1)
            return web.json_response({"reason": "Conflict"}, status=409)
        return await self._store(body, "update")

    async def _store(self, body: dict[str, Any], verb: str) -> web.Response:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        self.writes.append(f"{verb} {body['spec'].get('holderIdentity')!r}")
        async with self.changed:
            self.changed.notify_all()
        return web.json_response(body)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while not self.closing:
            async with self.changed:
                await self.changed.wait()
            await response.write(
                json.dumps({"type": "MODIFIED", "object": self.lease}).encode() + b"\n"
            )

    def holder(self) -> str | None:
        return self.lease["spec"].get("holderIdentity") if self.lease else None


@pytest.fixture
async def server() -> AsyncIterator[tuple[LeaseServer, str]]:
    leases = LeaseServer()
    runner = web.AppRunner(leases.app(), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield leases, f"http://127.0.0.1:{port}"
    leases.closing = True
    async with leases.changed:
        leases.changed.notify_all()
    await runner.shutdown()
    await runner.cleanup()


def elector(
    url: str, identity: str, lease: float = 1.5, renew: float = 1.0, retry: float = 0.2
) -> LeaderElector:
    config = LeaseConfig("ops", "tso", identity, lease, renew, retry_period=retry)
    return LeaderElector(KubeConnection(kopf.ConnectionInfo(server=url)), config)


async def test_one_candidate_leads_and_a_release_hands_over_at_once(
    server: tuple[LeaseServer, str],
) -> None:
    leases, url = server
    first, second = elector(url, "a", lease=30, renew=20), elector(url, "b", lease=30, renew=20)
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await eventually(lambda: second.leader == "a", what="the standby sees the leader")
    assert not waiting.done()
    await first.release()
    # The lease duration is 30 s: only the release lets the standby in this soon.
    await asyncio.wait_for(waiting, 5)
    assert leases.holder() == "b"
    assert leases.lease is not None
    assert leases.lease["spec"]["leaseTransitions"] == 1  # a created it (0); b took it over
    await first.close()
    await second.close()


async def test_a_write_that_finds_nothing_is_never_taken_for_leadership(
    server: tuple[LeaseServer, str],
) -> None:
    leases, url = server
    leases.namespace_exists = False  # e.g. a mistyped --leader-election-namespace
    candidate = elector(url, "a")
    attempt = asyncio.create_task(candidate.acquire())
    await eventually(lambda: leases.refused_creates >= 2, 5, "attempts refused")
    assert not attempt.done()
    assert not candidate.leading
    attempt.cancel()
    await candidate.close()


async def test_a_leader_whose_lease_vanishes_has_lost_it(server: tuple[LeaseServer, str]) -> None:
    leases, url = server
    leader = elector(url, "a")
    await leader.acquire()
    leases.lease = None  # deleted behind its back: someone else may create and take it
    await asyncio.wait_for(leader.keep(), 5)
    assert not leader.leading
    assert leases.writes == ["create 'a'"]  # it did not recreate the Lease
    await leader.close()


async def test_release_after_a_renewal_it_did_not_see_retries_once(
    server: tuple[LeaseServer, str],
) -> None:
    leases, url = server
    leader = elector(url, "a", lease=30, renew=20)
    await leader.acquire()
    leases.conflicts_to_inject = 1
    await leader.release()
    assert leases.holder() == ""
    assert leases.writes[-1] == "update ''"
    await leader.close()


async def test_a_standby_stopped_after_taking_the_lease_gives_it_back(
    server: tuple[LeaseServer, str],
) -> None:
    leases, url = server
    candidate = elector(url, "a")
    await candidate.acquire()
    candidate.leading = False  # as if stopped before it learned that its write landed
    await candidate.release()
    assert leases.holder() == ""
    await candidate.close()


async def test_renewal_stops_when_asked_after_the_attempt_in_progress(
    server: tuple[LeaseServer, str],
) -> None:
    leases, url = server
    leader = elector(url, "a", lease=30, renew=20)
    await leader.acquire()
    keeping = asyncio.create_task(leader.keep())
    await eventually(lambda: len(leases.writes) >= 2, 5, "a renewal")
    leader.stop_renewing()
    await asyncio.wait_for(keeping, 5)
    assert leader.leading
    await leader.release()
    assert leases.holder() == ""
    await leader.close()


async def test_rejected_credentials_pass_to_the_next_leader_on_the_lease(
    server: tuple[LeaseServer, str],
) -> None:
    """A rejection is written at once (not at the next renewal, 10 s away here), survives
    renewals and the release, and the next holder refuses those values without a call."""
    leases, url = server
    first = elector(url, "a", lease=30, renew=20, retry=10)
    await first.acquire()
    leases.lease["metadata"]["annotations"] = {"team.example/owner": "platform"}  # kept
    pool = ClientPool("http://127.0.0.1:9", timeout_seconds=1.0)  # never reached
    rejections.carry_over(first, pool.rejected)
    keeping = asyncio.create_task(first.keep())
    failure = AuthenticationFailed("login", "ThingSpace rejected the login")
    pool.rejected.record(failure, [CredentialsSource("team/creds", "41")], "user", "secret-pw")
    await eventually(lambda: rejections.ANNOTATION in annotations(leases), 5, "written at once")
    assert json.loads(annotations(leases)[rejections.ANNOTATION]) == {
        "team/creds": {"resourceVersion": "41", "stage": "login"}
    }
    first.stop_renewing()
    await keeping
    await first.release()
    assert "secret-pw" not in json.dumps(leases.lease)
    assert annotations(leases)["team.example/owner"] == "platform"

    second = elector(url, "b", lease=30, renew=20, retry=10)
    await second.acquire()
    fresh = ClientPool("http://127.0.0.1:9", timeout_seconds=1.0)
    rejections.carry_over(second, fresh.rejected)
    wrong = AppCredentials(
        "app", "app-secret", "user", "secret-pw", CredentialsSource("team/creds", "41")
    )
    with pytest.raises(AuthenticationFailed, match="Lease ops/tso"):
        await fresh.client_for(wrong).list_callbacks("0000123456-00001")  # no call: port 9
    fresh.rejected.accepted([CredentialsSource("team/creds", "42")])  # the fixed Secret
    keeping = asyncio.create_task(second.keep())
    await eventually(lambda: rejections.ANNOTATION not in annotations(leases), 5, "cleared")
    second.stop_renewing()
    await keeping
    for pools in (pool, fresh):
        await pools.close()
    await first.close()
    await second.close()


def annotations(leases: LeaseServer) -> dict[str, str]:
    assert leases.lease is not None
    return dict(leases.lease["metadata"].get("annotations") or {})


@pytest.mark.parametrize(
    "value",
    ["not json", '["a list"]', '{"ns/s": {"resourceVersion": 7, "stage": "login"}}',
     '{"ns/s": {"resourceVersion": "7", "stage": "other"}}'],
)  # fmt: skip
def test_an_unreadable_record_is_ignored_not_fatal(value: str) -> None:
    assert rejections.parse(value, "ops/tso") == {}
