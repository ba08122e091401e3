"""The operator pod converges 2,000 callbacks within the chart's memory limit, with no
restart; its peak, read from the container's cgroup, is printed beside the chart's request
and limit (docs/operations.md records the figures)."""

import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import CHART, DEMO_CREDENTIALS, eventually, secret_manifest
from tests.node.cluster import NODE_IP, Node
from tests.node.workload import Installed, container_cgroup, install
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

COUNT = 2000
#: One registration per account and service: every service of an account, then the next.
SERVICES = [name for name in CALLBACK_SERVICE_NAMES if name != "AlertsService"]
ACCOUNTS = -(-COUNT // len(SERVICES))
MEBIBYTE = 1024 * 1024


def to_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MEBIBYTE, "Gi": 1024 * MEBIBYTE}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


class Api:
    """Plain HTTPS to the API server as the admin: thousands of small writes in seconds,
    where one kubectl process each would take minutes."""

    def __init__(self, node: Node) -> None:
        context = ssl.create_default_context(cafile=str(node.certs / "ca.crt"))
        context.load_cert_chain(str(node.certs / "admin.crt"), str(node.certs / "admin.key"))
        self.connection = http.client.HTTPSConnection(NODE_IP, node.port, context=context)

    def call(self, method: str, path: str, body: Any, content_type: str) -> dict[str, Any]:
        self.connection.request(method, path, json.dumps(body), {"Content-Type": content_type})
        response = self.connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        assert response.status < 300, answer
        return dict(answer)

    def close(self) -> None:
        self.connection.close()


def callback(namespace: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceCallback",
        "metadata": {"name": f"cb-{i}", "namespace": namespace},
        "spec": {
            "accountName": f"0000{i // len(SERVICES):06d}-00001",
            "serviceName": SERVICES[i % len(SERVICES)],
            "url": f"https://listener.example.com/{i}",
            "credentialsSecretRef": {"name": "thingspace-credentials"},
        },
    }


@pytest.fixture
def installed(node: Node) -> Iterator[Installed]:
    release = install(node, "--set", "simulator.enabled=true")
    api = Api(node)
    try:
        yield release
    finally:
        release.close()
        release.release.uninstall()
        # Without the operator, nothing removes the finalizers: remove them directly.
        base = f"/apis/thingspace.io/v1alpha1/namespaces/{release.namespace}/thingspacecallbacks"
        for item in node.kubectl_json("-n", release.namespace, "get", "tscb")["items"]:
            api.call(
                "PATCH",
                f"{base}/{item['metadata']['name']}",
                {"metadata": {"finalizers": None}},
                "application/merge-patch+json",
            )
        api.close()
        node.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def test_two_thousand_callbacks_within_the_memory_limit(node: Node, installed: Installed) -> None:
    namespace = installed.namespace
    secret = secret_manifest("thingspace-credentials", namespace, DEMO_CREDENTIALS)
    installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    api = Api(node)
    base = f"/apis/thingspace.io/v1alpha1/namespaces/{namespace}/thingspacecallbacks"
    try:
        for i in range(COUNT):
            api.call("POST", base, callback(namespace, i), "application/json")
    finally:
        api.close()

    def ready_count() -> int:
        items = node.kubectl_json("-n", namespace, "get", "tscb")["items"]
        return sum(
            1
            for item in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (item.get("status") or {}).get("conditions") or ()
            )
        )

    eventually(lambda: ready_count() == COUNT, 300, f"{COUNT} callbacks Ready")
    leader = installed.lease_holder()
    pod = installed.json("get", "pod", leader)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    peak = int((container_cgroup(pod) / "memory.max_usage_in_bytes").read_text())
    resources = yaml.safe_load((CHART / "values.yaml").read_text())["resources"]
    request, limit = (to_bytes(resources[k]["memory"]) for k in ("requests", "limits"))
    print(
        f"\nNODE MEMORY: the leader converged {COUNT} callbacks ({ACCOUNTS} accounts) at a peak "
        f"of {peak / MEBIBYTE:.0f} MiB (cgroup memory.max_usage_in_bytes); the chart requests "
        f"{request / MEBIBYTE:.0f} MiB and limits {limit / MEBIBYTE:.0f} MiB"
    )
    assert peak < limit
