"""Which Secrets the operator reads, and how their changes reach it (issue 11).

Labelled Secrets (thingspace.io/credentials=true) arrive through a watch the API server
filters, so their changes apply at once; other referenced Secrets are read by name and read
again once per drift period; Secrets nobody references are never asked for at all.
"""

import base64

import pytest

from tests.conftest import (
    ACCOUNT,
    DEMO_CREDENTIALS,
    NAMESPACE,
    Cluster,
    OperatorFactory,
    eventually,
)
from tests.harness.kube import KubernetesEmulator
from thingspace_operator.kube.secretwatch import CREDENTIALS_SELECTOR
from thingspace_operator.reconciler import Runtime
from thingspace_operator.simulator import SimulatorServer

PERIOD = 1.0  # drift period for the tests that rely on it
#: The bound documented for an unlabelled Secret (docs/concepts/callbacks.md, Secrets): one
#: period, plus the sweep's own work and the reconcile it asks for.
WITHIN_ONE_PERIOD = PERIOD + 3.0
UNRELATED_PAYLOAD = base64.b64encode(b"x" * 64 * 1024).decode()


def reason(cluster: Cluster, name: str) -> str | None:
    return cluster.condition(name, "Synced").get("reason")


def ready(cluster: Cluster, name: str) -> bool:
    return cluster.condition(name, "Ready").get("status") == "True"


def live_password(sim: SimulatorServer) -> str | None:
    callback = sim.state.registrations.get(ACCOUNT, {}).get("QoS")
    return callback.password if callback else None


async def unrelated_secrets(cluster: Cluster, count: int) -> None:
    for i in range(count):
        namespace = f"team-{i % 5}"
        await cluster._request(
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            json={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"sh.helm.release.v1.app-{i}.v1", "labels": {"owner": "helm"}},
                "data": {"release": UNRELATED_PAYLOAD},
            },
        )


def operator_secret_reads(k8s: KubernetesEmulator) -> list[tuple[str, str | None, str | None]]:
    """Every Secret read (GET) the emulated API server served, with its selector if any."""
    return [
        (params.get("labelSelector", ""), namespace, name)
        for method, namespace, name, params in k8s.secret_requests or ()
        if method == "GET"
    ]


async def test_unrelated_secrets_are_never_asked_for_nor_held(
    start_operator: OperatorFactory,
    cluster: Cluster,
    k8s: KubernetesEmulator,
) -> None:
    await unrelated_secrets(cluster, 40)
    # Labelled for the operator but used by nobody: its data is dropped, never kept.
    await cluster.apply_secret("spare", DEMO_CREDENTIALS, namespace="team-0")
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await cluster.apply_secret("cb", {"username": "u", "password": "p" * 12}, labelled=False)
    runtime = await start_operator(resync_seconds=PERIOD)
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: ready(cluster, "qos"))
    await eventually(lambda: runtime.sweep.sweeps >= 2, timeout=3 * PERIOD + 2)

    assert runtime.secrets.cached() == {(NAMESPACE, "thingspace-credentials"), (NAMESPACE, "cb")}
    reads = operator_secret_reads(k8s)
    collections = {(selector, namespace) for selector, namespace, name in reads if name is None}
    assert collections == {(CREDENTIALS_SELECTOR, None)}  # one filtered watch, all namespaces
    by_name = {(namespace, name) for _, namespace, name in reads if name is not None}
    assert by_name <= {(NAMESPACE, "thingspace-credentials"), (NAMESPACE, "cb")}


async def test_namespaces_and_crds_of_the_cluster_are_never_asked_for(
    start_operator: OperatorFactory, cluster: Cluster, k8s: KubernetesEmulator
) -> None:
    """Thousands of namespaces, CRDs or Events cost the operator nothing: it never lists or
    watches them (on the real API server, the RBAC test shows the same: nothing of the kind
    is granted, and no request was denied)."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    # Every GET (list, watch, read) here is the operator's: the test reads the store directly.
    operator_reads = {  # discovery requests name no resource
        plural for (method, plural) in k8s.resource_counts or () if method == "GET" and plural
    }
    # Its own two kinds (ThingSpaceAccounts are listed at start-up) and Secrets.
    assert operator_reads == {"thingspacecallbacks", "thingspaceaccounts", "secrets"}


async def test_namespaced_operator_watches_only_its_namespaces(
    start_operator: OperatorFactory, cluster: Cluster, k8s: KubernetesEmulator
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(namespaces=(NAMESPACE, "other"))
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    collections = {
        (selector, namespace)
        for selector, namespace, name in operator_secret_reads(k8s)
        if name is None
    }
    # And its own namespace ("default" here), where ThingSpaceAccounts keep credentials.
    assert collections == {
        (CREDENTIALS_SELECTOR, NAMESPACE),
        (CREDENTIALS_SELECTOR, "other"),
        (CREDENTIALS_SELECTOR, "default"),
    }


@pytest.mark.parametrize("labelled", [True, False], ids=["labelled", "unlabelled"])
async def test_secret_lifecycle_heals_within_its_bound(
    start_operator: OperatorFactory,
    cluster: Cluster,
    sim: SimulatorServer,
    labelled: bool,
) -> None:
    """Created after its callback, rotated, deleted and recreated. A labelled Secret heals
    at once (the drift period is a minute: only the watch can do it in time); an
    unlabelled one within one drift period."""
    period = 60.0 if labelled else PERIOD
    bound = 5.0 if labelled else WITHIN_ONE_PERIOD
    await start_operator(resync_seconds=period)
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "first-pass"}, labelled=labelled
    )
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: reason(cluster, "qos") == "CredentialsNotFound")

    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS, labelled=labelled)
    await eventually(lambda: ready(cluster, "qos"), timeout=bound, what="created")

    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "second-pass"}, labelled=labelled
    )
    await eventually(lambda: live_password(sim) == "second-pass", timeout=bound, what="rotated")

    await cluster.delete_secret("cb")
    await eventually(lambda: reason(cluster, "qos") == "CredentialsNotFound", timeout=bound)
    assert live_password(sim) == "second-pass"  # the registration is left alone

    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "third-pass"}, labelled=labelled
    )
    await eventually(lambda: live_password(sim) == "third-pass", timeout=bound, what="recreated")
    await eventually(lambda: reason(cluster, "qos") == "ReconcileSuccess", timeout=bound)


async def test_removing_the_label_falls_back_to_reading_each_period(
    start_operator: OperatorFactory, cluster: Cluster, sim: SimulatorServer
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await cluster.apply_secret("cb", {"username": "listener", "password": "first-pass"})
    runtime = await start_operator(resync_seconds=PERIOD)
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: live_password(sim) == "first-pass")

    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "first-pass"}, labelled=False
    )
    await eventually(
        lambda: (NAMESPACE, "cb") in runtime.secrets.unwatched(), timeout=WITHIN_ONE_PERIOD
    )
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "second-pass"}, labelled=None
    )
    await eventually(lambda: live_password(sim) == "second-pass", timeout=WITHIN_ONE_PERIOD)


async def test_a_secret_that_becomes_referenced_by_a_spec_change_is_used(
    operator: Runtime, cluster: Cluster, sim: SimulatorServer
) -> None:
    await cluster.apply_secret("old", {"username": "listener", "password": "old-password"})
    await cluster.apply_secret(
        "new", {"username": "listener", "password": "new-password"}, labelled=False
    )
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "old"})
    await eventually(lambda: live_password(sim) == "old-password")
    assert (NAMESPACE, "new") not in operator.secrets.cached()

    await cluster.patch_callback("qos", {"spec": {"callbackCredentialsSecretRef": {"name": "new"}}})
    await eventually(lambda: live_password(sim) == "new-password", timeout=5)


async def test_without_the_watch_no_secret_is_listed_or_watched(
    start_operator: OperatorFactory, cluster: Cluster, k8s: KubernetesEmulator, sim: SimulatorServer
) -> None:
    """secretWatch.enabled=false: the operator needs only ``get`` on Secrets."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await cluster.apply_secret("cb", {"username": "listener", "password": "first-pass"})
    await start_operator(resync_seconds=PERIOD, secret_watch=False)
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: live_password(sim) == "first-pass")
    await cluster.apply_secret("cb", {"username": "listener", "password": "second-pass"})
    await eventually(lambda: live_password(sim) == "second-pass", timeout=WITHIN_ONE_PERIOD)
    assert all(name is not None for _, _, name in operator_secret_reads(k8s))


async def test_startup_fails_clearly_when_the_crd_is_not_served(
    start_operator: OperatorFactory, k8s: KubernetesEmulator
) -> None:
    del k8s.resources["thingspace.io/v1alpha1/thingspacecallbacks"]
    with pytest.raises(Exception) as failure:  # noqa: PT011 - kopf wraps the startup failure
        await start_operator()
    assert "install the CRD" in repr(failure.value.__cause__ or failure.value)


async def test_a_changed_unlabelled_secret_is_read_once_for_all_its_users(
    start_operator: OperatorFactory, cluster: Cluster, k8s: KubernetesEmulator, sim: SimulatorServer
) -> None:
    """The read that found the change serves every resource it asks to reconcile."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS, labelled=False)
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "first-pass"}, labelled=False
    )
    await start_operator(resync_seconds=PERIOD)
    services = ["QoS", "CarrierService", "DeviceUsage", "NiddService", "StateService"]
    for service in services:
        await cluster.create_callback(
            service.lower(), serviceName=service, callbackCredentialsSecretRef={"name": "cb"}
        )
    await eventually(lambda: all(ready(cluster, s.lower()) for s in services))
    reads_before = len(operator_secret_reads(k8s))
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "second-pass"}, labelled=False
    )

    def all_rotated() -> bool:
        live = sim.state.registrations.get(ACCOUNT, {})
        return all(live[s].password == "second-pass" for s in services)

    await eventually(all_rotated, timeout=WITHIN_ONE_PERIOD)
    reads = [name for _, _, name in operator_secret_reads(k8s)[reads_before:] if name == "cb"]
    assert len(reads) <= 2, reads  # the periodic read, and at most one drift check's


async def test_an_unlabelled_change_reaches_even_a_resource_the_sweep_skips(
    start_operator: OperatorFactory, cluster: Cluster, sim: SimulatorServer
) -> None:
    """The once-per-period re-read of unwatched Secrets, not the drift check, carries the
    change: the bound holds for a resource a handler reconciled moments before."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS, labelled=False)
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "first-pass"}, labelled=False
    )
    runtime = await start_operator(resync_seconds=PERIOD)
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: ready(cluster, "qos"))  # the handler is done with it
    runtime.sweep.handled(NAMESPACE, "qos", at=float("inf"))  # never due for a drift check
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": "second-pass"}, labelled=False
    )
    await eventually(lambda: live_password(sim) == "second-pass", timeout=WITHIN_ONE_PERIOD)
