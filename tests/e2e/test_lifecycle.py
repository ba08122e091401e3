"""The whole lifecycle on a real kube-apiserver, in cluster-wide mode and in `--namespace`
mode (watchNamespaces), with the chart installed by helm and the operator holding only the
permissions the chart grants. The last test of each mode compares the RBAC the chart grants
with what the operator used, from the API server's audit log."""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    LABEL,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    condition,
    events,
    eventually,
    needs_control,
    remove_test_objects,
    secret_manifest,
    settled,
    status_of,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.rbac import granted_rules, unused_grants, used_requests

RESYNC_SECONDS = 2
NAMESPACES_PER_MODE = 16


@dataclass
class Installation:
    plane: Cluster
    sim: Simulator
    release: Release
    operator: OperatorProcess
    namespaces: list[str]
    unwatched: str
    mode: str
    _next: int = 0
    accounts: set[str] = field(default_factory=set)

    def namespace(self) -> str:
        """A namespace no other test has used, with the credentials Secret in it."""
        namespace = self.namespaces[self._next]
        self._next += 1
        apply(self.plane, secret_manifest("thingspace-credentials", namespace, DEMO_CREDENTIALS))
        return namespace

    def account(self) -> str:
        while True:
            account = f"{random.randrange(10**10):010d}-00001"
            if account not in self.accounts:
                self.accounts.add(account)
                return account


@pytest.fixture(scope="module", params=["cluster-wide", "namespaced"])
def installed(
    request: pytest.FixtureRequest,
    plane: Cluster,
    sim: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    mode = request.param
    namespaces = [unique("team") for _ in range(NAMESPACES_PER_MODE)]
    unwatched = unique("elsewhere")
    for namespace in [*namespaces, unwatched]:
        plane.kubectl("create", "namespace", namespace)
    release = Release(plane, unique("thingspace-system"), name=unique("tso"))
    values = ["--set", f"thingspace.resyncSeconds={RESYNC_SECONDS}"]
    if mode == "namespaced":
        values += ["--set", "watchNamespaces={" + ",".join(namespaces) + "}"]
    release.install(*values)
    operator: OperatorProcess | None = None
    try:
        workdir = tmp_path_factory.mktemp(f"operator-{mode}")
        operator = OperatorProcess(release, sim, workdir).start()
        yield Installation(plane, sim, release, operator, namespaces, unwatched, mode)
    finally:
        running = operator is not None
        remove_test_objects(plane, [*namespaces, unwatched], release.namespace, running)
        if operator is not None:
            operator.stop()
        release.uninstall()


def test_create_update_drift_and_delete(installed: Installation) -> None:
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.namespace(), installed.account()
    apply(plane, callback_manifest("qos", namespace, account))
    wait_ready(plane, namespace, "qos")
    assert sim.live(account)["QoS"]["url"] == "https://listener.example.com/qos"

    apply(plane, callback_manifest("qos", namespace, account, url="https://new.example.com/q"))
    eventually(lambda: sim.live(account)["QoS"]["url"] == "https://new.example.com/q", 30)
    eventually(lambda: settled(plane, namespace, "qos"), 30, "update handled")

    sim.request("PUT", f"registrations/{account}/QoS", {"url": "https://rogue.example.com/"})
    eventually(
        lambda: sim.live(account)["QoS"]["url"] == "https://new.example.com/q",
        RESYNC_SECONDS * 2 + 10,
        "drift corrected",
    )
    eventually(lambda: "DriftCorrected" in events(plane, namespace, "qos"), 20)

    plane.kubectl("-n", namespace, "delete", "tscb", "qos", "--timeout=60s")
    assert "QoS" not in sim.live(account)
    assert "Deregistered" in events(plane, namespace)


def with_listener_auth(installed: Installation, password: str) -> tuple[str, str, dict[str, str]]:
    """A callback whose callback credentials come from the labelled Secret listener-auth;
    its namespace, account and the Secret's data, once it is Ready."""
    namespace, account = installed.namespace(), installed.account()
    listener = {"username": "listener", "password": password}
    apply(
        installed.plane,
        secret_manifest("listener-auth", namespace, listener),
        callback_manifest(
            "qos", namespace, account, callbackCredentialsSecretRef={"name": "listener-auth"}
        ),
    )
    wait_ready(installed.plane, namespace, "qos")
    return namespace, account, listener


def test_secret_rotation_reregisters_at_once(installed: Installation) -> None:
    plane, sim = installed.plane, installed.sim
    namespace, account, listener = with_listener_auth(installed, "first-password")
    assert sim.live(account)["QoS"]["password"] == "first-password"
    apply(plane, secret_manifest("listener-auth", namespace, {**listener, "password": "second"}))
    eventually(lambda: sim.live(account)["QoS"]["password"] == "second", 20, "rotation")
    serialized = repr(plane.kubectl_json("-n", namespace, "get", "tscb,events"))
    assert "first-password" not in serialized
    assert "second" not in serialized.replace("seconds", "")


def test_conflict_then_handover(installed: Installation) -> None:
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.namespace(), installed.account()
    apply(plane, callback_manifest("first", namespace, account))
    wait_ready(plane, namespace, "first")
    apply(plane, callback_manifest("second", namespace, account))
    eventually(lambda: condition(plane, namespace, "second", "Ready").get("reason") == "Conflict")
    assert sim.live(account)["QoS"]["url"].endswith("/first")

    plane.kubectl("-n", namespace, "delete", "tscb", "first", "--timeout=60s")
    eventually(lambda: sim.live(account)["QoS"]["url"].endswith("/second"), 30, "handover")
    wait_ready(plane, namespace, "second")


def test_observe_only_and_suspend_make_no_writes(installed: Installation) -> None:
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.namespace(), installed.account()
    sim.request("PUT", f"registrations/{account}/QoS", {"url": "https://by-hand.example.com/"})
    writes = sim.writes()
    apply(
        plane,
        callback_manifest(
            "watcher",
            namespace,
            account,
            managementPolicy="ObserveOnly",
            url="https://by-hand.example.com/",
        ),
        callback_manifest("paused", namespace, account, serviceName="DeviceUsage", suspend=True),
    )
    wait_ready(plane, namespace, "watcher")
    eventually(lambda: condition(plane, namespace, "paused", "Synced").get("reason") == "Suspended")
    assert sim.writes() == writes
    assert "DeviceUsage" not in sim.live(account)


def test_delete_with_orphan_leaves_the_registration(installed: Installation) -> None:
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.namespace(), installed.account()
    apply(plane, callback_manifest("kept", namespace, account, deletionPolicy="Orphan"))
    wait_ready(plane, namespace, "kept")
    plane.kubectl("-n", namespace, "delete", "tscb", "kept", "--timeout=60s")
    assert sim.live(account)["QoS"]["url"].endswith("/kept")
    assert "Orphaned" in events(plane, namespace)


def test_kubectl_experience(installed: Installation) -> None:
    plane = installed.plane
    namespace, account = installed.namespace(), installed.account()
    apply(plane, callback_manifest("qos", namespace, account))
    wait_ready(plane, namespace, "qos")
    table = plane.kubectl("-n", namespace, "get", "tscb").stdout
    header = "NAME ACCOUNT SERVICE URL READY SYNCED LAST SYNC AGE"
    assert " ".join(table.split("\n")[0].split()) == header
    assert account in table
    assert "True" in table
    wide = plane.kubectl("-n", namespace, "get", "tscb", "-o", "wide").stdout
    assert " ".join(wide.split("\n")[0].split()) == f"{header} REASON ACCOUNT REF"
    assert "Registered" in wide
    assert "qos" in plane.kubectl("-n", namespace, "get", "thingspace").stdout  # category
    explained = plane.kubectl("explain", "thingspacecallback.spec.url").stdout
    assert "listener" in explained.lower()
    described = plane.kubectl("-n", namespace, "describe", "tscb", "qos").stdout
    assert "Registered" in described
    assert "Events:" in described


def test_namespaced_mode_leaves_other_namespaces_alone(installed: Installation) -> None:
    if installed.mode != "namespaced":
        pytest.skip("only a namespaced installation ignores namespaces")
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.unwatched, installed.account()
    apply(
        plane,
        secret_manifest("thingspace-credentials", namespace, DEMO_CREDENTIALS),
        callback_manifest("outside", namespace, account),
    )
    control_namespace, control_account = installed.namespace(), installed.account()
    apply(plane, callback_manifest("inside", control_namespace, control_account))
    wait_ready(plane, control_namespace, "inside")  # the operator is at work meanwhile
    assert status_of(plane, namespace, "outside") == {}
    assert account not in sim.request("GET", "registrations")
    plane.kubectl("-n", namespace, "delete", "tscb", "outside", "--wait=false")


def test_the_operator_asks_only_for_secrets_it_uses(installed: Installation) -> None:
    """Issue 11 on a real API server: an unrelated Secret is never requested; Secrets are
    listed and watched only through the label selector; a Secret whose label is removed is
    still followed, once per drift period."""
    plane, sim = installed.plane, installed.sim
    namespace, account, listener = with_listener_auth(installed, "labelled-first")
    apply(plane, secret_manifest("unrelated-blob", namespace, {"blob": "x" * 200_000}, False))
    handled = status_of(plane, namespace, "qos").get("lastHandledReconcileAt")
    plane.kubectl("-n", namespace, "label", "secret", "listener-auth", f"{LABEL}-")
    # The watch reports it gone; the operator reads it by name from then on. Only once
    # that is done does the next change prove the periodic read, not the watch.
    eventually(
        lambda: status_of(plane, namespace, "qos").get("lastHandledReconcileAt") != handled,
        20,
        "the unlabelled Secret re-read",
    )
    apply(
        plane,
        secret_manifest(
            "listener-auth", namespace, {**listener, "password": "unlabelled"}, labelled=False
        ),
    )
    eventually(
        lambda: sim.live(account)["QoS"]["password"] == "unlabelled",
        RESYNC_SECONDS + 15,
        "unlabelled change within a period",
    )

    release = installed.release
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    needs_control(plane)  # the rest reads the audit log
    secrets = [r for r in used_requests(plane.audit_events(), user) if r.resource == "secrets"]
    assert {r.verb for r in secrets} >= {"get"}
    for request in secrets:
        assert request.name != "unrelated-blob"
        if request.verb in ("list", "watch"):
            query = parse_qs(urlsplit(request.uri).query)
            assert query["labelSelector"] == [f"{LABEL}=true"], request
        else:
            assert request.verb == "get"
            assert request.name in (
                "thingspace-credentials",
                "listener-auth",
                "platform-credentials",
            ), request


def test_an_account_shared_with_namespaces_by_label(installed: Installation) -> None:
    """A platform-owned ThingSpaceAccount (credentials in the operator's namespace): a
    labelled namespace uses it without holding any credentials; an unlabelled one is refused
    until labelled; the account's status shows every live registration, including one made
    out of band that nobody manages."""
    plane, sim, release = installed.plane, installed.sim, installed.release
    account_name, tier = installed.account(), unique("tier")
    apply(
        plane, secret_manifest("platform-credentials", release.namespace, DEMO_CREDENTIALS, False)
    )
    sim.request(
        "PUT", f"registrations/{account_name}/DeviceUsage", {"url": "https://by-hand.example/u"}
    )
    account = unique("platform")
    apply(plane, account_manifest(account, account_name, release.namespace, tier))
    allowed, refused = installed.namespace(), installed.namespace()
    plane.kubectl("label", "namespace", allowed, f"tier={tier}")
    apply(
        plane,
        by_ref("qos", allowed, account, "QoS"),
        by_ref("carrier", refused, account, "CarrierService"),
    )
    wait_ready(plane, allowed, "qos")
    eventually(
        lambda: condition(plane, refused, "carrier", "Synced").get("reason") == "AccountNotAllowed",
        30,
        "refused",
    )
    assert set(sim.live(account_name)) == {"QoS", "DeviceUsage"}

    def account_status() -> dict[str, Any]:
        return dict(plane.kubectl_json("get", "tsa", account).get("status") or {})

    eventually(lambda: account_status().get("managed") == 1, RESYNC_SECONDS + 20, "status")
    status = account_status()
    assert status["unmanaged"] == 1
    assert status["conditions"][0]["reason"] == "Authenticated"
    assert sorted((r["serviceName"], r["managedBy"]) for r in status["registrations"]) == [
        ("DeviceUsage", ""),
        ("QoS", f"{allowed}/qos"),
    ]
    columns = plane.kubectl("get", "tsa", account).stdout.split("\n")[0].split()
    assert columns[:5] == ["NAME", "ACCOUNT", "READY", "MANAGED", "UNMANAGED"]

    plane.kubectl("label", "namespace", refused, f"tier={tier}")  # heals within a period
    wait_ready(plane, refused, "carrier")
    assert set(sim.live(account_name)) == {"QoS", "DeviceUsage", "CarrierService"}
    for namespace, name in ((allowed, "qos"), (refused, "carrier")):
        plane.kubectl("-n", namespace, "delete", "tscb", name, "--timeout=60s")
    assert set(sim.live(account_name)) == {"DeviceUsage"}  # the unmanaged one stays
    plane.kubectl("delete", "tsa", account)  # cluster-scoped: the next mode's operator sees it


def test_an_authoritative_account_removes_only_what_nobody_declares(
    installed: Installation,
) -> None:
    """Cluster-wide: an undeclared registration goes (with an Event naming it), a declared
    one and one whose callback is suspended stay. Namespaced: nothing goes, and the account
    says why."""
    plane, sim, release = installed.plane, installed.sim, installed.release
    account_name = installed.account()
    apply(
        plane, secret_manifest("platform-credentials", release.namespace, DEMO_CREDENTIALS, False)
    )
    namespace = installed.namespace()
    for service in ("DeviceUsage", "QoS", "CarrierService"):
        sim.request(
            "PUT", f"registrations/{account_name}/{service}", {"url": "https://by-hand.example/x"}
        )
    account = unique("authoritative")
    manifest = account_manifest(account, account_name, release.namespace, unique("tier"))
    manifest["spec"].update(callbackPolicy="Authoritative", namespaces=[namespace])
    suspended = callback_manifest("carrier", namespace, account_name, serviceName="CarrierService")
    suspended["spec"]["suspend"] = True
    apply(plane, manifest, by_ref("qos", namespace, account, "QoS"), suspended)
    wait_ready(plane, namespace, "qos")
    if installed.mode == "namespaced":
        eventually(
            lambda: "inactive" in str(plane.kubectl_json("get", "tsa", account)["status"]),
            RESYNC_SECONDS + 20,
            "the account says Authoritative is inactive",
        )
        assert set(sim.live(account_name)) == {"DeviceUsage", "QoS", "CarrierService"}
    else:
        eventually(
            lambda: "DeviceUsage" not in sim.live(account_name),
            RESYNC_SECONDS * 4 + 20,
            "the undeclared registration removed",
        )
        lists = sim.calls("list")
        eventually(lambda: sim.calls("list") >= lists + 2, RESYNC_SECONDS * 3 + 20, "a period")
        assert set(sim.live(account_name)) == {"QoS", "CarrierService"}  # still, after it
        messages = [
            item.get("message", "")
            for item in plane.kubectl_json("-n", release.namespace, "get", "events")["items"]
            if item.get("reason") == "Pruned"
        ]
        assert any("DeviceUsage" in m and "https://by-hand.example/x" in m for m in messages)
    for name in ("qos", "carrier"):
        plane.kubectl("-n", namespace, "delete", "tscb", name, "--timeout=60s")
    plane.kubectl("delete", "tsa", account)


def account_manifest(name: str, account: str, secret_namespace: str, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceAccount",
        "metadata": {"name": name},
        "spec": {
            "accountName": account,
            "credentialsSecretRef": {"name": "platform-credentials", "namespace": secret_namespace},
            "namespaceSelector": {"matchLabels": {"tier": tier}},
        },
    }


def by_ref(name: str, namespace: str, account: str, service: str) -> dict[str, Any]:
    manifest = callback_manifest(name, namespace, "unused", serviceName=service)
    del manifest["spec"]["accountName"], manifest["spec"]["credentialsSecretRef"]
    manifest["spec"]["accountRef"] = {"name": account}
    return manifest


def test_a_restart_finishes_a_deletion_and_restores_a_removed_registration(
    installed: Installation,
) -> None:
    """While the operator is stopped, one callback is deleted (its finalizer holds it) and
    another's registration is removed by hand. Restarted, the operator lists its objects
    (namespace by namespace in namespaced mode), deregisters the deleted one once kopf has
    shown every listed object, and registers the other again."""
    plane, sim = installed.plane, installed.sim
    namespace, account = installed.namespace(), installed.account()
    apply(
        plane,
        callback_manifest("qos", namespace, account),
        callback_manifest("usage", namespace, account, serviceName="DeviceUsage"),
    )
    for name in ("qos", "usage"):
        wait_ready(plane, namespace, name)
    installed.operator.stop()
    plane.kubectl("-n", namespace, "delete", "tscb", "usage", "--wait=false")
    sim.request("DELETE", f"registrations/{account}/QoS")

    installed.operator.start()
    eventually(lambda: "QoS" in sim.live(account), 30, "the removed registration restored")
    eventually(lambda: "DeviceUsage" not in sim.live(account), 30, "the deletion finished")

    def names() -> str:
        return plane.kubectl("-n", namespace, "get", "tscb", "-o", "name").stdout

    eventually(lambda: "usage" not in names(), 30, "the finalizer released")
    assert "qos" in names()
    plane.kubectl("-n", namespace, "delete", "tscb", "qos", "--timeout=60s")


def test_rbac_granted_is_rbac_used(installed: Installation) -> None:
    """Run last in each mode: every request of the operator was allowed, and every verb
    the chart grants was used (or is excused, with its reason, in tests/e2e/rbac.py)."""
    needs_control(installed.plane)
    release = installed.release
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    requests = list(used_requests(installed.plane.audit_events(), user))
    assert requests, "the audit log holds no request of the operator"
    denied = [r for r in requests if r.code == 403]
    assert denied == []
    granted = granted_rules(installed.plane, release)
    assert unused_grants(granted, requests) == set()
