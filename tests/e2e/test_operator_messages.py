"""What the operator tells its user, read from a real operator process on a real API
server: no ERROR for a state someone chose, the billing account in every line about a
callback by reference, the Secret named in an AuthenticationFailed message, and the
operator's namespace (found in its kubeconfig's context outside a pod) with why an account
is left to another release.

The operator runs as the "With kubectl only" section describes: one process, no leader
election, so no POD_NAMESPACE; its kubeconfig's context names the release namespace."""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    condition,
    eventually,
    remove_test_objects,
    secret_manifest,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.test_lifecycle import account_manifest, by_ref
from thingspace_operator.runner import SERVICE_ACCOUNT_NAMESPACE

RESYNC_SECONDS = 2
SINGLE = ("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")


@dataclass
class Setup:
    plane: Cluster
    sim: Simulator
    release: Release
    team: str
    operator: OperatorProcess
    accounts: list[str] = field(default_factory=list)

    def lines(self) -> list[dict[str, Any]]:
        """The operator's log so far, one JSON object a line (the chart's format)."""
        return [
            json.loads(line) for line in self.operator.log().splitlines() if line.startswith("{")
        ]

    def about(self, name: str) -> list[dict[str, Any]]:
        """The lines about the callback ``name`` of the team namespace: kopf's (``object``)
        and the operator's own (``[... namespace/name]`` in the message)."""
        return [
            line
            for line in self.lines()
            if (line.get("object") or {}).get("name") == name
            or f" {self.team}/{name}]" in line["message"]
        ]

    def account(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.accounts.append(manifest["metadata"]["name"])
        return manifest

    def known(self, manifest: dict[str, Any]) -> None:
        """Apply an account whose status this operator writes, and wait until it has
        (then its callbacks never find it missing)."""
        apply(self.plane, self.account(manifest))
        name = manifest["metadata"]["name"]
        eventually(lambda: self.account_ready(name).get("status") == "True", 30, "account known")

    def account_status(self, name: str) -> dict[str, Any]:
        return dict(self.plane.kubectl_json("get", "tsa", name).get("status") or {})

    def account_ready(self, name: str) -> dict[str, Any]:
        conditions = self.account_status(name).get("conditions") or [{}]
        return dict(conditions[0])


@pytest.fixture(scope="module")
def setup(
    plane: Cluster, sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    if os.environ.get("POD_NAMESPACE") or SERVICE_ACCOUNT_NAMESPACE.exists():
        pytest.skip("runs the operator as outside a pod: POD_NAMESPACE or a service account")
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("messages-system"), name=unique("tso"))
    release.install(*SINGLE, "--set", f"thingspace.resyncSeconds={RESYNC_SECONDS}")
    operator = OperatorProcess(release, sim, tmp_path_factory.mktemp("operator"))
    assert "POD_NAMESPACE" not in operator.env
    operator.start()
    apply(plane, secret_manifest("platform-credentials", release.namespace, DEMO_CREDENTIALS))
    apply(plane, secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS))
    setup = Setup(plane, sim, release, team, operator)
    try:
        yield setup
    finally:
        remove_test_objects(plane, [team], release.namespace, operator_running=True)
        if setup.accounts:
            plane.kubectl("delete", "tsa", "--ignore-not-found", *setup.accounts, check=False)
        operator.stop()
        release.uninstall()


def handled(plane: Cluster, namespace: str, name: str) -> bool:
    """The current generation has been reconciled (whatever the outcome)."""
    obj = plane.kubectl_json("-n", namespace, "get", "tscb", name)
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def test_outside_a_pod_the_namespace_comes_from_the_kubeconfig_context(setup: Setup) -> None:
    """The start-up line names the namespace and where it came from; an account whose
    credentialsSecretRef names no namespace uses the Secret there and gets its status."""
    plane, namespace = setup.plane, setup.release.namespace
    starts = [line for line in setup.lines() if line["message"].startswith("Operator namespace")]
    assert len(starts) == 1, starts
    assert starts[0]["severity"] == "info"
    assert starts[0]["message"].startswith(
        f"Operator namespace: {namespace} (from the kubeconfig's current context)"
    )
    assert "leaves every other account's status to the release" in starts[0]["message"]

    account = unique("own")
    manifest = setup.account(account_manifest(account, "0000121212-00001", namespace, "x"))
    del manifest["spec"]["credentialsSecretRef"]["namespace"]  # the operator's namespace
    apply(plane, manifest)
    eventually(
        lambda: setup.account_ready(account).get("reason") == "Authenticated",
        30,
        "the account's status, with the Secret of the operator's namespace",
    )


def test_an_account_left_to_another_release_is_said_once_and_why(setup: Setup) -> None:
    """Its Secret is in another namespace: the callbacks using it are served, but the
    account's status is another release's to write. The log says so, once, as a WARNING
    because callbacks this operator reconciles use it."""
    plane, sim, team = setup.plane, setup.sim, setup.team
    account = unique("elsewhere")
    manifest = setup.account(account_manifest(account, "0000131313-00001", team, "x"))
    manifest["spec"]["credentialsSecretRef"]["name"] = "thingspace-credentials"
    manifest["spec"]["namespaces"] = [team]
    apply(plane, manifest, by_ref("served", team, account, "QoS"))
    wait_ready(plane, team, "served")

    def left() -> list[dict[str, Any]]:
        return [
            line
            for line in setup.lines()
            if line["message"].startswith(f"ThingSpaceAccount {account}: its status is left")
        ]

    eventually(
        lambda: any(line["severity"] == "warn" for line in left()),
        RESYNC_SECONDS * 3 + 20,
        "a WARNING naming why the account's status is not written",
    )
    warning = next(line for line in left() if line["severity"] == "warn")
    assert f"left to the release in namespace {team}" in warning["message"]
    assert f"this operator's namespace is {setup.release.namespace}" in warning["message"]
    assert setup.account_status(account) == {}
    lists = sim.calls("list")
    eventually(lambda: sim.calls("list") >= lists + 2, RESYNC_SECONDS * 3 + 20, "two periods")
    assert len([line for line in left() if line["severity"] == "warn"]) == 1, left()


def test_a_suspended_or_not_allowed_callback_logs_its_state_once_and_no_error(
    setup: Setup,
) -> None:
    """Both are states someone chose: each is reported once (INFO for suspended, WARNING
    for a namespace the account does not allow, with its Warning Event), and a later
    change that finds the same state logs nothing; none is an ERROR."""
    plane, team, namespace = setup.plane, setup.team, setup.release.namespace
    closed = unique("closed")  # allows no namespace
    setup.known(account_manifest(closed, "0000151515-00001", namespace, "x"))
    apply(
        plane,
        callback_manifest("paused", team, "0000141414-00001", suspend=True),
        by_ref("refused", team, closed, "QoS"),
    )
    for name, reason in (("paused", "Suspended"), ("refused", "AccountNotAllowed")):
        eventually(
            lambda n=name, r=reason: condition(plane, team, n, "Synced").get("reason") == r,
            30,
            f"{name} reports {reason}",
        )
        # A change that finds the same state again: kopf's update handler runs once more.
        plane.kubectl(
            "-n", team, "patch", "tscb", name, "--type=merge",
            "-p", json.dumps({"spec": {"url": f"https://listener.example.com/{name}-2"}}),
        )  # fmt: skip
        eventually(lambda n=name: handled(plane, team, n), 30, f"{name} handled again")

    paused, refused = setup.about("paused"), setup.about("refused")
    for lines in (paused, refused):
        assert lines, setup.operator.log()[-3000:]
        assert [line for line in lines if line["severity"] == "error"] == []
    suspended = [line for line in paused if line["message"].startswith("Suspended [")]
    assert [line["severity"] for line in suspended] == ["info"], paused
    assert suspended[0]["message"].startswith(
        f"Suspended [account=0000141414-00001 service=QoS {team}/paused]: spec.suspend is true"
    )
    not_allowed = [line for line in refused if line["message"].startswith("AccountNotAllowed [")]
    assert [line["severity"] for line in not_allowed] == ["warn"], refused
    assert not_allowed[0]["message"].startswith(
        f"AccountNotAllowed [account=0000151515-00001 service=QoS {team}/refused]: "
        f"ThingSpaceAccount {closed} does not allow namespace {team}"
    )


def test_lines_about_a_callback_by_reference_name_its_billing_account(setup: Setup) -> None:
    plane, team = setup.plane, setup.team
    account, billing = unique("shared"), "0000161616-00001"
    manifest = account_manifest(account, billing, setup.release.namespace, "x")
    manifest["spec"]["namespaces"] = [team]
    setup.known(manifest)
    apply(plane, by_ref("declared", team, account, "QoS"))
    wait_ready(plane, team, "declared")
    eventually(lambda: handled(plane, team, "declared"), 30, "handled")

    lines = setup.about("declared")
    registered = [line for line in lines if line["message"].startswith("Registered [")]
    assert len(registered) == 1, lines
    assert registered[0]["message"].startswith(
        f"Registered [account={billing} service=QoS {team}/declared]: Registered QoS callbacks "
        f"of account {billing}"
    )
    assert not [line for line in lines if "account=None" in line["message"]]
    assert all((line.get("account"), line.get("service")) == (billing, "QoS") for line in lines), [
        (line["message"], line.get("account")) for line in lines
    ]


def test_authentication_failed_names_the_secret_to_fix(setup: Setup) -> None:
    """A rejected login names the Secret that holds it, namespace/name, never a value:
    the callback's own Secret, and an account's."""
    plane, team, namespace = setup.plane, setup.team, setup.release.namespace
    user, password = unique("messages-user"), unique("not-the-password")
    wrong = {**DEMO_CREDENTIALS, "username": user, "password": password}
    account = unique("rejected")
    apply(
        plane,
        secret_manifest("wrong-login", team, wrong),
        secret_manifest("wrong-platform-login", namespace, wrong),
        callback_manifest(
            "rejected",
            team,
            "0000171717-00001",
            credentialsSecretRef={"name": "wrong-login"},
            deletionPolicy="Orphan",  # deleted at the end without another login
        ),
    )
    manifest = setup.account(account_manifest(account, "0000181818-00001", namespace, "x"))
    manifest["spec"]["credentialsSecretRef"]["name"] = "wrong-platform-login"
    apply(plane, manifest)

    synced = eventually(
        lambda: (
            (found := condition(plane, team, "rejected", "Synced")).get("reason")
            == "AuthenticationFailed"
            and found
        ),
        30,
        "the callback reports the rejected login",
    )
    assert f"Fix username/password in Secret {team}/wrong-login;" in synced["message"]
    ready = eventually(
        lambda: (
            (found := setup.account_ready(account)).get("reason") == "AuthenticationFailed"
            and found
        ),
        30,
        "the account reports the rejected login",
    )
    assert f"Fix username/password in Secret {namespace}/wrong-platform-login;" in ready["message"]
    for message in (synced["message"], ready["message"]):
        assert password not in message
