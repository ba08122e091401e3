"""A real cluster as a user drives it: the chart installed with helm, the operator run as a
local process with a token of the chart's ServiceAccount (so RBAC applies exactly as in a
cluster), the ThingSpace simulator as a process of its own, and manifests applied with
kubectl. Used by the e2e suite and by `make demo`."""

import base64
import json
import os
import signal
import subprocess
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controlplane import ROOT, Cluster, die_with_parent, free_port, kubeconfig

HELM = ROOT / ".tools" / "helm"
CHART = ROOT / "charts" / "thingspace-operator"
SCRIPTS = Path(sysconfig.get_path("scripts"))
RELEASE = "tso"
CRD = "thingspacecallbacks.thingspace.io"
DEMO_CREDENTIALS = {
    "appKey": "demo-app-key",
    "appSecret": "demo-app-secret",
    "username": "demo-user",
    "password": "demo-password",
}
LABEL = "thingspace.io/credentials"


def eventually(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (KeyError, IndexError, TypeError, AssertionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout} s")
        time.sleep(0.2)


def needs_control(plane: Cluster) -> None:
    """Skip a test that restarts, compacts or audits: an external cluster allows none."""
    if not plane.controlled:
        pytest.skip("needs the project's own control plane (not E2E_KUBECONFIG)")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- the simulator -----------------------------------------------------------------------


class SimulatorApi:
    """A running ``thingspace-sim`` at ``url``, driven through /_sim/ like the demo does."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_sim/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def live(self, account: str) -> dict[str, dict[str, Any]]:
        """Live registrations of ``account`` by service name."""
        return {
            item["serviceName"]: item
            for item in self.request("GET", "registrations").get(account, [])
        }

    def calls(self, endpoint: str) -> int:
        rows = self.request("GET", "requests")["counts"]
        return sum(row["count"] for row in rows if row["endpoint"] == endpoint)

    def writes(self) -> int:
        return self.calls("register") + self.calls("deregister")


class Simulator(SimulatorApi):
    """``thingspace-sim`` as its own process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self._log = (workdir / f"sim-{self.port}.log").open("wb")
        self._process = subprocess.Popen(
            [str(SCRIPTS / "thingspace-sim"), "--port", str(self.port)],
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent,
        )
        eventually(lambda: self.request("GET", "registrations") is not None, 20, "simulator up")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()


# --- the chart and the operator --------------------------------------------------------


class Release:
    """The chart installed with helm, as a user installs it."""

    def __init__(
        self, plane: Cluster, namespace: str, name: str = RELEASE, chart: str = str(CHART)
    ) -> None:
        """``chart``: the chart's directory here, or where a user installs it from (an
        ``oci://`` reference, its flags such as ``--version`` then given to ``install``)."""
        self.plane, self.namespace, self.name, self.chart = plane, namespace, name, chart
        # The chart's fullname: the release name alone when it already names the chart.
        chart = "thingspace-operator"
        self.service_account = name if chart in name else f"{name}-{chart}"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(HELM), *args],
            capture_output=True,
            text=True,
            env=self.plane.env(),
            check=False,
            timeout=180,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
        return done

    def install(self, *values: str, command: str = "install") -> None:
        """Install the chart; the CRD comes with it unless another release already owns
        it (a CRD is cluster-wide: only one release can hold it)."""
        if self._crd_owner() not in (None, self.name):
            values = ("--set", "crds.enabled=false", *values)
        self.helm(
            command, self.name, self.chart, "--namespace", self.namespace,
            "--create-namespace", *values,
        )  # fmt: skip
        self.plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")

    def _crd_owner(self) -> str | None:
        found = self.plane.kubectl("get", "crd", CRD, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        annotations = json.loads(found.stdout)["metadata"].get("annotations") or {}
        return str(annotations.get("meta.helm.sh/release-name", ""))

    def upgrade(self, *values: str) -> None:
        self.install("--reuse-values", *values, command="upgrade")

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--namespace", self.namespace)

    def deployment(self) -> dict[str, Any]:
        return dict(
            self.plane.kubectl_json("-n", self.namespace, "get", "deployment", self.service_account)
        )

    def operator_kubeconfig(self, path: Path, server: str | None = None) -> tuple[Path, str]:
        """A kubeconfig holding a token of the chart's ServiceAccount: the operator then has
        exactly the permissions the chart grants. Each call makes a new token; its id (also
        returned) tells the processes apart in the audit log."""
        token = self.plane.kubectl(
            "-n", self.namespace, "create", "token", self.service_account, "--duration=2h"
        ).stdout.strip()
        path.write_text(
            # The context's namespace is the pod's own, as in a cluster.
            kubeconfig(
                server or self.plane.server,
                self.plane.certs / "ca.crt",
                {"token": token},
                namespace=self.namespace,
            )
        )
        return path, token_id(token)


class OperatorProcess:
    """``thingspace-operator run`` with the args and environment of the chart's Deployment
    (as the pod would get them), pointed at the simulator."""

    def __init__(
        self,
        release: Release,
        sim: Simulator,
        workdir: Path,
        api_server: str | None = None,
        thingspace_url: str | None = None,
        **env: str,
    ) -> None:
        container = release.deployment()["spec"]["template"]["spec"]["containers"][0]
        self.args = list(container.get("args") or [])
        self.identity = unique("operator-pod")
        # What the downward API would give the pod: its name and namespace.
        fields = {"metadata.name": self.identity, "metadata.namespace": release.namespace}
        self.env = {
            item["name"]: str(
                item["value"]
                if "value" in item
                else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
            )
            for item in container["env"]
        }
        self.env.update(
            THINGSPACE_API_URL=thingspace_url or sim.url,
            THINGSPACE_HEALTH_PORT=str(free_port()),
            THINGSPACE_METRICS_PORT=str(free_port()),
            THINGSPACE_RETRY_BASE_SECONDS="0.5",
            THINGSPACE_RETRY_MAX_SECONDS="2",
            **env,
        )
        self.kubeconfig, self.credential_id = release.operator_kubeconfig(
            workdir / unique("operator.kubeconfig"), api_server
        )
        self.log_path = workdir / unique("operator.log")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "OperatorProcess":
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never mistake this for in-cluster
        self._process = subprocess.Popen(
            [str(SCRIPTS / "thingspace-operator"), "run", *self.args],
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        eventually(self.healthy, 30, "operator /healthz")
        return self

    def healthy(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{self.log()[-3000:]}")
        url = f"http://127.0.0.1:{self.env['THINGSPACE_HEALTH_PORT']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def readiness(self) -> dict[str, Any]:
        """/readyz: who leads, as this process sees it ({} when it does not answer)."""
        url = f"http://127.0.0.1:{self.env['THINGSPACE_HEALTH_PORT']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.loads(response.read()))
        except (OSError, ValueError):
            return {}

    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.env['THINGSPACE_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
        return None

    def signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def exit_code(self) -> int | None:
        assert self._process is not None
        return self._process.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)


def token_id(token: str) -> str:
    """The ``jti`` of a service account token, which the audit log records for each request
    as ``authentication.kubernetes.io/credential-id``."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


# --- what tests apply --------------------------------------------------------------------


def secret_manifest(
    name: str, namespace: str, data: dict[str, str], labelled: bool = True
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "stringData": data,
    }


def callback_manifest(name: str, namespace: str, account: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceCallback",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accountName": account,
            "serviceName": "QoS",
            "url": f"https://listener.example.com/{name}",
            "credentialsSecretRef": {"name": "thingspace-credentials"},
            **spec,
        },
    }


def apply(plane: Cluster, *manifests: dict[str, Any], check: bool = True) -> Any:
    return plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests), check=check)


# --- what tests read back ---------------------------------------------------------------


def status_of(plane: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = plane.kubectl_json("-n", namespace, "get", "tscb", name)
    return dict(obj.get("status") or {})


def condition(plane: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    for item in status_of(plane, namespace, name).get("conditions") or ():
        if item["type"] == kind:
            return dict(item)
    return {}


def settled(plane: Cluster, namespace: str, name: str) -> bool:
    """The latest spec is handled: Ready, for this generation."""
    obj = plane.kubectl_json("-n", namespace, "get", "tscb", name)
    ready = [c for c in obj.get("status", {}).get("conditions", ()) if c["type"] == "Ready"]
    return bool(
        ready
        and ready[0]["status"] == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


def wait_ready(plane: Cluster, namespace: str, name: str) -> None:
    plane.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"tscb/{name}", "--timeout=60s")


def events(plane: Cluster, namespace: str, name: str | None = None) -> list[str]:
    items = plane.kubectl_json("-n", namespace, "get", "events")["items"]
    return [
        item.get("reason", "")
        for item in items
        if name is None or item.get("involvedObject", {}).get("name") == name
    ]


def remove_test_objects(
    plane: Cluster, namespaces: Sequence[str], secret_namespace: str, operator_running: bool
) -> None:
    """A module's teardown, pass or fail: delete the callbacks of its namespaces (let go by
    its operator when it still runs), the ThingSpaceAccounts whose Secret lives in its
    release namespace ``secret_namespace``, and the namespaces. A failed test so leaves
    nothing behind for a later module's operator, which watches the whole cluster too."""
    for namespace in namespaces:
        remove_callbacks(plane, namespace, deregister=operator_running)
    listed = plane.kubectl("get", "tsa", "-o", "json", check=False)
    accounts = [
        item["metadata"]["name"]
        for item in (json.loads(listed.stdout)["items"] if listed.returncode == 0 else [])
        if (item["spec"].get("credentialsSecretRef") or {}).get("namespace") == secret_namespace
    ]
    if accounts:
        plane.kubectl("delete", "tsa", *accounts, "--timeout=60s", check=False)
    # Waited for: a namespace being terminated still shows its callbacks to the next
    # module's operator, whose Events there are then refused (403).
    plane.kubectl("delete", "namespace", *namespaces, "--timeout=120s", check=False)


def remove_callbacks(plane: Cluster, namespace: str, deregister: bool) -> None:
    """Leave no callback behind for a later test's operator: a running operator
    deregisters them (``deregister``); those left lose their finalizers."""
    if deregister:
        plane.kubectl("-n", namespace, "delete", "tscb", "--all", "--timeout=90s", check=False)
    for name in plane.kubectl("-n", namespace, "get", "tscb", "-o", "name").stdout.split():
        plane.kubectl(
            "-n", namespace, "patch", name, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
