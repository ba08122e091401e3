"""``make demo`` on a real Kubernetes control plane (tests/controlplane, built by the
project): the chart installed with helm, the operator running as the chart's
ServiceAccount, examples/ applied with the real kubectl. Every ``$ kubectl`` line printed
here is kubectl's own output."""

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.e2e.cluster import OperatorProcess, Release, Simulator
from tests.e2e.controlplane import ControlPlane
from tests.harness.demo import HAND_MADE, ROOT, TIMEOUT_SECONDS, WORKDIR, settled

NAMESPACE = "default"


def run_real_demo(binary: Path) -> int:
    workdir = WORKDIR / "cluster"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ControlPlane(binary, workdir) as plane:
        print(f"Kubernetes API (real kube-apiserver {version(plane)}): {plane.server}")
        print(f"  KUBECONFIG={plane.admin_kubeconfig}  (kubectl: {plane.bin / 'kubectl'})")
        sim = Simulator(workdir)
        operator: OperatorProcess | None = None
        try:
            print(f"ThingSpace simulator: {sim.url}")
            account, service, url = HAND_MADE
            sim.request("PUT", f"registrations/{account}/{service}", {"url": url})
            release = Release(plane, "thingspace-system", name="thingspace-operator")
            print(
                "\n$ helm install thingspace-operator charts/thingspace-operator "
                "-n thingspace-system --create-namespace"
            )
            release.install()
            operator = OperatorProcess(
                release, sim, workdir, THINGSPACE_RESYNC_SECONDS="30"
            ).start()
            print(
                f"Operator: as ServiceAccount thingspace-system/{release.service_account}, "
                f"log in {operator.log_path}"
            )
            command(plane, "apply", "-f", str(ROOT / "examples"), shown="apply -f examples/")
            ok = wait_until_settled(plane)
            command(plane, "get", "thingspacecallbacks", "-o", "wide")
            command(
                plane, "get", "events", "--field-selector", "involvedObject.kind=ThingSpaceCallback"
            )
            print("ThingSpace (simulator) registrations:")
            for acct, items in sim.request("GET", "registrations").items():
                for item in items:
                    masked = " (callback credentials set)" if item.get("password") else ""
                    print(f"  {acct}  {item['serviceName']:<24} {item['url']}{masked}")
            if not ok:
                print(
                    f"\nFAILED: not every resource settled within {TIMEOUT_SECONDS} s; "
                    f"see {operator.log_path}"
                )
                return 1
        finally:
            if operator is not None:
                operator.stop()
            sim.stop()
    print("\nDemo OK: every ThingSpaceCallback is reconciled, on a real API server.")
    return 0


def version(plane: ControlPlane) -> str:
    info = json.loads(plane.kubectl("version", "-o", "json").stdout)
    return str(info["serverVersion"]["gitVersion"])


def command(plane: ControlPlane, *args: str, shown: str = "") -> None:
    print(f"\n$ kubectl {shown or ' '.join(args)}")
    print(plane.kubectl("-n", NAMESPACE, *args).stdout.rstrip())


def wait_until_settled(plane: ControlPlane) -> bool:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        items: list[dict[str, Any]] = plane.kubectl_json("-n", NAMESPACE, "get", "tscb")["items"]
        if items and all(settled(obj) for obj in items):
            return True
        time.sleep(0.5)
    return False
