"""An Authoritative account's pruning, rule by rule, against a recording view: what it
removes, and every case where it must not. The real API server and simulator run it in
tests/e2e/test_lifecycle.py."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from thingspace_operator import account_handlers
from thingspace_operator.account import AccountSpec
from thingspace_operator.kube.claims import Claim
from thingspace_operator.kube.status import Condition
from thingspace_operator.metrics import Metrics
from thingspace_operator.thingspace.accounts import Observation
from thingspace_operator.thingspace.errors import Unavailable
from thingspace_operator.thingspace.models import Callback

ACCOUNT_SPEC = {
    "accountName": "0000123456-00001",
    "credentialsSecretRef": {"name": "creds"},
    "callbackPolicy": "Authoritative",
}
ACCOUNT = AccountSpec.parse("fleet", ACCOUNT_SPEC)
PERIOD = 10.0
READY = Condition("Ready", "True", "Authenticated", "Listed")
CLAIM = Claim("2026-01-01T00:00:00Z", "team", "qos")


class RecordingView:
    def __init__(self) -> None:
        self.deregistered: list[str] = []
        self.live: dict[str, Callback] = {}  # what a list made now answers

    async def deregister(self, service: str) -> float:
        self.deregistered.append(service)
        return 0.0

    def now(self) -> float:
        return 0.0

    async def observe(self, not_before: float) -> dict[str, Callback]:
        return dict(self.live)


@pytest.fixture
def view(monkeypatch: pytest.MonkeyPatch) -> RecordingView:
    recording = RecordingView()
    # What the tests sight: the fresh list under the lock still shows it, so only the rule
    # a test is about can keep it (an empty list would keep everything, proving nothing).
    recording.live = {"QoS": Callback(ACCOUNT.account_name, "QoS", "https://a")}

    async def account_view(*_: Any) -> RecordingView:
        return recording

    async def announce(*_: Any) -> None:
        return None

    monkeypatch.setattr(account_handlers, "account_view", account_view)
    monkeypatch.setattr(account_handlers, "announce", announce)
    return recording


def runtime(indexed: bool = True, namespaces: tuple[str, ...] = ()) -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(namespaces=namespaces, resync_seconds=PERIOD),
        inventory=SimpleNamespace(accounts={ACCOUNT.name: ACCOUNT}),
        inventory_current=lambda: indexed,
        unmanaged={},
        lock_for=lambda *_: asyncio.Lock(),
        metrics=Metrics(),
    )


def listed(at: float, **urls: str) -> Observation:
    return Observation(
        at, {service: Callback(ACCOUNT.account_name, service, url) for service, url in urls.items()}
    )


async def prune_twice(
    rt: Any, first: Observation, second: Observation, declared: set[str] = frozenset()
) -> Condition:
    def claims_of(key: tuple[str, str]) -> list[Claim]:
        return [CLAIM] if key[1] in declared else []

    await account_handlers.prune(rt, ACCOUNT, first, claims_of, {}, READY)
    return await account_handlers.prune(rt, ACCOUNT, second, claims_of, {}, READY)


async def test_an_undeclared_registration_goes_after_two_lists_a_period_apart(
    view: RecordingView,
) -> None:
    view.live = listed(PERIOD, QoS="https://a").callbacks
    rt = runtime()
    await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == ["QoS"]
    assert rt.metrics.registry.get_sample_value("thingspace_registrations_pruned_total") == 1


async def test_a_registration_replaced_after_its_sightings_is_left(view: RecordingView) -> None:
    """Under the lock a fresh list decides: a handler whose resource the inventory does
    not show yet may have registered its own URL meanwhile."""
    view.live = listed(PERIOD, QoS="https://new-owner").callbacks
    rt = runtime()
    await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == []
    assert rt.metrics.registry.get_sample_value("thingspace_registrations_pruned_total") == 0


async def test_a_list_failing_under_the_lock_prunes_nothing_and_reports_on(
    monkeypatch: pytest.MonkeyPatch, view: RecordingView
) -> None:
    async def failing(not_before: float) -> dict[str, Callback]:
        raise Unavailable("ThingSpace list call failed with HTTP 503")

    monkeypatch.setattr(view, "observe", failing)
    ready = await prune_twice(
        runtime(), listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a")
    )
    assert view.deregistered == []
    assert ready == READY


async def test_a_watch_gap_opening_while_pruning_waits_stops_it(
    monkeypatch: pytest.MonkeyPatch, view: RecordingView
) -> None:
    view.live = listed(PERIOD, QoS="https://a").callbacks
    current = [True]

    async def account_view(*_: Any) -> RecordingView:
        current[0] = False  # the callbacks' watch expired while the credentials were read
        return view

    monkeypatch.setattr(account_handlers, "account_view", account_view)
    rt = runtime()
    rt.inventory_current = lambda: current[0]
    await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == []


async def test_two_lists_less_than_a_period_apart_are_not_enough(view: RecordingView) -> None:
    await prune_twice(runtime(), listed(0, QoS="https://a"), listed(PERIOD - 1, QoS="https://a"))
    assert view.deregistered == []


async def test_a_changed_url_starts_the_wait_again(view: RecordingView) -> None:
    await prune_twice(runtime(), listed(0, QoS="https://a"), listed(PERIOD, QoS="https://b"))
    assert view.deregistered == []


async def test_a_declared_registration_is_never_removed(view: RecordingView) -> None:
    first, second = listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a")
    await prune_twice(runtime(), first, second, declared={"QoS"})
    assert view.deregistered == []


async def test_nothing_is_judged_before_every_callback_was_seen(view: RecordingView) -> None:
    """After a restart, every object listed at start-up must have been seen: until then,
    no memory."""
    rt = runtime(indexed=False)
    await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == []
    assert rt.unmanaged == {}


async def test_an_operator_watching_some_namespaces_never_prunes(view: RecordingView) -> None:
    rt = runtime(namespaces=("team",))
    ready = await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == []
    assert "Authoritative is inactive" in ready.message


async def test_a_registration_gone_meanwhile_is_forgotten(view: RecordingView) -> None:
    rt = runtime()
    await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD))
    assert rt.unmanaged == {}
    assert view.deregistered == []


async def test_a_callback_declared_while_pruning_waits_is_respected(
    monkeypatch: pytest.MonkeyPatch, view: RecordingView
) -> None:
    """The last check runs under the registration's lock, with claims read afresh."""
    declared: set[str] = set()

    async def account_view(*_: Any) -> RecordingView:
        declared.add("QoS")  # a callback appears while the credentials are read
        return view

    monkeypatch.setattr(account_handlers, "account_view", account_view)

    def claims_of(key: tuple[str, str]) -> list[Claim]:
        return [CLAIM] if key[1] in declared else []

    rt = runtime()
    for at in (0, PERIOD):
        await account_handlers.prune(rt, ACCOUNT, listed(at, QoS="https://a"), claims_of, {}, READY)
    assert view.deregistered == []


async def test_sightings_must_be_consecutive(view: RecordingView) -> None:
    rt = runtime()
    for at in (0, 3 * PERIOD):  # a gap: lists failed or the account was Additive meanwhile
        await account_handlers.prune(
            rt, ACCOUNT, listed(at, QoS="https://a"), lambda _: [], {}, READY
        )
    assert view.deregistered == []


def test_a_callback_of_an_unknown_account_blocks_pruning_its_service() -> None:
    claims = {("ThingSpaceAccount/gone", "QoS"): [CLAIM]}
    found = account_handlers.declaring(
        claims, {"fleet": "0000123456-00001"}, ("0000123456-00001", "QoS")
    )
    assert found == [CLAIM]
    assert account_handlers.declaring(claims, {}, ("0000123456-00001", "DeviceUsage")) == []


async def test_an_additive_account_of_the_same_billing_account_makes_it_inactive(
    view: RecordingView,
) -> None:
    """Two ThingSpaceAccounts say opposite things of one billing account: nothing is
    pruned, and the Authoritative one says why (its sightings were wiped silently)."""
    view.live = listed(PERIOD, QoS="https://a").callbacks
    rt = runtime()
    twin = AccountSpec.parse("team-fleet", {**ACCOUNT_SPEC, "callbackPolicy": "Additive"})
    rt.inventory.accounts[twin.name] = twin
    ready = await prune_twice(rt, listed(0, QoS="https://a"), listed(PERIOD, QoS="https://a"))
    assert view.deregistered == []
    assert "ThingSpaceAccount team-fleet of the same billing account is Additive" in ready.message
