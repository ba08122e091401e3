"""The inventory: the operator's own maps of claims, Secret and account users, accounts,
and the one signal that every object existing at start-up has been seen."""

import asyncio
from typing import Any

import pytest

from tests.conftest import eventually
from thingspace_operator.inventory import ACCOUNT, CALLBACK, Index, Inventory, Listed, fill
from thingspace_operator.kube.claims import Claim
from thingspace_operator.kube.connection import KubeApiError

ACCOUNT_SPEC = {
    "accountName": "0000123456-00001",
    "credentialsSecretRef": {"name": "creds", "namespace": "ops"},
}


def callback(name: str, namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-11-01T00:00:00Z",
        },
        "spec": {"serviceName": "QoS", "url": "https://a", **spec},
    }


def test_an_objects_entries_replace_its_earlier_ones_and_go_with_it() -> None:
    index: Index[str, int] = Index()
    index.put(("ns", "a"), {"x": 1, "y": 2})
    index.put(("ns", "b"), {"x": 3})
    assert sorted(index["x"]) == [1, 3]
    assert list(index["y"]) == [2]
    index.put(("ns", "a"), {"z": 4})
    assert sorted(index) == ["x", "z"]
    assert list(index["x"]) == [3]
    index.drop(("ns", "b"))
    index.drop(("ns", "never-filed"))
    assert dict(index.items()).keys() == {"z"}
    assert index.get("x", ()) == ()


def test_values_are_kept_apart_when_objects_share_a_key_and_come_and_go() -> None:
    index: Index[str, int] = Index()
    for number, name in enumerate(("a", "b", "c")):
        index.put(("ns", name), {"shared": number})
    assert sorted(index["shared"]) == [0, 1, 2]
    index.drop(("ns", "b"))
    assert sorted(index["shared"]) == [0, 2]
    index.drop(("ns", "a"))
    assert list(index["shared"]) == [2]
    index.put(("ns", "a"), {"shared": 5})
    assert sorted(index["shared"]) == [2, 5]
    index.drop(("ns", "c"))
    index.drop(("ns", "a"))
    assert "shared" not in index
    assert len(index) == 0


def test_a_callback_files_its_claim_secrets_and_account() -> None:
    inventory = Inventory()
    inventory.callback_seen(
        callback(
            "qos",
            accountRef={"name": "fleet"},
            credentialsSecretRef={"name": "listener"},
        )
    )
    claim = Claim("2026-11-01T00:00:00Z", "team-a", "qos")
    assert list(inventory.claims[("ThingSpaceAccount/fleet", "QoS")]) == [claim]
    assert list(inventory.account_users["fleet"]) == [("team-a", "qos")]
    assert list(inventory.secret_users[("team-a", "listener")]) == ["qos"]
    # The spec changes: the earlier entries go.
    inventory.callback_seen(callback("qos", accountName="0000123456-00001"))
    assert ("ThingSpaceAccount/fleet", "QoS") not in inventory.claims
    assert "fleet" not in inventory.account_users
    assert ("team-a", "listener") not in inventory.secret_users
    inventory.callback_gone("team-a", "qos")
    assert len(inventory.claims) == 0


def test_an_invalid_account_is_not_filed() -> None:
    inventory = Inventory()
    assert inventory.account_seen("fleet", ACCOUNT_SPEC) is not None
    assert inventory.accounts["fleet"].account_name == "0000123456-00001"
    assert inventory.account_seen("fleet", {"accountName": 7}) is None
    assert "fleet" not in inventory.accounts


def test_complete_once_everything_listed_was_seen_in_any_order() -> None:
    inventory = Inventory()
    inventory.callback_seen(callback("early"))  # seen before the listing answered
    assert not inventory.complete  # nothing is complete before the listing is known
    inventory.expect(
        [(CALLBACK, ("team-a", "early")), (CALLBACK, ("team-a", "late")), (ACCOUNT, ("", "fleet"))]
    )
    assert not inventory.complete
    inventory.account_seen("fleet", ACCOUNT_SPEC)
    inventory.callback_gone("team-a", "late")  # a deletion counts as seen
    assert inventory.complete


def test_an_empty_cluster_is_complete_at_once() -> None:
    inventory = Inventory()
    inventory.expect([])
    assert inventory.complete


class Cluster:
    """What the start-up listing, and each listing after it, sees."""

    def __init__(
        self, listed: list[Listed], failures: int = 0, deleted_after: Listed | None = None
    ) -> None:
        """``deleted_after``: deleted right after the start-up listing."""
        self.listed, self.failures, self.deleted_after = listed, failures, deleted_after
        self.listings = 0

    async def list_all(self) -> list[Listed]:
        if self.failures:
            self.failures -= 1
            raise KubeApiError(403, "Forbidden")
        self.listings += 1
        listed = list(self.listed)
        if self.deleted_after in self.listed:
            self.listed.remove(self.deleted_after)
        return listed


async def test_an_object_deleted_before_kopf_listed_it_is_let_go_after_a_new_listing() -> None:
    inventory = Inventory()
    gone: Listed = (CALLBACK, ("team-a", "deleted-meanwhile"))
    kept: Listed = (CALLBACK, ("team-a", "kept"))
    cluster = Cluster([gone, kept], deleted_after=gone)  # no event will ever show it
    filling = asyncio.create_task(fill(inventory, cluster.list_all, poll=0.01))
    inventory.callback_seen(callback("kept"))
    await asyncio.wait_for(filling, 5)
    assert inventory.complete
    assert cluster.listings == 2


async def test_an_existing_object_not_seen_yet_keeps_it_incomplete() -> None:
    """kopf's watch may lag (the API server is slow): ownership waits for it, and the
    listings meanwhile come ever less often."""
    inventory = Inventory()
    lagging: Listed = (CALLBACK, ("team-a", "lagging"))
    cluster = Cluster([lagging])
    filling = asyncio.create_task(fill(inventory, cluster.list_all, poll=0.01))
    await eventually(lambda: cluster.listings >= 3, what="two listings after the first")
    assert not inventory.complete
    inventory.callback_seen(callback("lagging"))
    await asyncio.wait_for(filling, 5)
    assert inventory.complete


async def test_the_listing_is_retried_when_the_api_server_refuses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def no_wait(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("thingspace_operator.inventory.asyncio.sleep", no_wait)
    inventory = Inventory()
    cluster = Cluster([], failures=3)
    await asyncio.wait_for(fill(inventory, cluster.list_all), 5)
    assert inventory.complete
    assert delays == [1.0, 2.0, 4.0]
    assert "HTTP 403 Forbidden" in caplog.text  # RBAC to fix, said plainly
