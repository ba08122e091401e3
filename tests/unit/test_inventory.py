"""The inventory: the operator's own maps of claims, Secret and account users, accounts;
filled from the start-up listing (complete) and confirmed by kopf's events or a listing
of names (no phantom left)."""

import asyncio
from typing import Any

import pytest

from tests.conftest import eventually
from thingspace_operator.inventory import CALLBACK, Index, Inventory, Listed, fill
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


def listed(name: str, version: str = "1", **spec: Any) -> dict[str, Any]:
    """A callback as a list response holds it."""
    body = callback(name, **spec)
    body["metadata"]["resourceVersion"] = version
    return body


def test_the_listing_completes_the_inventory_and_the_events_confirm_it() -> None:
    inventory = Inventory()
    assert inventory.listed_callback(listed("qos", accountRef={"name": "fleet"})) is not None
    inventory.listed_account({"metadata": {"name": "fleet"}, "spec": ACCOUNT_SPEC})
    assert not inventory.complete  # a page may still be missing
    inventory.listing_filed()
    assert inventory.complete
    assert not inventory.confirmed
    assert list(inventory.account_users["fleet"]) == [("team-a", "qos")]
    assert inventory.accounts["fleet"].account_name == "0000123456-00001"
    # kopf's listing shows each again: the version the listing filed says "nothing new".
    assert inventory.first_event(CALLBACK, ("team-a", "qos")) == "1"
    assert inventory.first_event(CALLBACK, ("team-a", "qos")) is None  # only the first
    assert not inventory.confirmed
    inventory.account_seen("fleet", ACCOUNT_SPEC)
    assert inventory.confirmed


def test_an_event_before_the_listing_is_newer_and_kept() -> None:
    inventory = Inventory()
    inventory.callback_seen(listed("qos", "7", accountName="0000123456-00001"))
    inventory.callback_gone("team-a", "deleted")
    assert inventory.listed_callback(listed("qos", "5", accountRef={"name": "fleet"})) is None
    assert inventory.listed_callback(listed("deleted", "4")) is None
    inventory.listing_filed()
    assert ("0000123456-00001", "QoS") in inventory.claims
    assert "fleet" not in inventory.account_users
    assert len(inventory.claims) == 1
    assert inventory.confirmed  # every listed object was seen already


def test_a_deletion_confirms_a_listed_object() -> None:
    inventory = Inventory()
    inventory.listed_callback(listed("qos"))
    inventory.listing_filed()
    inventory.callback_gone("team-a", "qos")
    assert inventory.confirmed
    assert len(inventory.claims) == 0


def test_an_empty_cluster_is_complete_and_confirmed_at_once() -> None:
    inventory = Inventory()
    inventory.listing_filed()
    assert inventory.complete
    assert inventory.confirmed


class Cluster:
    """What the start-up listing, and each listing of names after it, sees."""

    def __init__(
        self,
        inventory: Inventory,
        names: list[str],
        failures: int = 0,
        deleted_after: str | None = None,
        fail_after_first_page: bool = False,
    ) -> None:
        """``deleted_after``: deleted right after the start-up listing. With
        ``fail_after_first_page``, the first listing files one object and fails, and that
        object is deleted before the listing is tried again."""
        self.inventory, self.names = inventory, names
        self.failures, self.deleted_after = failures, deleted_after
        self.fail_after_first_page = fail_after_first_page
        self.listings = 0
        self.let_go: list[Listed] = []
        self.claimed_until_let_go: list[tuple[str, str]] = []

    async def load(self) -> None:
        if self.failures:
            self.failures -= 1
            raise KubeApiError(403, "Forbidden")
        for name in list(self.names):
            self.inventory.listed_callback(listed(name, accountName="0000123456-00001"))
            if self.fail_after_first_page:
                self.fail_after_first_page = False
                self.names.remove(name)
                raise KubeApiError(410, "Gone")  # the continue token expired
        if self.deleted_after in self.names:
            self.names.remove(self.deleted_after)

    async def list_names(self) -> list[Listed]:
        self.listings += 1
        return [(CALLBACK, ("team-a", name)) for name in self.names]

    async def forget(self, obj: Listed) -> None:
        self.let_go.append(obj)
        self.claimed_until_let_go.extend(self.inventory.claims.entries_of(obj[1]))
        self.inventory.callback_gone(*obj[1])

    def fill(self, poll: float = 0.01) -> "asyncio.Task[None]":
        filling = fill(self.inventory, self.load, self.list_names, self.forget, poll)
        return asyncio.create_task(filling)


async def test_an_object_deleted_before_kopf_listed_it_is_let_go_after_a_listing_of_names() -> None:
    inventory = Inventory()
    cluster = Cluster(inventory, ["deleted-meanwhile", "kept"], deleted_after="deleted-meanwhile")
    filling = cluster.fill()
    await eventually(lambda: inventory.complete, what="complete once the listing is filed")
    inventory.first_event(CALLBACK, ("team-a", "kept"))  # no event will ever show the other
    await asyncio.wait_for(filling, 5)
    assert inventory.confirmed
    assert cluster.let_go == [(CALLBACK, ("team-a", "deleted-meanwhile"))]
    assert cluster.listings >= 1


async def test_a_phantoms_claim_goes_with_it() -> None:
    inventory = Inventory()
    cluster = Cluster(inventory, ["phantom"], deleted_after="phantom")
    await asyncio.wait_for(cluster.fill(), 5)
    assert cluster.claimed_until_let_go == [("0000123456-00001", "QoS")]
    assert ("0000123456-00001", "QoS") not in inventory.claims
    assert cluster.let_go == [(CALLBACK, ("team-a", "phantom"))]


async def test_a_listing_that_failed_midway_lets_go_of_what_it_filed_and_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing is retried from its first page; an object the failed attempt filed and
    that is gone since is a phantom like any other."""
    real_sleep = asyncio.sleep
    monkeypatch.setattr("thingspace_operator.inventory.asyncio.sleep", lambda _: real_sleep(0))
    inventory = Inventory()
    cluster = Cluster(inventory, ["deleted-meanwhile", "kept"], fail_after_first_page=True)
    filling = cluster.fill()
    await eventually(lambda: inventory.complete, what="the listing filed")
    inventory.first_event(CALLBACK, ("team-a", "kept"))
    await asyncio.wait_for(filling, 5)
    assert cluster.let_go == [(CALLBACK, ("team-a", "deleted-meanwhile"))]
    assert [c.name for c in inventory.claims[("0000123456-00001", "QoS")]] == ["kept"]


async def test_an_object_an_event_shows_while_others_are_let_go_stays() -> None:
    """Missing from the listing of names, then shown by an event (created again, or
    kopf's event came late) while another object is being let go: it stays."""
    inventory = Inventory()
    cluster = Cluster(inventory, ["a", "b"])
    real_load = cluster.load

    async def load_then_delete_both() -> None:
        await real_load()
        cluster.names.clear()

    async def forget_while_the_other_comes_back(obj: Listed) -> None:
        if not cluster.let_go:
            other = "b" if obj[1][1] == "a" else "a"
            inventory.callback_seen(listed(other, "9", accountName="0000999999-00001"))
        cluster.let_go.append(obj)
        inventory.callback_gone(*obj[1])

    lets_go = forget_while_the_other_comes_back
    filling = fill(inventory, load_then_delete_both, cluster.list_names, lets_go, 0.01)
    await asyncio.wait_for(filling, 5)
    assert len(cluster.let_go) == 1
    assert len(inventory.claims[("0000999999-00001", "QoS")]) == 1
    assert inventory.confirmed


async def test_an_existing_object_not_seen_yet_keeps_it_unconfirmed() -> None:
    """kopf's watch may lag (the API server is slow): deregistration waits for it, and the
    listings meanwhile come ever less often."""
    inventory = Inventory()
    cluster = Cluster(inventory, ["lagging"])
    filling = cluster.fill()
    await eventually(lambda: cluster.listings >= 2, what="two listings of names")
    assert inventory.complete
    assert not inventory.confirmed
    assert cluster.let_go == []
    inventory.callback_seen(listed("lagging"))
    await asyncio.wait_for(filling, 5)
    assert inventory.confirmed


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
    cluster = Cluster(inventory, [], failures=3)
    await asyncio.wait_for(cluster.fill(), 5)
    assert inventory.complete
    assert inventory.confirmed
    assert delays == [1.0, 2.0, 4.0]
    assert "HTTP 403 Forbidden" in caplog.text  # RBAC to fix, said plainly
