"""The operator end to end: real kopf reactor, emulated Kubernetes API, simulated ThingSpace."""

import asyncio
import json

import aiohttp

from tests.conftest import ACCOUNT, DEMO_CREDENTIALS, Cluster, OperatorFactory, eventually
from thingspace_operator import handlers
from thingspace_operator.kube.listwatch import WatchEvent
from thingspace_operator.model import FINALIZER
from thingspace_operator.reconciler import Runtime
from thingspace_operator.simulator import SimulatorServer

URL = "https://listener.example.com/qos"


async def sim_get(sim: SimulatorServer, path: str) -> object:
    async with aiohttp.ClientSession() as http, http.get(sim.url + path) as response:
        return await response.json()


async def sim_send(sim: SimulatorServer, method: str, path: str, body: object = None) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, sim.url + path, json=body) as response,
    ):
        assert response.status < 300, await response.text()


def live(sim: SimulatorServer, service: str = "QoS", account: str = ACCOUNT):
    return sim.state.registrations.get(account, {}).get(service)


def ready(cluster: Cluster, name: str) -> bool:
    return cluster.condition(name, "Ready").get("status") == "True"


async def test_create_registers_and_reports_ready(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"), what="Ready")

    assert live(sim).url == URL
    obj = cluster.callback("qos-events")
    status = obj["status"]
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert status["observedGeneration"] == 1
    assert status["registration"] == {"url": URL, "hasCallbackCredentials": False}
    assert status["lastSyncTime"].endswith("Z")
    synced = cluster.condition("qos-events", "Synced")
    assert (synced["status"], synced["reason"]) == ("True", "ReconcileSuccess")
    assert cluster.condition("qos-events", "Ready")["reason"] == "Registered"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    await eventually(lambda: "Registered" in cluster.event_reasons("qos-events"))
    # Of kopf's bookkeeping, only the handled configuration is in status (it rides on the
    # status patch instead of a PATCH of its own), and it is the spec, nothing secret.
    assert json.loads(status["lastHandledConfiguration"])["spec"] == obj["spec"]
    assert set(status) <= {
        "lastHandledConfiguration",
        "observedGeneration",
        "conditions",
        "registration",
        "accountName",
        "lastSyncTime",
        "lastHandledReconcileAt",
    }
    assert status["accountName"] == ACCOUNT


async def test_url_update_reregisters(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    ready_since = cluster.condition("qos-events", "Ready")["lastTransitionTime"]

    new_url = "https://listener.example.com/qos-v2"
    await cluster.patch_callback("qos-events", {"spec": {"url": new_url}})
    await eventually(
        lambda: cluster.callback("qos-events")["status"]["observedGeneration"] == 2,
        what="generation 2 observed",
    )
    assert live(sim).url == new_url
    assert cluster.callback("qos-events")["status"]["registration"]["url"] == new_url
    # Ready stayed True, so its transition time did not move.
    assert cluster.condition("qos-events", "Ready")["lastTransitionTime"] == ready_since


async def test_drift_is_corrected(start_operator: OperatorFactory, cluster: Cluster, sim) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO)
    await start_operator(resync_seconds=0.5)
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))

    await sim_send(
        sim, "PUT", f"/_sim/registrations/{ACCOUNT}/QoS", {"url": "https://evil.example/"}
    )
    await eventually(lambda: live(sim).url == URL, what="drift corrected")
    await eventually(lambda: "DriftCorrected" in cluster.event_reasons("qos-events"))

    await sim_send(sim, "DELETE", f"/_sim/registrations/{ACCOUNT}/QoS")
    await eventually(lambda: live(sim) is not None and live(sim).url == URL, what="re-registered")


async def test_where_thingspace_refuses_a_second_post_a_change_replaces_the_registration(
    start_operator: OperatorFactory, cluster: Cluster, sim
) -> None:
    """Whether ThingSpace replaces a registration on a second POST is not documented (the
    reference, 3.4): where it answers "already registered", the operator deregisters and
    registers again, for a spec change and for a drift correction alike."""
    await sim_send(sim, "PUT", "/_sim/config", {"duplicate_register": "reject"})
    await cluster.apply_secret("thingspace-credentials", DEMO)
    await start_operator(resync_seconds=0.5)
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))

    new_url = "https://listener.example.com/qos-v2"
    await cluster.patch_callback("qos-events", {"spec": {"url": new_url}})
    await eventually(lambda: live(sim).url == new_url, what="the URL replaced")
    await eventually(lambda: ready(cluster, "qos-events"), what="Ready for the new URL")
    assert cluster.condition("qos-events", "Synced")["reason"] == "ReconcileSuccess"

    await sim_send(
        sim, "PUT", f"/_sim/registrations/{ACCOUNT}/QoS", {"url": "https://evil.example/"}
    )
    await eventually(lambda: live(sim).url == new_url, what="drift corrected")


async def test_a_refused_change_leaves_the_live_registration_alone(
    operator, cluster: Cluster, sim
) -> None:
    """Only "already registered" leads to a deregistration: any other refusal (here a
    port ThingSpace does not deliver to) keeps the registration that works."""
    await sim_send(sim, "PUT", "/_sim/config", {"duplicate_register": "reject"})
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    await cluster.patch_callback(
        "qos-events", {"spec": {"url": "https://listener.example.com:8444/qos"}}
    )
    await eventually(lambda: cluster.condition("qos-events", "Synced").get("reason") == "Rejected")
    assert live(sim).url == URL
    counts = sim.state.request_counts
    assert sum(n for (endpoint, _, _), n in counts.items() if endpoint == "deregister") == 0


async def test_delete_deregisters_and_releases(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))

    await cluster.delete_callback("qos-events")
    await eventually(lambda: cluster.callback("qos-events") is None, what="finalizer released")
    assert live(sim) is None
    await eventually(lambda: "Deregistered" in cluster.event_reasons("qos-events"))


async def test_orphan_policy_leaves_registration(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events", deletionPolicy="Orphan")
    await eventually(lambda: ready(cluster, "qos-events"))

    await cluster.delete_callback("qos-events")
    await eventually(lambda: cluster.callback("qos-events") is None)
    assert live(sim).url == URL
    await eventually(lambda: "Orphaned" in cluster.event_reasons("qos-events"))


async def test_delete_skips_registration_changed_out_of_band(
    operator, cluster: Cluster, sim
) -> None:
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    other = "https://someone-else.example.com/qos"
    await sim_send(sim, "PUT", f"/_sim/registrations/{ACCOUNT}/QoS", {"url": other})

    await cluster.delete_callback("qos-events")
    await eventually(lambda: cluster.callback("qos-events") is None)
    assert live(sim).url == other
    await eventually(lambda: "DeregistrationSkipped" in cluster.event_reasons("qos-events"))


async def test_delete_when_already_gone_succeeds(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    await sim_send(sim, "DELETE", f"/_sim/registrations/{ACCOUNT}/QoS")

    await cluster.delete_callback("qos-events")
    await eventually(lambda: cluster.callback("qos-events") is None)
    assert live(sim) is None


async def test_callback_credentials_are_registered_not_reported(
    operator, cluster: Cluster, sim
) -> None:
    await cluster.apply_secret("qos-listener-auth", {"username": "listener", "password": "pw-1"})
    await cluster.create_callback(
        "qos-events", callbackCredentialsSecretRef={"name": "qos-listener-auth"}
    )
    await eventually(lambda: ready(cluster, "qos-events"))
    registered = live(sim)
    assert (registered.username, registered.password) == ("listener", "pw-1")
    status = cluster.callback("qos-events")["status"]
    assert status["registration"] == {"url": URL, "hasCallbackCredentials": True}
    assert "pw-1" not in str(cluster.callback("qos-events"))


async def test_two_services_share_one_session(operator, cluster: Cluster, sim) -> None:
    await cluster.create_callback("qos-events")
    await cluster.create_callback(
        "carrier", serviceName="CarrierService", url="https://listener.example.com/carrier"
    )
    await eventually(lambda: ready(cluster, "qos-events") and ready(cluster, "carrier"))
    counts = await sim_get(sim, "/_sim/requests")
    by_endpoint: dict[str, int] = {}
    for row in counts["counts"]:
        by_endpoint[row["endpoint"]] = by_endpoint.get(row["endpoint"], 0) + row["count"]
    assert by_endpoint["token"] == 1
    assert by_endpoint["login"] == 1


DEMO = {
    "appKey": "demo-app-key",
    "appSecret": "demo-app-secret",
    "username": "demo-user",
    "password": "demo-password",
}


async def test_drift_checks_that_find_nothing_write_nothing(
    start_operator: OperatorFactory, cluster: Cluster, sim
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO)
    await start_operator(resync_seconds=0.3)
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    await eventually(lambda: _calls(sim, "list") >= 2, what="first drift check")
    versions = len(
        cluster.k8s.objects[
            "thingspace.io/v1alpha1/thingspacecallbacks", "iot", "qos-events"
        ].history
    )
    lists = _calls(sim, "list")
    await eventually(lambda: _calls(sim, "list") >= lists + 4, what="four more drift checks")
    assert (
        len(
            cluster.k8s.objects[
                "thingspace.io/v1alpha1/thingspacecallbacks", "iot", "qos-events"
            ].history
        )
        == versions
    )


def _calls(sim: SimulatorServer, endpoint: str) -> int:
    return sum(n for (name, _, _), n in sim.state.request_counts.items() if name == endpoint)


async def test_a_resource_deleted_unseen_leaves_the_drift_checks(
    start_operator: OperatorFactory, cluster: Cluster, sim
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO)
    runtime = await start_operator(resync_seconds=0.3)
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))
    assert len(runtime.sweep) == 1

    # The object vanishes without a watch event (as across a watch gap) and ThingSpace
    # drifts: the next check asks for a reconcile, learns the object is gone, forgets it.
    stored = cluster.k8s.objects._objects
    del stored[next(key for key in stored if "qos-events" in key)]
    await sim_send(
        sim, "PUT", f"/_sim/registrations/{ACCOUNT}/QoS", {"url": "https://evil.example/"}
    )
    await eventually(lambda: len(runtime.sweep) == 0, what="forgotten by the sweep")
    # ... and by the inventory: its claim would keep any younger claimant in Conflict.
    assert (ACCOUNT, "QoS") not in runtime.inventory.claims
    # ... and by the gauges, which counted it Ready.
    registry = runtime.metrics.registry
    ready_now = registry.get_sample_value(
        "thingspace_callbacks", {"condition": "Ready", "status": "True", "reason": "Registered"}
    )
    assert not ready_now
    assert not registry.get_sample_value("thingspace_registrations_managed")
    assert live(sim).url == "https://evil.example/"  # nothing written for a resource gone


async def test_a_deletion_waits_until_the_operators_own_watch_shows_it(
    start_operator: OperatorFactory, cluster: Cluster, sim, monkeypatch, caplog
) -> None:
    """Ownership at a deletion is decided from the operator's own watch, which may lag
    kopf's: until it shows the deletion (and with it every older claim), nothing is
    deregistered; the deletion is retried and finishes once the watch catches up."""
    monkeypatch.setattr(handlers, "SHOWN_WAIT", 0.2)
    flowing = asyncio.Event()
    flowing.set()
    real = Runtime._callback_changed

    async def gated(self: Runtime, event: WatchEvent) -> None:
        await flowing.wait()
        await real(self, event)

    monkeypatch.setattr(Runtime, "_callback_changed", gated)
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    await cluster.create_callback("qos-events")
    await eventually(lambda: ready(cluster, "qos-events"))

    flowing.clear()  # the operator's watch stalls; kopf's goes on
    await cluster.delete_callback("qos-events")
    await eventually(lambda: "to show the deletion" in caplog.text, what="the deletion waiting")
    assert live(sim).url == URL
    assert cluster.callback("qos-events") is not None

    flowing.set()
    await eventually(lambda: cluster.callback("qos-events") is None, what="finalizer released")
    assert live(sim) is None


async def test_a_deletion_leaves_the_registration_to_a_newcomer_that_took_it_meanwhile(
    start_operator: OperatorFactory, cluster: Cluster, sim
) -> None:
    """Ownership is asked again under the registration's lock: a resource created while an
    older one was being deleted, declaring the same registration at the same URL, owns it
    once it is known (it found it in sync and reports Ready); the deletion must not take
    it away from under it."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    runtime = await start_operator()
    await cluster.create_callback("qos-leaving")
    await eventually(lambda: ready(cluster, "qos-leaving"))

    async with runtime.lock_for(ACCOUNT, "QoS"):  # the deletion decides, then waits here
        await cluster.delete_callback("qos-leaving")
        lock = runtime.locks[(ACCOUNT, "QoS")]
        await eventually(lambda: bool(lock._waiters), what="the deletion waiting for the lock")
        await cluster.create_callback("qos-arriving")
        claims = runtime.inventory.claims
        await eventually(
            lambda: any(c.name == "qos-arriving" for c in claims.get((ACCOUNT, "QoS"), ())),
            what="the newcomer known",
        )
    await eventually(lambda: cluster.callback("qos-leaving") is None, what="deletion done")
    await eventually(lambda: ready(cluster, "qos-arriving"))
    assert live(sim).url == URL
    counts = sim.state.request_counts
    assert sum(n for (endpoint, _, _), n in counts.items() if endpoint == "deregister") == 0
