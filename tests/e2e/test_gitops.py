"""The GitOps tools on a real API server, through the real kubectl: the plugin is found on
PATH, `kubectl thingspace export` reads a ThingSpaceAccount and its Secret, applying the
export adopts every registration with zero ThingSpace writes, and `kubectl thingspace
status` shows the callbacks by account with the registration nobody manages."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    SCRIPTS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    eventually,
    remove_test_objects,
    secret_manifest,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.test_lifecycle import account_manifest
from thingspace_operator.gitops.manifests import dump


def kubectl(plane: Cluster, sim: Simulator, *args: str) -> subprocess.CompletedProcess[str]:
    """The real kubectl, with the project's scripts on PATH as after `pip install`."""
    env = plane.env()
    env["PATH"] = f"{SCRIPTS}{os.pathsep}{env['PATH']}"
    env["THINGSPACE_API_URL"] = sim.url
    return subprocess.run(
        [str(plane.bin / "kubectl"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_export_apply_adopts_with_zero_writes_and_the_plugin_reports_status(
    plane: Cluster, sim: Simulator, tmp_path: Path
) -> None:
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("gitops-system"), name=unique("tso"))
    release.install("--set", "thingspace.resyncSeconds=2")
    account_name = f"{7300000000 + len(team):010d}-00002"
    listener = "https://listener.example.com"
    sim.request("PUT", f"registrations/{account_name}/QoS", {"url": f"{listener}/qos"})
    sim.request(
        "PUT",
        f"registrations/{account_name}/CarrierService",
        {"url": f"{listener}/carrier", "username": "listener", "password": "listener-secret"},
    )
    sim.request("PUT", f"registrations/{account_name}/DeviceUsage", {"url": f"{listener}/usage"})
    fleet = unique("fleet")
    account = account_manifest(fleet, account_name, release.namespace, unique("tier"))
    account["spec"]["namespaces"] = [team]
    apply(
        plane, secret_manifest("platform-credentials", release.namespace, DEMO_CREDENTIALS), account
    )

    plugins = kubectl(plane, sim, "plugin", "list")
    assert "kubectl-thingspace" in plugins.stdout, plugins.stdout + plugins.stderr
    out = tmp_path / "exported"
    exported = kubectl(
        plane,
        sim,
        "thingspace",
        "export",
        "--account-ref",
        fleet,
        "-n",
        team,
        "--include-credentials",
        "--operator-namespace",
        release.namespace,
        "--output-dir",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    (out / f"deviceusage-{account_name}.thingspacecallback.yaml").unlink()  # left unmanaged
    callbacks = [yaml.safe_load(p.read_text()) for p in out.glob("*.thingspacecallback.yaml")]
    assert {c["spec"]["accountRef"]["name"] for c in callbacks} == {fleet}

    before = sim.writes()
    plane.kubectl("apply", "-f", str(out))
    operator = OperatorProcess(release, sim, tmp_path).start()
    try:
        for manifest in callbacks:
            wait_ready(plane, team, manifest["metadata"]["name"])
        assert sim.writes() == before  # adopted: not one register or deregister

        def account_group() -> dict[str, Any] | None:
            done = kubectl(plane, sim, "thingspace", "status", "-o", "json")
            assert done.returncode == 0, done.stderr
            groups = json.loads(done.stdout)["accounts"]
            group = next((g for g in groups if g["account"] == account_name), None)
            return group if group and group["unmanaged"] else None

        group = eventually(account_group, 30, "status shows the unmanaged registration")
        assert [a["name"] for a in group["accounts"]] == [fleet]
        assert sorted((c["service"], c["ready"]) for c in group["callbacks"]) == [
            ("CarrierService", "True"),
            ("QoS", "True"),
        ]
        assert group["unmanaged"] == [{"serviceName": "DeviceUsage", "url": f"{listener}/usage"}]
        text = kubectl(plane, sim, "thingspace", "status", "-n", team)
        assert f"ACCOUNT {account_name}" in text.stdout
        assert "listener-secret" not in text.stdout

        # diff as export read it: the account and its credentials from the cluster.
        planned = kubectl(
            plane, sim, "thingspace", "diff", "-f", str(out),
            "--account-ref", fleet, "--operator-namespace", release.namespace,
        )  # fmt: skip
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "keep" in planned.stdout  # DeviceUsage: declared nowhere, left alone
    finally:
        remove_test_objects(plane, [team], release.namespace, operator_running=True)
        operator.stop()
        release.uninstall()


def test_what_the_tools_write_kubectl_reads_back_as_the_same_strings(plane: Cluster) -> None:
    """PyYAML leaves some strings unquoted that kubectl's YAML reader takes for numbers or
    booleans (an account named 1e5 would become 100000): the tools quote them."""
    values = ["1e5", "1e+5", "0o17", "y", "N", "ON", "12", "TestAccount-2", "0000123456-00001"]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "strings", "namespace": "default"},
        "data": {f"k{i}": value for i, value in enumerate(values)},
    }
    done = plane.kubectl(
        "create", "--dry-run=client", "-o", "json", "-f", "-", input=dump([config_map])
    )
    assert json.loads(done.stdout)["data"] == config_map["data"]
