"""The inventory: the operator's own maps of claims, Secret and account users, accounts
(fed by its own watches: kube/listwatch.py, tests/unit/test_listwatch.py), and what the
watches' listeners do with an object that cannot be filed."""

from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from thingspace_operator.account_handlers import account_changed
from thingspace_operator.config import OperatorConfig
from thingspace_operator.inventory import Index, Inventory
from thingspace_operator.kube.claims import Claim
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.listwatch import WatchEvent
from thingspace_operator.reconciler import Runtime

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
    assert "not a mapping" not in caplog.text


async def test_a_malformed_account_is_filed_as_invalid(runtime: Runtime) -> None:
    malformed = {"metadata": {"name": "fleet"}, "spec": "not a mapping"}
    await account_changed(runtime, WatchEvent("ADDED", malformed, initial=True))
    assert "fleet" not in runtime.inventory.accounts
    assert runtime.seen_accounts == {"fleet": None}
