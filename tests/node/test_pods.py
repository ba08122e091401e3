"""The chart's pods on a real node, as users run them: the image built from the Dockerfile,
containerd without a passwd entry for the pod's uid, a restricted namespace, the simulator
as a pod reached through its Service, leader election between two pods."""

import json
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, SCRIPTS, eventually
from tests.node.cluster import POD_CIDR, SERVICE_CIDR, Node
from tests.node.workload import (
    SECRETS,
    WATCHFUL,
    Installed,
    all_ready,
    callbacks,
    container_cgroup,
    installed_release,
    pod_log_lines,
    ready,
    synced_since,
)

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CALLBACKS = sum(
    1
    for path in EXAMPLES
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc["kind"] == "ThingSpaceCallback"
)


@pytest.fixture
def installed(node: Node) -> Iterator[Installed]:
    """The chart with its defaults (two replicas, leader election) and the simulator."""
    with installed_release(node, "--set", "simulator.enabled=true", *WATCHFUL) as release:
        yield release


def settled(item: dict[str, Any]) -> bool:
    """Managed callbacks are Ready; observe-only ones have reported."""
    if item["spec"].get("managementPolicy") == "ObserveOnly":
        conditions = {c["type"]: c for c in (item.get("status") or {}).get("conditions") or ()}
        return conditions.get("Synced", {}).get("reason") == "ObserveOnly"
    return ready(item)


def apply_examples(installed: Installed) -> int:
    installed.kubectl("apply", *[f"--filename={path}" for path in EXAMPLES])
    count = len(callbacks(installed.plane, installed.namespace))
    eventually(
        lambda: all(settled(i) for i in callbacks(installed.plane, installed.namespace)),
        90,
        "every example settled",
    )
    return count


def test_install_in_a_restricted_namespace(installed: Installed) -> None:
    """Both operator pods and the simulator run (no passwd entry for uid 10001 under
    containerd), one leads, the Lease names its pod, nothing warns, logs are JSON without
    a secret."""
    pods = installed.operator_pods()
    assert len(pods) == 2
    for pod in pods:
        assert all(
            s["ready"] and s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]
        )
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    names = {pod["metadata"]["name"] for pod in pods}
    holder = eventually(installed.lease_holder, 30, "a Lease holder")
    assert holder in names
    readiness = [probe(installed, name) for name in sorted(names)]
    assert sum(1 for body in readiness if body["leading"]) == 1, readiness
    assert {body["leader"] for body in readiness} == {holder}
    sim = installed.json("get", "pods", "-l", "app.kubernetes.io/component=simulator")["items"]
    assert len(sim) == 1
    assert sim[0]["status"]["containerStatuses"][0]["ready"]
    for name in names:
        lines = pod_log_lines(installed, name)
        assert lines
        assert all(isinstance(json.loads(line), dict) for line in lines)
        assert not [line for line in lines if any(secret in line for secret in SECRETS)]
    for pod in [*pods, *sim]:
        peak = int((container_cgroup(pod) / "memory.max_usage_in_bytes").read_text())
        print(f"\nNODE MEMORY: {pod['metadata']['name']} peaked at {peak / 2**20:.0f} MiB")
    warnings = installed.warnings()
    assert not warnings, "\n".join(warnings)


def probe(installed: Installed, pod: str) -> dict[str, Any]:
    """/readyz of one pod, fetched from inside it (the image has Python, not curl)."""
    code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8081/readyz').read().decode())"
    return dict(json.loads(installed.kubectl("exec", pod, "--", "python", "-c", code).stdout))


def test_examples_register_on_the_simulator_pod(installed: Installed) -> None:
    """kubectl apply -f examples/: registered on the simulator pod, which the operator
    reaches through the simulator's Service by DNS name."""
    count = apply_examples(installed)
    sim = installed.simulator()
    managed = [
        i
        for i in callbacks(installed.plane, installed.namespace)
        if i["spec"].get("managementPolicy") != "ObserveOnly"
    ]
    live = sim.live("0000123456-00001")
    assert count == CALLBACKS
    assert {item["spec"]["serviceName"] for item in managed} <= set(live)
    api_url = installed.json("get", "deployment", installed.fullname)["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    url = next(e["value"] for e in api_url if e["name"] == "THINGSPACE_API_URL")
    assert url.startswith(f"http://{installed.fullname}-simulator.{installed.namespace}.svc:")


def test_leader_deleted_then_force_deleted(installed: Installed) -> None:
    """A graceful delete of the leader's pod hands over within 3 s; a forced one within the
    lease plus 5 s. Every callback stays Ready and nothing is registered twice."""
    apply_examples(installed)
    sim = installed.simulator()
    writes = sim.writes()

    leader = installed.lease_holder()
    start = time.monotonic()
    installed.kubectl("delete", "pod", leader, "--wait=false")
    new = eventually(lambda: (h := installed.lease_holder()) != leader and h, 30, "a new leader")
    graceful = time.monotonic() - start
    print(f"\nNODE HANDOVER: graceful delete of the leader's pod, new leader in {graceful:.1f} s")
    assert graceful <= 3.0, f"handover took {graceful:.1f} s"
    moment = datetime.now(UTC)
    eventually(
        lambda: synced_since(installed.plane, installed.namespace, moment),
        60,
        "the new leader checked every callback",
    )
    assert all(settled(i) for i in callbacks(installed.plane, installed.namespace))
    assert sim.writes() == writes

    installed.wait_rolled_out()
    start = time.monotonic()
    installed.kubectl("delete", "pod", new, "--grace-period=0", "--force")
    eventually(lambda: installed.lease_holder() not in ("", new), 60, "a leader after force")
    forced = time.monotonic() - start
    print(f"\nNODE HANDOVER: forced delete of the leader's pod, new leader in {forced:.1f} s")
    assert forced <= 15 + 5, f"takeover after a forced delete took {forced:.1f} s"
    moment = datetime.now(UTC)
    eventually(
        lambda: synced_since(installed.plane, installed.namespace, moment),
        60,
        "the next leader checked every callback",
    )
    assert all(settled(i) for i in callbacks(installed.plane, installed.namespace))
    assert sim.writes() == writes


def test_sigterm_right_after_start(installed: Installed) -> None:
    """A pod deleted as soon as its container runs stops at once: the operator, PID 1 of
    its container, honours SIGTERM from its first instruction (the kernel drops a signal
    PID 1 has no handler for, and the kubelet would wait the grace period, 30 s). The
    delete lands within the first second or so only most of the time; the deterministic
    proof is tests/integration/test_pod_runtime.py (PID 1 in a PID namespace)."""
    standby = next(
        p["metadata"]["name"]
        for p in installed.operator_pods()
        if p["metadata"]["name"] != installed.lease_holder()
    )
    before = {p["metadata"]["name"] for p in installed.operator_pods()}
    installed.kubectl("delete", "pod", standby, "--wait=false")

    def fresh_running() -> str | None:
        for pod in installed.operator_pods():
            statuses = pod["status"].get("containerStatuses") or []
            if (
                pod["metadata"]["name"] not in before
                and statuses
                and "running" in statuses[0]["state"]
            ):
                return str(pod["metadata"]["name"])
        return None

    fresh = eventually(fresh_running, 60, "the replacement's container running")
    start = time.monotonic()
    installed.kubectl("delete", "pod", fresh, "--timeout=60s")
    took = time.monotonic() - start
    print(f"\nNODE SIGTERM: a pod deleted as its container started was gone in {took:.1f} s")
    assert took < 10, f"deleting a pod right after its start took {took:.1f} s"


def test_pods_reach_only_the_node(installed: Installed) -> None:
    """A pod's routes are the pod and Service ranges: no default route off the machine."""
    pod = installed.operator_pods()[0]["metadata"]["name"]
    code = "print(open('/proc/net/route').read())"
    table = installed.kubectl("exec", pod, "--", "python", "-c", code).stdout.splitlines()[1:]
    destinations = {route_destination(row.split()[1]) for row in table if row.strip()}
    assert destinations == {POD_CIDR.split("/")[0], SERVICE_CIDR.split("/")[0]}, table


def route_destination(little_endian_hex: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(little_endian_hex, 16)))


def test_simulator_delivers_to_a_listener_pod(installed: Installed, tmp_path: Path) -> None:
    """`thingspace-sim send` through a port-forward: the simulator pod posts the callback
    message to a listener running as a pod, reached by its Service's DNS name."""
    installed.kubectl("apply", "-f", "-", input=listener_manifests(installed))
    installed.kubectl("rollout", "status", "deployment/listener", "--timeout=120s")
    installed.kubectl("apply", "-f", str(ROOT / "examples" / "credentials-secret.yaml"))
    callback = {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceCallback",
        "metadata": {"name": "to-listener"},
        "spec": {
            "accountName": "0000123456-00001",
            "serviceName": "QoS",
            # ThingSpace takes listener URLs on ports 80 and 443 only.
            "url": f"http://listener.{installed.namespace}.svc/qos",
            "credentialsSecretRef": {"name": "thingspace-credentials"},
        },
    }
    installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(callback))
    try:
        eventually(lambda: all_ready(installed.plane, installed.namespace, 1), 60, "registered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {callbacks(installed.plane, installed.namespace)}") from None
    sim = installed.simulator()
    sent = subprocess.run(
        [
            str(SCRIPTS / "thingspace-sim"),
            "send",
            "--sim-url",
            sim.url,
            "--account",
            "0000123456-00001",
            "--service",
            "QoS",
            "--wait",
            "--wait-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    logs = installed.kubectl("logs", "deployment/listener").stdout
    assert "/qos" in logs
    assert "QoS" in logs


LISTENER = """\
import asyncio, sys
from aiohttp import web
async def receive(request):
    print(request.path, (await request.text()), flush=True)
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/{tail:.*}", receive)
web.run_app(app, host="0.0.0.0", port=8080, print=None)
"""


def listener_manifests(installed: Installed) -> str:
    image = installed.json("get", "deployment", installed.fullname)["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    labels = {"app": "listener"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "listener"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "listener",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-c", LISTENER],
                            "ports": [{"containerPort": 8080}],
                            "securityContext": restricted,
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "listener"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return yaml.safe_dump_all([deployment, service])
