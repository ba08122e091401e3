"""Fleets: shared observation per account, conflicts, adoption, ObserveOnly, suspend,
reconcile-now."""

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import (
    ACCOUNT,
    DEMO_CREDENTIALS,
    NAMESPACE,
    Cluster,
    OperatorFactory,
    eventually,
    quiet_period,
)
from tests.integration.test_metrics import scrape, value
from tests.simctl import SimControl
from thingspace_operator.kube import login
from thingspace_operator.model import FINALIZER, RECONCILE_REQUESTED_ANNOTATION
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

URL = "https://listener.example.com/qos"


@pytest.fixture
def ctl(sim) -> SimControl:
    return SimControl(sim.url)


def condition(cluster: Cluster, name: str, type_: str, namespace: str = NAMESPACE) -> tuple:
    cond = cluster.condition(name, type_, namespace)
    return cond.get("status"), cond.get("reason")


def ready(cluster: Cluster, name: str, namespace: str = NAMESPACE) -> bool:
    return condition(cluster, name, "Ready", namespace)[0] == "True"


async def writes(ctl: SimControl) -> int:
    return await ctl.calls("register") + await ctl.calls("deregister")


async def test_fifty_resources_cost_one_list_per_account_per_period(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl, sim
) -> None:
    accounts = ["0000000001-00001", "0000000002-00001", "0000000003-00001"]
    services = list(CALLBACK_SERVICE_NAMES[:17])
    pairs = [(a, s) for s in services for a in accounts][:50]
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(resync_seconds=1.0)
    await asyncio.gather(
        *(
            cluster.create_callback(f"cb-{i}", accountName=a, serviceName=s, url=f"{URL}/{i}")
            for i, (a, s) in enumerate(pairs)
        )
    )
    await eventually(
        lambda: all(ready(cluster, f"cb-{i}") for i in range(50)), timeout=30, what="all 50 Ready"
    )
    registered = await ctl.registrations()
    assert sum(len(items) for items in registered.values()) == 50
    assert await ctl.calls("register") == 50
    assert await ctl.calls("token") == 1
    assert await ctl.calls("login") == 1

    # Drift periods are aligned to the clock (windows of 1 s here); the simulator logs each
    # request on the same clock. A resource reconciled less than a period ago is not checked
    # yet, so count from the second full window after convergence: every window must then
    # hold exactly one list call per account.
    first_window = int(time.monotonic()) + 2
    await eventually(lambda: time.monotonic() >= first_window + 4, timeout=11, what="4 periods")
    lists = [
        (int(t), account)
        for t, endpoint, account in sim.state.request_log
        if endpoint == "list" and first_window <= t < first_window + 4
    ]
    # One sweep per window lists each account exactly once.
    for window in range(first_window, first_window + 4):
        per_account = sorted(account for w, account in lists if w == window)
        assert per_account == sorted(accounts), f"window {window}: {per_account}"
    assert await ctl.calls("register") == 50  # nothing drifted, nothing written
    # No drift check asked a handler for a reconcile: converging resources were the
    # create handler's, and afterwards no check found anything to write.
    requested = [
        f"cb-{i}"
        for i in range(50)
        if RECONCILE_REQUESTED_ANNOTATION
        in ((cluster.callback(f"cb-{i}") or {}).get("metadata", {}).get("annotations") or {})
    ]
    assert requested == []


async def test_two_claims_on_one_registration_one_owner_no_flapping(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    for namespace in (NAMESPACE, "other"):
        await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS, namespace)
    await start_operator(resync_seconds=0.3)
    await cluster.create_callback("first", url=f"{URL}/first")
    await eventually(lambda: ready(cluster, "first"))
    await cluster.create_callback("second", namespace="other", url=f"{URL}/second")

    await eventually(
        lambda: condition(cluster, "second", "Ready", "other") == ("False", "Conflict")
    )
    assert condition(cluster, "second", "Synced", "other") == ("False", "Conflict")
    assert f"{NAMESPACE}/first" in cluster.condition("second", "Synced", "other")["message"]
    await eventually(lambda: "Conflict" in cluster.event_reasons("second"))
    await quiet_period(1.0)  # several drift periods: nobody fights
    assert await ctl.calls("register") == 1
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == f"{URL}/first"
    # The drift checks knew "second" is not the owner: none asked to reconcile it.
    annotations = (cluster.callback("second", "other") or {})["metadata"].get("annotations", {})
    assert RECONCILE_REQUESTED_ANNOTATION not in annotations

    await cluster.delete_callback("first")
    await eventually(lambda: ready(cluster, "second", "other"), timeout=5, what="takeover")
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == f"{URL}/second"
    assert await ctl.calls("deregister") == 0  # handed over, never deregistered in between


def handled(created: str) -> dict[str, Any]:
    """Metadata of a resource an earlier operator process handled: created on that day,
    with the finalizer (a restarted operator resumes it at once)."""
    return {"creationTimestamp": f"{created}T00:00:00Z", "finalizers": [FINALIZER]}


async def test_after_a_restart_no_younger_claimant_takes_the_registration(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    """At start-up kopf may show the younger claimants before their owner: none decides
    before every callback that existed has been seen, so none registers its own URL."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await ctl.set_registration(ACCOUNT, "QoS", url=f"{URL}/owner")
    younger = [f"a-younger-{i}" for i in range(20)]
    for name in younger:  # listed first: created first, but younger by their timestamps
        await cluster.create_callback(name, url=f"{URL}/{name}", metadata=handled("2026-06-01"))
    await cluster.create_callback("z-owner", url=f"{URL}/owner", metadata=handled("2026-01-01"))
    await start_operator()

    await eventually(lambda: ready(cluster, "z-owner"), what="the owner Ready")
    await eventually(
        lambda: all(condition(cluster, name, "Ready") == ("False", "Conflict") for name in younger),
        what="every younger claimant in Conflict",
    )
    assert await ctl.calls("register") == 0
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == f"{URL}/owner"


async def test_a_restart_checks_every_unchanged_resource_at_once_and_writes_nothing_else(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl, k8s
) -> None:
    """kopf runs no handler for an unchanged resource after a restart: the first drift
    sweep checks each one at once (not a period later), with one list per account. It
    corrects what drifted while nobody watched and writes nothing for the rest."""
    accounts = ["0000000001-00001", "0000000002-00001"]
    pairs = [(a, s) for a in accounts for s in CALLBACK_SERVICE_NAMES[:5]]
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    first = await start_operator()
    names = [f"cb-{i}" for i in range(len(pairs))]
    for name, (account, service) in zip(names, pairs, strict=True):
        await cluster.create_callback(name, accountName=account, serviceName=service, url=URL)
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=30, what="Ready")
    await quiet_period(0.5)  # status patches trailing the last Ready
    await start_operator.stop(first)
    await ctl.delete_registration(*pairs[0])  # removed by hand while the operator was down
    await ctl.request("DELETE", "requests")
    k8s.verb_counts = None

    restarted = await start_operator(resync_seconds=3600.0)  # no periodic sweep in this test
    await eventually(
        lambda: _registered(ctl, pairs[0]), timeout=10, what="the drift corrected at start-up"
    )
    await eventually(lambda: _resumed(restarted, len(pairs) - 1), what="every other one checked")
    await quiet_period(0.5)
    writes = {key: n for key, n in (k8s.verb_counts or {}).items() if key[0] != "GET"}
    # The corrected one: a reconcile request, its status and its Event; nothing for the rest.
    assert writes == {("PATCH", ""): 1, ("PATCH", "status"): 1, ("POST", ""): 1}, writes
    assert await ctl.counts() == {
        ("token", 200): 1,
        ("login", 200): 1,
        ("list", 200): len(accounts),
        ("register", 200): 1,
    }
    samples = await scrape(restarted)
    assert value(samples, "thingspace_callbacks", condition="Ready", status="True") == len(pairs)


async def _registered(ctl: SimControl, pair: tuple[str, str]) -> bool:
    account, service = pair
    return any(item["serviceName"] == service for item in (await ctl.registrations())[account])


async def _resumed(runtime: Any, count: int) -> bool:
    samples = await scrape(runtime)
    return (
        value(samples, "thingspace_reconciles_total", trigger="resume", result="ReconcileSuccess")
        == count
    )


async def test_deleting_the_conflicting_resource_never_deregisters(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.create_callback("first")
    await eventually(lambda: ready(cluster, "first"))
    await cluster.create_callback("second", url=f"{URL}/second")
    await eventually(lambda: condition(cluster, "second", "Ready") == ("False", "Conflict"))

    await cluster.delete_callback("second")
    await eventually(lambda: cluster.callback("second") is None)
    assert await ctl.calls("deregister") == 0
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == URL
    assert ready(cluster, "first")


async def test_existing_registration_is_adopted_without_a_write(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=URL)
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    assert await writes(ctl) == 0


async def test_differing_registration_is_replaced_and_the_old_url_recorded(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url="https://hand-made.example.com/qos")
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == URL
    messages = [e["message"] for e in cluster.events("qos") if e["reason"] == "Registered"]
    assert any("replacing https://hand-made.example.com/qos" in m for m in messages)


async def test_a_registration_only_seen_is_not_deregistered_on_delete(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    """A callback deleted before it could replace what it found (someone else's, or one
    left by a callback deleted with Orphan) leaves it: its status showed that
    registration, but never as its own. Found by the chaos soak."""
    await ctl.set_registration(ACCOUNT, "QoS", url="https://left-by-orphan.example.com/qos")
    await ctl.fault("register", "status", status=503, count=None)
    await cluster.create_callback("qos")
    await eventually(lambda: condition(cluster, "qos", "Ready") == ("False", "Unavailable"))
    shown = cluster.callback("qos")["status"]["registration"]["url"]
    assert shown == "https://left-by-orphan.example.com/qos"
    await ctl.request("DELETE", "faults")

    await cluster.delete_callback("qos")
    await eventually(lambda: cluster.callback("qos") is None)
    assert await ctl.calls("deregister") == 0
    live = (await ctl.registrations())[ACCOUNT][0]
    assert live["url"] == "https://left-by-orphan.example.com/qos"


async def test_observe_only_reports_and_never_writes(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(resync_seconds=0.3)
    await cluster.create_callback("qos", managementPolicy="ObserveOnly")
    await eventually(lambda: condition(cluster, "qos", "Ready") == ("False", "Pending"))
    assert condition(cluster, "qos", "Synced") == ("True", "ObserveOnly")

    await ctl.set_registration(ACCOUNT, "QoS", url="https://elsewhere.example.com/")
    await eventually(lambda: condition(cluster, "qos", "Ready") == ("False", "Drifted"))
    assert (
        cluster.callback("qos")["status"]["registration"]["url"] == "https://elsewhere.example.com/"
    )

    await ctl.set_registration(ACCOUNT, "QoS", url=URL)
    await eventually(lambda: condition(cluster, "qos", "Ready") == ("True", "Registered"))

    await cluster.delete_callback("qos")
    await eventually(lambda: cluster.callback("qos") is None)
    assert await writes(ctl) == 0
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == URL


async def test_suspend_makes_no_calls_and_resume_reconciles_at_once(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.create_callback("qos", suspend=True)
    await eventually(lambda: condition(cluster, "qos", "Synced") == ("False", "Suspended"))
    assert condition(cluster, "qos", "Ready") == ("Unknown", "Suspended")
    assert (await ctl.request("GET", "requests"))["total"] == 0

    await cluster.patch_callback("qos", {"spec": {"suspend": False}})
    await eventually(lambda: ready(cluster, "qos"), timeout=5)


async def test_reconcile_now_annotation_bypasses_the_shared_list(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    await ctl.set_registration(ACCOUNT, "QoS", url="https://drifted.example.com/")

    stamp = "2026-11-23T10:00:00Z"
    await cluster.patch_callback(
        "qos", {"metadata": {"annotations": {RECONCILE_REQUESTED_ANNOTATION: stamp}}}
    )
    await eventually(
        lambda: cluster.callback("qos")["status"].get("lastHandledReconcileAt") == stamp
    )
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == URL


async def test_converging_costs_three_kubernetes_writes_per_resource_and_the_tight_call_bound(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl, k8s
) -> None:
    """Finalizer, status and one Event per resource; token + login once, one list per
    account and one register per resource at ThingSpace (Ready rests on the 200)."""
    accounts = ["0000000001-00001", "0000000002-00001"]
    pairs = [(a, s) for a in accounts for s in CALLBACK_SERVICE_NAMES[:15]]
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    await ctl.request("DELETE", "requests")
    k8s.verb_counts = None
    await asyncio.gather(
        *(
            cluster.create_callback(f"cb-{i}", accountName=a, serviceName=s, url=f"{URL}/{i}")
            for i, (a, s) in enumerate(pairs)
        )
    )
    names = [f"cb-{i}" for i in range(len(pairs))]
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=30, what="Ready")
    await quiet_period(1.0)  # Events and status patches trailing the last Ready
    creates = len(pairs)
    writes = sum(
        n for (verb, _), n in k8s.verb_counts.items() if verb in ("POST", "PATCH", "PUT", "DELETE")
    )
    assert writes - creates <= 3 * len(pairs), dict(k8s.verb_counts)
    assert await ctl.counts() == {
        ("token", 200): 1,
        ("login", 200): 1,
        ("list", 200): len(accounts),
        ("register", 200): len(pairs),
    }


async def test_deleting_a_fleet_at_once_handles_each_deletion_once_with_two_writes(
    start_operator: OperatorFactory,
    cluster: Cluster,
    ctl: SimControl,
    k8s,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each deletion of a burst is handled once, as soon as kopf shows it: one deregister,
    the finalizer's removal and one Deregistered Event. No retry (which would patch kopf's
    progress annotations and wait out a backoff), no wait for the operator's own watch
    that gives up, no status write: nothing else. (How long `kubectl delete --wait` takes
    is kubectl's: docs/performance.md, "Deleting many callbacks".)"""
    accounts = ["0000000001-00001", "0000000002-00001"]
    pairs = [(a, s) for a in accounts for s in CALLBACK_SERVICE_NAMES[:15]]
    names = [f"cb-{i}" for i in range(len(pairs))]
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    # A retry would be in plain sight: the first one waits at least 5 s.
    await start_operator(retry_base_seconds=10.0, retry_max_seconds=10.0)
    await asyncio.gather(
        *(
            cluster.create_callback(name, accountName=a, serviceName=s, url=f"{URL}/{name}")
            for name, (a, s) in zip(names, pairs, strict=True)
        )
    )
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=30, what="Ready")
    await quiet_period(1.0)  # Events and status patches trailing the last Ready
    await ctl.request("DELETE", "requests")
    k8s.resource_counts = None
    caplog.clear()

    await asyncio.gather(*(cluster.delete_callback(name) for name in names))
    await eventually(
        lambda: all(cluster.callback(n) is None for n in names), timeout=30, what="all gone"
    )
    await quiet_period(1.0)  # Events trailing the last finalizer
    writes = {
        key: n
        for key, n in k8s.resource_counts.items()
        if key[0] in ("POST", "PATCH", "PUT", "DELETE")
    }
    deleted = len(names)
    assert writes == {
        ("DELETE", "thingspacecallbacks"): deleted,  # the test's own
        ("PATCH", "thingspacecallbacks"): deleted,  # the finalizer's removal, once each
        ("POST", "events"): deleted,
    }
    assert all(cluster.event_reasons(n).count("Deregistered") == 1 for n in names)
    retried = [r.getMessage() for r in caplog.records if "failed temporarily" in r.getMessage()]
    assert retried == []
    assert "to show the deletion" not in caplog.text
    counts = await ctl.counts()
    assert counts.pop(("deregister", 200)) == deleted
    assert set(counts) <= {("list", 200)}  # one look before each account's deregisters
    assert await ctl.registrations() in ({}, {a: [] for a in accounts})


async def test_kopf_holds_no_more_connections_to_the_api_server_than_its_pool(
    start_operator: OperatorFactory, cluster: Cluster, k8s, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf's own pool has no limit: a burst of new resources opened a connection to the
    API server for each of its requests in flight."""
    monkeypatch.setattr(login, "KOPF_CONNECTIONS", 2)
    pairs = [
        (a, s)
        for a in ("0000000001-00001", "0000000002-00001")
        for s in CALLBACK_SERVICE_NAMES[:15]
    ]
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    await asyncio.gather(
        *(
            cluster.create_callback(f"cb-{i}", accountName=a, serviceName=s, url=f"{URL}/{i}")
            for i, (a, s) in enumerate(pairs)
        )
    )
    names = [f"cb-{i}" for i in range(len(pairs))]
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=30, what="Ready")
    assert 0 < k8s.kopf_connections_peak <= 2 + 1  # plus its one watch stream
