"""Rolling upgrades, uninstall and reinstall of the chart on a real node: one process acts
at any moment, every callback stays Ready, ThingSpace is written only when it must be."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    Release,
    SimulatorApi,
    eventually,
    secret_manifest,
    unique,
)
from tests.node.cluster import OPERATOR_NEXT_TAG, OPERATOR_REPOSITORY, OPERATOR_TAG, Node
from tests.node.workload import (
    IMAGE_VALUES,
    WATCHFUL,
    Installed,
    PortForward,
    all_ready,
    callbacks,
    installed_release,
    restricted_namespace,
    synced_since,
)
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

ACCOUNT = "0000777777-00001"
COUNT = 5
SERVICES = [name for name in CALLBACK_SERVICE_NAMES if name != "AlertsService"][:COUNT]


def acting_writers(node: Node, service_account: str, since: datetime) -> list[str]:
    """The pods of ``service_account`` that wrote anything but the Lease, in the order of
    their writes, consecutive repeats folded (the audit log names the pod of each token)."""
    writers: list[str] = []
    for event in node.audit_events():
        user = event.get("user") or {}
        resource = (event.get("objectRef") or {}).get("resource")
        if (
            user.get("username") == service_account
            and event.get("verb") in ("create", "update", "patch", "delete")
            and resource != "leases"
            and datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")) > since
        ):
            pod = (user.get("extra") or {}).get("authentication.kubernetes.io/pod-name", ["?"])[0]
            if not writers or writers[-1] != pod:
                writers.append(pod)
    return writers


def callback_manifests(namespace: str, url_base: str) -> str:
    secret = secret_manifest("thingspace-credentials", namespace, DEMO_CREDENTIALS)
    items: list[dict[str, Any]] = [secret]
    for i in range(COUNT):
        items.append(
            {
                "apiVersion": "thingspace.io/v1alpha1",
                "kind": "ThingSpaceCallback",
                "metadata": {"name": f"cb-{i}", "namespace": namespace},
                "spec": {
                    "accountName": ACCOUNT,
                    "serviceName": SERVICES[i],
                    "url": f"{url_base}/{i}",
                    "credentialsSecretRef": {"name": "thingspace-credentials"},
                },
            }
        )
    return yaml.safe_dump_all(items)


@pytest.fixture
def installed(node: Node) -> Iterator[Installed]:
    # The simulator keeps registrations in memory: its own tag, so the upgrade of the
    # operator's leaves it running.
    with installed_release(
        node,
        "--set", "simulator.enabled=true",
        "--set", f"simulator.image.tag={OPERATOR_TAG}",
        *WATCHFUL,
    ) as release:  # fmt: skip
        yield release


def test_helm_upgrade_rolls_with_one_actor(node: Node, installed: Installed) -> None:
    """`helm upgrade` to another image tag with a changed value: a RollingUpdate in which
    at most one process acts at any moment, every callback Ready all the way through, and
    no registration written again."""
    installed.kubectl(
        "apply",
        "-f",
        "-",
        input=callback_manifests(installed.namespace, "https://listener.example.com"),
    )
    eventually(lambda: all_ready(node, installed.namespace, COUNT), 90, "all Ready")
    sim = installed.simulator()
    writes = sim.writes()
    before = {p["metadata"]["name"] for p in installed.operator_pods()}
    since = datetime.now(UTC)

    installed.release.upgrade(
        "--set", f"image.tag={OPERATOR_NEXT_TAG}", "--set", "logging.level=DEBUG"
    )
    samples = not_ready = 0
    deadline = time.monotonic() + 240
    while not rolled_out(installed) and time.monotonic() < deadline:
        samples += 1
        not_ready += not all_ready(node, installed.namespace, COUNT)
    assert rolled_out(installed), "the rollout did not finish in 240 s"
    assert samples
    assert not not_ready, f"not all Ready in {not_ready} of {samples} samples"

    pods = installed.operator_pods()
    assert {p["metadata"]["name"] for p in pods}.isdisjoint(before)
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {
        f"{OPERATOR_REPOSITORY}:{OPERATOR_NEXT_TAG}"
    }
    moment = datetime.now(UTC)
    eventually(lambda: synced_since(node, installed.namespace, moment), 60, "checked after")
    account = f"system:serviceaccount:{installed.namespace}:{installed.fullname}"
    writers = acting_writers(node, account, since)
    # The old leader acted, then one new pod after it: never back and forth.
    assert len(writers) >= 2, writers
    assert set(writers) <= before | {p["metadata"]["name"] for p in pods}, writers
    assert len(writers) == len(set(writers)), f"acting processes interleaved: {writers}"
    assert sim.writes() == writes
    assert OPERATOR_TAG != OPERATOR_NEXT_TAG


def rolled_out(installed: Installed) -> bool:
    done = installed.kubectl(
        "rollout", "status", f"deployment/{installed.fullname}", "--watch=false", check=False
    )
    return "successfully rolled out" in done.stdout


SIMULATOR = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: thingspace}}
spec:
  selector: {{matchLabels: {{app: thingspace}}}}
  template:
    metadata: {{labels: {{app: thingspace}}}}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: sim
          image: {image}
          imagePullPolicy: Never
          command: [thingspace-sim, --host, 0.0.0.0, --port, "8088"]
          env:
            - {{name: THINGSPACE_SIM_APPS, value: "demo-app-key:demo-app-secret"}}
            - {{name: THINGSPACE_SIM_USERS, value: "demo-user:demo-password"}}
          ports: [{{containerPort: 8088}}]
          readinessProbe: {{httpGet: {{path: /_sim/registrations, port: 8088}}, periodSeconds: 1}}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {{drop: [ALL]}}
            runAsNonRoot: true
            runAsUser: 10001
            seccompProfile: {{type: RuntimeDefault}}
---
apiVersion: v1
kind: Service
metadata: {{name: thingspace}}
spec:
  selector: {{app: thingspace}}
  ports: [{{port: 8088}}]
"""


def test_uninstall_keeps_everything_and_a_reinstall_adopts_it(node: Node) -> None:
    """`helm uninstall` keeps the CRDs, the callbacks and their registrations; installing
    again adopts them without a single ThingSpace write. ThingSpace here is a simulator
    Deployment of its own, outside the release, so that it outlives it."""
    namespace = restricted_namespace(node, "tso-adopt")
    image = f"{OPERATOR_REPOSITORY}:{OPERATOR_TAG}"
    node.kubectl("-n", namespace, "apply", "-f", "-", input=SIMULATOR.format(image=image))
    node.kubectl("-n", namespace, "rollout", "status", "deployment/thingspace", "--timeout=120s")
    api_url = f"http://thingspace.{namespace}.svc:8088"
    forward = PortForward(node, namespace, "svc/thingspace", 8088)
    sim = SimulatorApi(forward.url)
    values = (
        *IMAGE_VALUES,
        "--set",
        f"thingspace.apiUrl={api_url}",
        *WATCHFUL,
    )
    release = Release(node, namespace, name=unique("tso"))
    try:
        release.install(*values)
        Installed(node, release).wait_rolled_out()
        node.kubectl(
            "-n",
            namespace,
            "apply",
            "-f",
            "-",
            input=callback_manifests(namespace, "https://listener.example.com"),
        )
        eventually(lambda: all_ready(node, namespace, COUNT), 90, "all Ready")
        live = sim.live(ACCOUNT)
        assert len(live) == COUNT
        writes = sim.writes()

        release.uninstall()
        eventually(lambda: not Installed(node, release).operator_pods(), 60, "operator gone")
        node.kubectl(
            "get", "crd", "thingspacecallbacks.thingspace.io", "thingspaceaccounts.thingspace.io"
        )
        assert len(callbacks(node, namespace)) == COUNT
        assert sim.live(ACCOUNT) == live

        release.install(*values)
        Installed(node, release).wait_rolled_out()
        moment = datetime.now(UTC)
        eventually(lambda: synced_since(node, namespace, moment), 60, "adopted and checked")
        assert all_ready(node, namespace, COUNT)
        assert sim.writes() == writes
        assert sim.live(ACCOUNT) == live
    finally:
        node.kubectl("-n", namespace, "delete", "tscb", "--all", "--timeout=120s", check=False)
        release.helm("uninstall", release.name, "--namespace", namespace, check=False)
        forward.stop()
        node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
