"""What happens around the operator: helm upgrade, uninstall and reinstall; the API server
restarting; watches expiring after etcd compaction. Each keeps every registration exactly
once."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    CRD,
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    eventually,
    needs_control,
    remove_test_objects,
    secret_manifest,
    settled,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster, ControlPlane

ACCOUNT = "0000424242-00001"
SINGLE = ("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")


@dataclass
class Setup:
    plane: Cluster
    sim: Simulator
    release: Release
    namespace: str
    workdir: Path
    operator: OperatorProcess | None = None

    def start_operator(self, **env: str) -> OperatorProcess:
        self.operator = OperatorProcess(self.release, self.sim, self.workdir, **env).start()
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None


@pytest.fixture
def setup(plane: Cluster, sim: Simulator, tmp_path: Path) -> Iterator[Setup]:
    release = Release(plane, unique("thingspace-system"), name=unique("tso"))
    # One process surviving an API server restart is what these tests are about: with
    # leader election, an outage longer than the renew deadline ends the leader on purpose
    # (tests/e2e/test_leader_election.py covers that).
    release.install("--set", "thingspace.resyncSeconds=2", *SINGLE)
    namespace = unique("team")
    plane.kubectl("create", "namespace", namespace)
    apply(plane, secret_manifest("thingspace-credentials", namespace, DEMO_CREDENTIALS))
    state = Setup(plane, sim, release, namespace, tmp_path)
    state.start_operator()
    try:
        yield state
    finally:
        remove_test_objects(
            plane, [namespace], release.namespace, operator_running=state.operator is not None
        )
        state.stop_operator()
        release.helm("uninstall", release.name, "--namespace", release.namespace, check=False)


def env_of(release: Release) -> dict[str, str]:
    container = release.deployment()["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def test_helm_upgrade_rolls_the_new_configuration(setup: Setup) -> None:
    before = setup.release.deployment()
    setup.release.upgrade("--set", "thingspace.resyncSeconds=7", "--set", "logging.level=DEBUG")
    after = setup.release.deployment()
    assert after["metadata"]["generation"] > before["metadata"]["generation"]  # a rollout
    assert env_of(setup.release)["THINGSPACE_RESYNC_SECONDS"] == "7"
    setup.stop_operator()
    operator = setup.start_operator()  # the new pod
    assert operator.env["THINGSPACE_LOG_LEVEL"] == "DEBUG"
    apply(setup.plane, callback_manifest("qos", setup.namespace, ACCOUNT))
    wait_ready(setup.plane, setup.namespace, "qos")
    assert '"severity": "debug"' in operator.log()  # the chart's pods log JSON


def test_uninstall_keeps_everything_and_reinstall_adopts_without_writes(setup: Setup) -> None:
    plane, sim, namespace = setup.plane, setup.sim, setup.namespace
    account = "0000515151-00001"
    apply(plane, callback_manifest("qos", namespace, account))
    wait_ready(plane, namespace, "qos")

    setup.stop_operator()  # its pod goes with the release
    setup.release.uninstall()
    assert plane.kubectl("get", "crd", CRD).returncode == 0
    assert plane.kubectl_json("-n", namespace, "get", "tscb", "qos")["spec"]["accountName"]
    assert sim.live(account)["QoS"]["url"].endswith("/qos")
    gone = plane.kubectl(
        "-n", setup.release.namespace, "get", "serviceaccount", setup.release.service_account,
        check=False,
    )  # fmt: skip
    assert gone.returncode != 0

    writes, lists = sim.writes(), sim.calls("list")
    setup.release.install("--set", "thingspace.resyncSeconds=2", *SINGLE)  # the same again
    setup.start_operator()
    # Two lists: the resume handler's, then a drift sweep's a period later. A write, if
    # any, would have followed the first.
    eventually(lambda: sim.calls("list") >= lists + 2, 30, "the operator looked again")
    assert sim.writes() == writes
    assert settled(plane, namespace, "qos")


def test_operator_survives_an_api_server_restart(setup: Setup) -> None:
    plane, sim, namespace = setup.plane, setup.sim, setup.namespace
    needs_control(plane)
    account = "0000616161-00001"
    apply(plane, callback_manifest("before", namespace, account))
    wait_ready(plane, namespace, "before")

    assert isinstance(plane, ControlPlane)
    plane.stop_apiserver()
    plane.start_apiserver()

    apply(plane, callback_manifest("after", namespace, account, serviceName="DeviceUsage"))
    wait_ready(plane, namespace, "after")
    assert setup.operator is not None
    assert setup.operator.healthy()  # the same process, never restarted
    assert set(sim.live(account)) == {"QoS", "DeviceUsage"}


def test_expired_watches_resume_without_loss_or_duplicates(setup: Setup) -> None:
    """etcd compacted while the API server was down: every watch resumes from a version
    that no longer exists, gets 410 Gone and lists again."""
    plane, sim, namespace = setup.plane, setup.sim, setup.namespace
    needs_control(plane)
    assert isinstance(plane, ControlPlane)
    setup.stop_operator()
    operator = setup.start_operator(THINGSPACE_LOG_LEVEL="DEBUG")  # kopf logs a 410 at DEBUG
    account = "0000717171-00001"
    listener = {"username": "listener", "password": "first-password"}
    apply(
        plane,
        secret_manifest("listener-auth", namespace, listener),
        callback_manifest(
            "qos", namespace, account, callbackCredentialsSecretRef={"name": "listener-auth"}
        ),
    )
    wait_ready(plane, namespace, "qos")
    for index in range(5):  # history the operator never watched, then compacted away
        plane.kubectl("-n", namespace, "create", "configmap", f"filler-{index}")
    registers = sim.calls("register")

    plane.stop_apiserver()
    plane.compact_etcd()
    plane.start_apiserver()

    apply(
        plane,
        secret_manifest("listener-auth", namespace, {**listener, "password": "second-pass"}),
        callback_manifest("usage", namespace, account, serviceName="DeviceUsage"),
    )
    eventually(lambda: sim.live(account)["QoS"]["password"] == "second-pass", 60, "rotation")
    wait_ready(plane, namespace, "usage")
    lists = sim.calls("list")
    eventually(lambda: sim.calls("list") >= lists + 2, 30, "two more drift sweeps")
    assert sim.calls("register") == registers + 2  # one each: nothing lost, nothing twice
    log = operator.log()
    assert "Restarting the watch-stream" in log  # kopf's word for a 410 Gone: it happened
    for secret in ("first-password", "second-pass", DEMO_CREDENTIALS["password"]):
        assert secret not in log
        assert base64.b64encode(secret.encode()).decode() not in log  # DEBUG hides them too
