"""The inventory: the operator's own maps of claims, Secret and account users, accounts
(fed by its own watches: kube/listwatch.py, tests/unit/test_listwatch.py), and what the
watches' listeners do with an object that cannot be filed."""

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from thingspace_operator import account_handlers, handlers
from thingspace_operator.account_handlers import account_changed
from thingspace_operator.config import OperatorConfig
from thingspace_operator.inventory import Index, Inventory
from thingspace_operator.kube.claims import Claim, claims_for, rival_owner, successor
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.listwatch import WatchEvent
from thingspace_operator.plan import Ownership
from thingspace_operator.reconciler import Runtime

ACCOUNT = "0000123456-00001"
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


def file_owner_by_reference_and_younger_inline(inventory: Inventory) -> dict[str, Any]:
    """team-a/qos-by-ref (registered in ACCOUNT through ThingSpaceAccount fleet) and the
    younger team-b/qos-inline naming ACCOUNT itself; the first one's body."""
    owner = callback("qos-by-ref", accountRef={"name": "fleet"})
    owner["status"] = {"accountName": ACCOUNT}
    inventory.callback_seen(owner)
    younger = callback("qos-inline", "team-b", accountName=ACCOUNT)
    younger["metadata"]["creationTimestamp"] = "2026-11-02T00:00:00Z"
    inventory.callback_seen(younger)
    return owner


def test_a_callback_by_reference_also_claims_the_account_it_registered_in() -> None:
    """Its ThingSpaceAccount gone (deleted, invalid, or re-created for another billing
    account), an older callback by reference still owns the registration it made: a
    younger one naming that account inline stays in Conflict instead of taking it."""
    inventory = Inventory()
    file_owner_by_reference_and_younger_inline(inventory)
    me = Claim("2026-11-02T00:00:00Z", "team-b", "qos-inline")
    for resolved in ({}, {"fleet": ACCOUNT}, {"fleet": "0000991199-00001"}):
        everyone = claims_for(inventory.claims, resolved, (ACCOUNT, "QoS"))
        owner = rival_owner(everyone, me)
        assert owner is not None, resolved
        assert owner.name == "qos-by-ref"
    inventory.callback_gone("team-a", "qos-by-ref")
    assert rival_owner(claims_for(inventory.claims, {}, (ACCOUNT, "QoS")), me) is None


def test_a_callback_by_reference_in_conflict_claims_no_account_it_never_registered_in() -> None:
    """Kept in Conflict by an older inline owner, it made no registration: once its
    ThingSpaceAccount is gone it must not become that owner's heir (it could not act)."""
    inventory = Inventory()
    inventory.callback_seen(callback("qos-inline", "team-b", accountName=ACCOUNT))
    waiting = callback("qos-by-ref", accountRef={"name": "fleet"})
    waiting["metadata"]["creationTimestamp"] = "2026-11-02T00:00:00Z"
    waiting["status"] = {
        "accountName": ACCOUNT,
        "conditions": [{"type": "Synced", "status": "False", "reason": "Conflict"}],
    }
    inventory.callback_seen(waiting)
    owner = Claim("2026-11-01T00:00:00Z", "team-b", "qos-inline")
    assert successor(claims_for(inventory.claims, {}, (ACCOUNT, "QoS")), owner) is None


def test_a_deletion_hands_over_among_the_claims_on_the_account_it_registered_in() -> None:
    """Its ThingSpaceAccount re-created for another billing account, a deleted callback by
    reference is judged among the claims on the account it registered in: the younger
    inline callback kept waiting there takes over, and is woken."""
    inventory = Inventory()
    leaving = file_owner_by_reference_and_younger_inline(inventory)
    runtime = SimpleNamespace(account_names=lambda: {"fleet": "0000991199-00001"})
    ownership, heir = handlers._ownership(runtime, inventory.claims, leaving, "team-a")  # type: ignore[arg-type]
    assert ownership is Ownership.HANDOVER
    assert heir == Claim("2026-11-02T00:00:00Z", "team-b", "qos-inline")


def test_an_invalid_account_is_not_filed() -> None:
    inventory = Inventory()
    assert inventory.account_seen("fleet", ACCOUNT_SPEC) is not None
    assert inventory.accounts["fleet"].account_name == "0000123456-00001"
    assert inventory.account_seen("fleet", {"accountName": 7}) is None
    assert "fleet" not in inventory.accounts


def test_the_inventory_is_complete_once_marked() -> None:
    inventory = Inventory()
    assert not inventory.complete
    inventory.mark_complete()
    assert inventory.complete


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    """A runtime whose watch listeners are called directly (no API server)."""
    connection = KubeConnection(kopf.ConnectionInfo(server="http://127.0.0.1:9"))
    runtime = Runtime.create(OperatorConfig(), connection)
    yield runtime
    await runtime.close()


async def test_a_malformed_callback_is_logged_and_skipped_not_the_watch(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The list-watch lists again after any failure of its listener: one object that
    cannot be filed must not hold back every other (nor completeness) for good."""
    malformed = {"metadata": {"namespace": "team-a", "name": "odd"}, "spec": "not a mapping"}
    await runtime._callback_changed(WatchEvent("ADDED", malformed, initial=True))
    well_formed = callback("qos", accountName="0000123456-00001")
    await runtime._callback_changed(WatchEvent("ADDED", well_formed, initial=True))
    assert [c.name for c in runtime.inventory.claims[("0000123456-00001", "QoS")]] == ["qos"]
    assert len(runtime.sweep) == 1  # the well-formed one only
    assert "Could not file ThingSpaceCallback team-a/odd (AttributeError)" in caplog.text


async def test_a_callback_that_cannot_be_filed_is_logged_without_its_content(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure's message may quote the object (a credential in a spec, say): only its
    type is logged."""
    filing = runtime.inventory.callback_seen

    def quoting(body: Any) -> Any:
        if body["metadata"]["name"] == "odd":
            raise ValueError(f"cannot file {body!r}")
        return filing(body)

    monkeypatch.setattr(runtime.inventory, "callback_seen", quoting)
    odd = callback("odd", accountName="0000123456-00001", url="https://u:hunter2@a")
    await runtime._callback_changed(WatchEvent("ADDED", odd, initial=True))
    assert "Could not file ThingSpaceCallback team-a/odd (ValueError)" in caplog.text
    assert "hunter2" not in caplog.text


class StubWatch:
    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy

    async def stop(self) -> None:
        pass


def healthy_watches(runtime: Runtime) -> None:
    runtime.inventory.mark_complete()
    runtime.callback_watch = runtime.account_watch = StubWatch()  # type: ignore[assignment]


async def test_a_callback_that_cannot_be_filed_stops_authoritative_judgement_until_fixed(
    runtime: Runtime,
) -> None:
    """It may declare a registration nobody else does: pruning must not judge meanwhile."""
    healthy_watches(runtime)
    assert runtime.inventory_current()
    key = ("team-a", "qos")
    await runtime._callback_changed(WatchEvent("ADDED", callback("qos", accountName=ACCOUNT)))
    malformed = {"metadata": {"namespace": "team-a", "name": "qos"}, "spec": "not a mapping"}
    await runtime._callback_changed(WatchEvent("MODIFIED", malformed))
    assert not runtime.inventory_current()
    assert len(runtime.inventory.claims) == 0  # its earlier filing goes too
    assert runtime.sweep.tracked(key) is None
    await runtime._callback_changed(WatchEvent("MODIFIED", callback("qos", accountName=ACCOUNT)))
    assert runtime.inventory_current()
    runtime.callback_watch = StubWatch(healthy=False)  # type: ignore[assignment]
    assert not runtime.inventory_current()


def being_deleted(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["deletionTimestamp"] = "2026-11-02T00:00:00Z"
    return body


async def test_a_handler_waits_until_the_own_watch_shows_its_resource(runtime: Runtime) -> None:
    """Shown (being deleted, for a deletion): every older object of its namespace is
    filed then too, so its ownership decision sees them."""
    created = asyncio.create_task(runtime.wait_shown("team-a", "qos", deleting=False))
    deleting = asyncio.create_task(runtime.wait_shown("team-a", "qos", deleting=True))
    await asyncio.sleep(0)
    assert not created.done()
    await runtime._callback_changed(WatchEvent("ADDED", callback("qos", accountName=ACCOUNT)))
    await asyncio.wait_for(created, 5)
    await asyncio.sleep(0)
    assert not deleting.done()  # shown, but not yet as being deleted
    deleted = being_deleted(callback("qos", accountName=ACCOUNT))
    await runtime._callback_changed(WatchEvent("MODIFIED", deleted))
    await asyncio.wait_for(deleting, 5)
    await asyncio.wait_for(runtime.wait_shown("team-a", "qos", deleting=True), 5)  # at once
    gone = asyncio.create_task(runtime.wait_shown("team-a", "other", deleting=True))
    await asyncio.sleep(0)
    await runtime._callback_changed(WatchEvent("DELETED", callback("other")))
    await asyncio.wait_for(gone, 5)  # gone meanwhile: nothing left to wait for
    assert runtime._shown_waiters == {}


@pytest.mark.parametrize("spec", ["not a mapping", {**ACCOUNT_SPEC, "namespaces": 5}])
async def test_a_malformed_account_is_filed_as_invalid(runtime: Runtime, spec: Any) -> None:
    malformed = {"metadata": {"name": "fleet"}, "spec": spec}
    await account_changed(runtime, WatchEvent("ADDED", malformed, initial=True))
    assert "fleet" not in runtime.inventory.accounts
    assert runtime.seen_accounts == {"fleet": None}


class AccountFollowUps:
    """What a change of an account asked for: reconcile requests and reports."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[list[tuple[str, str]]] = []
        self.reported: list[str] = []

        async def ask(callbacks: Any) -> None:
            self.asked.append(list(callbacks))

        async def report(_: Runtime, __: Any, name: str, *___: Any) -> None:
            self.reported.append(name)

        monkeypatch.setattr(runtime, "ask_to_reconcile", ask)
        monkeypatch.setattr(account_handlers, "report_one", report)


def account(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "fleet"}, "spec": spec, "status": status or {}}


async def test_an_account_asks_its_callbacks_only_when_new_changed_or_gone_after_start_up(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = AccountFollowUps(runtime, monkeypatch)
    user = callback("qos", accountRef={"name": "fleet"})
    await runtime._callback_changed(WatchEvent("ADDED", user, initial=True))

    async def event(type_: str, body: dict[str, Any], initial: bool = False) -> None:
        await account_changed(runtime, WatchEvent(type_, body, initial))
        await asyncio.wait_for(runtime.background.idle(), 5)

    await event("ADDED", account(ACCOUNT_SPEC), initial=True)
    runtime.inventory.mark_complete()
    assert (seen.asked, seen.reported) == ([], [])  # the first sweep checks and reports
    await event("MODIFIED", account(ACCOUNT_SPEC, {"ready": "True"}))
    assert (seen.asked, seen.reported) == ([], [])  # a status write changes nothing
    await event("MODIFIED", account({**ACCOUNT_SPEC, "namespaces": ["team-a"]}))
    assert (seen.asked, seen.reported) == ([[("team-a", "qos")]], ["fleet"])
    await event("DELETED", account(ACCOUNT_SPEC))
    assert seen.asked[-1] == [("team-a", "qos")]
    assert seen.reported == ["fleet"]  # nothing left to report on
    await event("ADDED", account(ACCOUNT_SPEC))  # created again: a change
    assert len(seen.asked) == 3
    assert seen.reported == ["fleet", "fleet"]
