"""The chart as users install it on the node: helm with the image built here, pods, the
simulator reached through `kubectl port-forward`, and what tests read back from pods."""

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.cluster import CHART, Release, SimulatorApi, eventually, unique
from tests.e2e.controlplane import Cluster
from tests.node.cluster import OPERATOR_REPOSITORY, OPERATOR_TAG

NAME_LABEL = "app.kubernetes.io/name"
#: What every install on the node sets: the image built here, never pulled.
IMAGE_VALUES = (
    "--set",
    f"image.repository={OPERATOR_REPOSITORY}",
    "--set",
    f"image.tag={OPERATOR_TAG}",
    "--set",
    "image.pullPolicy=Never",
)
SECRETS = ("demo-app-secret", "demo-password")
#: Drift checks every 3 s that write lastSyncTime each time: a test sees from it that the
#: acting process has looked at ThingSpace since a moment (it moves hourly by default).
WATCHFUL = (
    "--set", "thingspace.resyncSeconds=3",
    "--set", "extraEnv[0].name=THINGSPACE_SYNC_TIME_REFRESH_SECONDS",
    "--set-string", "extraEnv[0].value=1",
)  # fmt: skip


def restricted_namespace(plane: Cluster, prefix: str) -> str:
    """A namespace whose Pod Security admission enforces the restricted profile."""
    namespace = unique(prefix)
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    # As in a namespace that has existed a while: the controller manager has published the
    # cluster's CA, which every pod's token volume mounts (else the kubelet retries, warning).
    eventually(
        lambda: (
            plane.kubectl(
                "-n", namespace, "get", "configmap", "kube-root-ca.crt", check=False
            ).returncode
            == 0
        ),
        30,
        "kube-root-ca.crt published",
    )
    return namespace


@dataclass
class Installed:
    """One release of the chart on the node, in a restricted namespace."""

    plane: Cluster
    release: Release
    forwards: list["PortForward"] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.release.namespace

    @property
    def fullname(self) -> str:
        return self.release.service_account

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl("-n", self.namespace, *args, input=input, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def operator_pods(self) -> list[dict[str, Any]]:
        selector = (
            f"{NAME_LABEL}=thingspace-operator,app.kubernetes.io/instance={self.release.name}"
        )
        pods = self.json("get", "pods", "-l", selector)["items"]
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def wait_rolled_out(self, timeout: int = 100) -> None:
        done = self.kubectl(
            "rollout", "status", f"deployment/{self.fullname}", f"--timeout={timeout}s",
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pods = self.kubectl("get", "pods", "-o", "wide", check=False).stdout
            logs = self.kubectl("logs", f"deployment/{self.fullname}", "--tail=20", check=False)
            raise AssertionError(
                f"not rolled out: {done.stderr}\n{pods}\n{logs.stdout}{logs.stderr}"
            )

    def lease_holder(self) -> str:
        lease = self.json("get", "lease", self.fullname)
        return str(lease["spec"].get("holderIdentity") or "")

    def simulator(self) -> SimulatorApi:
        """The chart's simulator, through a port-forward to its Service."""
        forward = PortForward(self.plane, self.namespace, f"svc/{self.fullname}-simulator", 8088)
        self.forwards.append(forward)
        return SimulatorApi(forward.url)

    def warnings(self) -> list[str]:
        """Warning Events in the namespace, but for the API server's own ClusterIP repair
        loop, which on a freshly started control plane can race a new Service's allocation
        (ClusterIPNotAllocated), whoever creates it."""
        items = [
            item
            for item in self.json("get", "events", "--field-selector", "type=Warning")["items"]
            if item.get("reason") != "ClusterIPNotAllocated"
        ]
        return [
            f"{item['involvedObject']['name']}: {item['reason']}: {item['message']}"
            for item in items
        ]

    def close(self) -> None:
        for forward in self.forwards:
            forward.stop()


def install(
    plane: Cluster,
    *values: str,
    namespace: str | None = None,
    chart: str | None = None,
    image_values: tuple[str, ...] = IMAGE_VALUES,
) -> Installed:
    """The chart here with the image built here, unless ``chart`` says where else from (its
    ``image_values`` then say which image)."""
    namespace = namespace or restricted_namespace(plane, "tso-node")
    release = Release(plane, namespace, name=unique("tso"), chart=chart or str(CHART))
    release.install(*image_values, *values)
    installed = Installed(plane, release)
    installed.wait_rolled_out()
    installed.kubectl("wait", "--for=condition=Available", "deployment", "--all", "--timeout=120s")
    return installed


@contextlib.contextmanager
def installed_release(plane: Cluster, *values: str) -> Iterator[Installed]:
    """``install``, then its callbacks deleted (deregistered by its own operator), the
    release uninstalled and its namespace deleted, pass or fail."""
    release = install(plane, *values)
    try:
        yield release
    finally:
        release.close()
        release.kubectl("delete", "tscb", "--all", "--timeout=120s", check=False)
        release.release.uninstall()
        plane.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


class PortForward:
    """`kubectl port-forward` to a local port, as a user reaches a Service."""

    def __init__(self, plane: Cluster, namespace: str, target: str, port: int) -> None:
        self._process = subprocess.Popen(
            [
                str(plane.bin / "kubectl"),
                "-n",
                namespace,
                "port-forward",
                target,
                f":{port}",
                "--address=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=plane.env(),
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            self.stop()
            raise AssertionError(f"kubectl port-forward {target}: {line}")
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


def callbacks(plane: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(plane.kubectl_json("-n", namespace, "get", "tscb")["items"])


def ready(item: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (item.get("status") or {}).get("conditions") or ()
    )


def all_ready(plane: Cluster, namespace: str, count: int) -> bool:
    items = callbacks(plane, namespace)
    return len(items) == count and all(ready(item) for item in items)


def synced_since(plane: Cluster, namespace: str, moment: datetime) -> bool:
    """Every callback's drift check confirmed it after ``moment`` (the acting process has
    looked at ThingSpace since)."""
    items = callbacks(plane, namespace)
    return bool(items) and all(
        parse_time((item.get("status") or {}).get("lastSyncTime")) > moment for item in items
    )


def parse_time(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_log_lines(installed: Installed, pod: str) -> list[str]:
    return installed.kubectl("logs", pod).stdout.splitlines()


def container_cgroup(pod: dict[str, Any], controller: str = "memory") -> Path:
    """The cgroup (v1) of a pod's first container, found by its container id."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    root = Path("/sys/fs/cgroup") / controller
    matches = list(root.glob(f"kubepods*/**/{container_id}"))
    assert matches, f"no {controller} cgroup for container {container_id}"
    return matches[0]


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as elapsed:`` ... ``elapsed[0]`` is the seconds spent inside."""
    elapsed: list[float] = []
    start = time.monotonic()
    try:
        yield elapsed
    finally:
        elapsed.append(time.monotonic() - start)
