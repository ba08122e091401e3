"""An account-only install (credentials.namespacedSecrets=false) on a real API server: the
operator has no Secret access outside its own namespace and never asks for any; callbacks
by accountRef work, inline ones report AccountRequired and are let go on delete."""

from pathlib import Path

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
    needs_control,
    remove_test_objects,
    secret_manifest,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.rbac import used_requests
from tests.e2e.test_lifecycle import account_manifest, by_ref


def test_an_account_only_install_reads_secrets_in_its_own_namespace_only(
    plane: Cluster, sim: Simulator, tmp_path: Path
) -> None:
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("accounts-system"), name=unique("tso"))
    release.install("--set", "credentials.namespacedSecrets=false")
    operator = OperatorProcess(release, sim, tmp_path).start()
    try:
        account_name = f"{7700000000 + len(team):010d}-00001"
        apply(
            plane,
            secret_manifest("platform-credentials", release.namespace, DEMO_CREDENTIALS),
            secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS),
        )
        account = unique("fleet")
        manifest = account_manifest(account, account_name, release.namespace, unique("tier"))
        manifest["spec"]["namespaces"] = [team]
        apply(
            plane,
            manifest,
            by_ref("qos", team, account, "QoS"),
            callback_manifest("inline", team, account_name, serviceName="DeviceUsage"),
        )
        wait_ready(plane, team, "qos")
        eventually(
            lambda: condition(plane, team, "inline", "Synced").get("reason") == "AccountRequired",
            30,
            "the inline form refused",
        )
        assert set(sim.live(account_name)) == {"QoS"}
        plane.kubectl("-n", team, "delete", "tscb", "inline", "--timeout=30s")
        assert "DeregistrationSkipped" in events(plane, team)
        plane.kubectl("-n", team, "delete", "tscb", "qos", "--timeout=60s")
        assert sim.live(account_name) == {}
        plane.kubectl("delete", "tsa", account)

        needs_control(plane)  # the rest reads the audit log
        user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
        requests = list(used_requests(plane.audit_events(), user))
        assert [r for r in requests if r.code == 403] == []
        secrets = [r for r in requests if r.resource == "secrets"]
        assert secrets
        assert {r.namespace for r in secrets} == {release.namespace}
    finally:
        remove_test_objects(plane, [team], release.namespace, operator_running=True)
        operator.stop()
        release.uninstall()
