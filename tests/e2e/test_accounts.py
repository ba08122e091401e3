"""ThingSpaceAccount on a real API server, beyond the lifecycle: a rejected login is made
once and reported on the account; a team moves its callbacks to an account with no
ThingSpace write."""

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    condition,
    events,
    eventually,
    remove_test_objects,
    secret_manifest,
    settled,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.test_lifecycle import account_manifest, by_ref

RESYNC_SECONDS = 2


@dataclass
class Setup:
    plane: Cluster
    sim: Simulator
    release: Release
    team: str
    operator: OperatorProcess

    def requested_reconciles(self) -> float:
        """Successful reconciles asked for outside the drift sweep (an account or Secret
        change, or a user's annotation), from the operator's metrics."""
        return self.reconciles("requested")

    def reconciles(self, trigger: str) -> float:
        """Successful reconciles by ``trigger`` since the operator process started."""
        url = f"http://127.0.0.1:{self.operator.env['THINGSPACE_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        wanted = (f'trigger="{trigger}"', 'result="ReconcileSuccess"')
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("thingspace_reconciles_total{") and all(w in line for w in wanted)
        )


@pytest.fixture(scope="module")
def setup(
    plane: Cluster, sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("accounts-system"), name=unique("tso"))
    release.install("--set", f"thingspace.resyncSeconds={RESYNC_SECONDS}")
    operator = OperatorProcess(release, sim, tmp_path_factory.mktemp("operator")).start()
    try:
        yield Setup(plane, sim, release, team, operator)
    finally:
        remove_test_objects(plane, [team], release.namespace, operator_running=True)
        operator.stop()
        release.uninstall()


def test_a_rejected_login_is_made_once_and_fixing_the_secret_heals_at_once(setup: Setup) -> None:
    plane, sim, team = setup.plane, setup.sim, setup.team
    # A healthy callback: its drift check lists its account once per period, a clock.
    apply(plane, secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS))
    apply(plane, callback_manifest("heartbeat", team, "0000551155-00001"))
    wait_ready(plane, team, "heartbeat")
    wrong = {**DEMO_CREDENTIALS, "username": "platform-user", "password": "not-the-password"}
    apply(plane, secret_manifest("platform-credentials", setup.release.namespace, wrong))
    account = unique("rejected")
    manifest = account_manifest(account, "0000661166-00001", setup.release.namespace, "x")
    manifest["spec"]["namespaces"] = [team]
    apply(
        plane,
        manifest,
        by_ref("qos-rejected", team, account, "QoS"),
        by_ref("usage-rejected", team, account, "DeviceUsage"),
    )

    def ready_reason() -> str:
        status = plane.kubectl_json("get", "tsa", account).get("status") or {}
        return str((status.get("conditions") or [{}])[0].get("reason", ""))

    eventually(lambda: ready_reason() == "AuthenticationFailed", 30, "the account reports it")
    for name in ("qos-rejected", "usage-rejected"):
        synced = eventually(lambda n=name: condition(plane, team, n, "Synced"), 30)
        assert synced["reason"] == "AuthenticationFailed"
        assert f"ThingSpaceAccount {account}" in synced["message"]
    lists = sim.calls("list")
    eventually(lambda: sim.calls("list") >= lists + 2, RESYNC_SECONDS * 3 + 20, "two periods")
    assert sim.request("GET", "logins")["failed"] == {"platform-user": 1}

    # Fixing the account's Secret (labelled, so watched) heals its callbacks at once.
    requested = setup.requested_reconciles()
    apply(plane, secret_manifest("platform-credentials", setup.release.namespace, DEMO_CREDENTIALS))
    for name in ("qos-rejected", "usage-rejected"):
        wait_ready(plane, team, name)
    assert setup.requested_reconciles() > requested, "healed by a drift check, not the change"
    eventually(lambda: ready_reason() == "Authenticated", RESYNC_SECONDS + 20, "account Ready")
    for name in ("qos-rejected", "usage-rejected", "heartbeat"):
        plane.kubectl("-n", team, "delete", "tscb", name, "--timeout=60s")
    plane.kubectl("delete", "tsa", account)


def test_moving_a_callback_to_an_account_writes_nothing_to_thingspace(setup: Setup) -> None:
    plane, sim, team = setup.plane, setup.sim, setup.team
    account_name = "0000771177-00001"
    apply(plane, secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS))
    apply(plane, callback_manifest("qos-moving", team, account_name))
    wait_ready(plane, team, "qos-moving")
    writes, lists = sim.writes(), sim.calls("list")

    apply(plane, secret_manifest("platform-credentials", setup.release.namespace, DEMO_CREDENTIALS))
    account = unique("fleet")
    manifest = account_manifest(account, account_name, setup.release.namespace, "x")
    manifest["spec"]["namespaces"] = [team]
    moved = by_ref("qos-moving", team, account, "QoS")
    moved["spec"]["url"] = "https://listener.example.com/qos-moving"  # unchanged
    apply(plane, manifest, moved)
    eventually(lambda: settled(plane, team, "qos-moving"), 30, "the moved callback handled")
    eventually(lambda: sim.calls("list") >= lists + 2, 30, "the operator looked again")
    assert sim.writes() == writes
    moved_obj = plane.kubectl_json("-n", team, "get", "tscb", "qos-moving")
    assert "accountName" not in moved_obj["spec"]
    assert moved_obj["spec"]["accountRef"] == {"name": account}
    assert moved_obj["status"]["accountName"] == account_name

    # accountRef and an account's accountName are immutable, but an account can be
    # deleted and created again for another billing account: the callback would leave its
    # registration behind, so the change is refused, with no ThingSpace write.
    plane.kubectl("delete", "tsa", account)
    recreated = account_manifest(account, "0000991199-00001", setup.release.namespace, "x")
    recreated["spec"]["namespaces"] = [team]
    writes = sim.writes()
    apply(plane, recreated)
    eventually(
        lambda: condition(plane, team, "qos-moving", "Synced").get("reason") == "InvalidSpec",
        RESYNC_SECONDS + 20,
        "an account change refused",
    )
    assert "cannot change" in condition(plane, team, "qos-moving", "Synced")["message"]
    assert sim.writes() == writes

    # Deleted as the message advises, with deletionPolicy Delete: the registration in the
    # account it now names was never its own, even at the same URL, and its own
    # registration is out of its reach. Both stay, and an Event says so.
    other = "0000991199-00001"
    sim.request("PUT", f"registrations/{other}/QoS", {"url": moved["spec"]["url"]})
    writes = sim.writes()
    plane.kubectl("-n", team, "delete", "tscb", "qos-moving", "--timeout=60s")
    assert "QoS" in sim.live(other), "a registration in another account was deregistered"
    assert "QoS" in sim.live(account_name)
    assert sim.writes() == writes
    eventually(
        lambda: "DeregistrationSkipped" in events(plane, team, "qos-moving"), 10, "the Event"
    )
    plane.kubectl("delete", "tsa", account)


def test_a_callback_heals_as_soon_as_its_account_allows_its_namespace(setup: Setup) -> None:
    """The account's change asks its callbacks to reconcile (the annotation a user would
    set): no waiting for a drift check."""
    plane, team = setup.plane, setup.team
    apply(plane, secret_manifest("platform-credentials", setup.release.namespace, DEMO_CREDENTIALS))
    account = unique("closed")
    manifest = account_manifest(account, "0000881188-00001", setup.release.namespace, "x")
    apply(plane, manifest, by_ref("qos-waiting", team, account, "QoS"))
    eventually(
        lambda: (
            condition(plane, team, "qos-waiting", "Synced").get("reason") == "AccountNotAllowed"
        ),
        30,
        "refused",
    )
    requested = setup.requested_reconciles()
    manifest["spec"]["namespaces"] = [team]
    apply(plane, manifest)
    wait_ready(plane, team, "qos-waiting")
    assert setup.requested_reconciles() > requested, "healed by a drift check, not the change"
    plane.kubectl("-n", team, "delete", "tscb", "qos-waiting", "--timeout=60s")
    plane.kubectl("delete", "tsa", account)


def test_a_restart_asks_no_callback_of_an_account_to_reconcile(setup: Setup) -> None:
    """The restarted operator lists every account before kopf shows it again: that first
    sight is no change, so its callbacks are checked by the first sweep only, with no
    Kubernetes write and no ThingSpace write."""
    plane, sim, team = setup.plane, setup.sim, setup.team
    apply(plane, secret_manifest("platform-credentials", setup.release.namespace, DEMO_CREDENTIALS))
    account = unique("steady")
    manifest = account_manifest(account, "0000991199-00002", setup.release.namespace, "x")
    manifest["spec"]["namespaces"] = [team]
    services = {"qos-steady": "QoS", "usage-steady": "DeviceUsage"}
    names = tuple(services)
    apply(plane, manifest, *(by_ref(n, team, account, s) for n, s in services.items()))
    for name in names:
        wait_ready(plane, team, name)
        eventually(lambda n=name: settled(plane, team, n), 30, "handled")

    def versions() -> list[str]:
        return [
            plane.kubectl_json("-n", team, "get", "tscb", n)["metadata"]["resourceVersion"]
            for n in names
        ]

    before, writes, lists = versions(), sim.writes(), sim.calls("list")
    setup.operator.stop()
    setup.operator.start()
    eventually(lambda: setup.reconciles("resume") >= len(names), 30, "both resumed")
    eventually(lambda: sim.calls("list") >= lists + 3, RESYNC_SECONDS * 3 + 20, "two periods")
    assert setup.requested_reconciles() == 0
    assert versions() == before  # not even the reconcile-now annotation
    assert sim.writes() == writes
    for name in names:
        plane.kubectl("-n", team, "delete", "tscb", name, "--timeout=60s")
    plane.kubectl("delete", "tsa", account)
