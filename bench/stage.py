"""What the real-control-plane benchmarks (handover, realcp) share: a control plane of
their own or the suite's, and on it a team namespace with credentials, the chart installed
for it, the simulator and a fleet of callbacks."""

import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    Release,
    Simulator,
    apply,
    callback_manifest,
    secret_manifest,
)
from tests.e2e.controlplane import Cluster, ControlPlane, ensure_binary

T = TypeVar("T")


def on_a_plane(measure: Callable[[Cluster, Path], T], plane: Cluster | None, prefix: str) -> T:
    """``measure`` on ``plane``, or on a control plane of its own."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        workdir = Path(tmp)
        if plane is not None:
            return measure(plane, workdir)
        with ControlPlane(ensure_binary(), workdir / "plane") as own:
            return measure(own, workdir)


class Stage:
    def __init__(self, plane: Cluster, workdir: Path, prefix: str, *values: str) -> None:
        self.plane, self.workdir = plane, workdir
        self.sim = Simulator(workdir)
        suffix = uuid.uuid4().hex[:6]
        self.team = f"{prefix}-team-{suffix}"
        plane.kubectl("create", "namespace", self.team)
        apply(plane, secret_manifest("thingspace-credentials", self.team, DEMO_CREDENTIALS))
        self.release = Release(plane, f"{prefix}-system-{suffix}", name=f"tso-{suffix}")
        self.release.install("--set", "watchNamespaces={" + self.team + "}", *values)

    def declare(self, n: int, services: Sequence[str], first_account: int) -> None:
        """``n`` callbacks, ``services`` filling each account before the next."""
        manifests = [
            callback_manifest(
                f"cb-{index}",
                self.team,
                f"{first_account + index // len(services):010d}-00001",
                serviceName=services[index % len(services)],
            )
            for index in range(n)
        ]
        apply(self.plane, *manifests)

    def ready(self) -> int:
        items = self.plane.kubectl_json("-n", self.team, "get", "tscb")["items"]
        return sum(
            1
            for item in items
            for c in (item.get("status") or {}).get("conditions") or ()
            if c["type"] == "Ready" and c["status"] == "True"
        )

    def close(self) -> None:
        self.sim.stop()
