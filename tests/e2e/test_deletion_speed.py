"""Deleting many callbacks at once on a real API server: each deletion is handled once, as
soon as it is seen, its only writes are the finalizer's removal and one Event (by the API
server's audit log), and nothing is retried (by the operator's log).

How long `kubectl delete tscb --all --wait` takes is mostly kubectl's own: it GETs every
object in turn, five a second, however fast they went (docs/performance.md, "Deleting many
callbacks"); the figures are the benchmark's (`python -m bench.realcp --only-delete`).
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    eventually,
    needs_control,
    remove_test_objects,
    secret_manifest,
    unique,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.rbac import used_requests
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

N = 100
SERVICES = CALLBACK_SERVICE_NAMES[:20]
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
#: What a deletion may write (the Lease of leader election is renewed meanwhile).
ABOUT_CALLBACKS = ("thingspacecallbacks", "thingspacecallbacks/status", "events")


@dataclass
class Installation:
    plane: Cluster
    sim: Simulator
    release: Release
    operator: OperatorProcess
    team: str

    def writes(self) -> Counter[tuple[str, str]]:
        """The operator's writes of callbacks and Events so far, by (verb, resource), from
        the audit log."""
        user = f"system:serviceaccount:{self.release.namespace}:{self.release.service_account}"
        requests = used_requests(self.plane.audit_events(), user, self.operator.credential_id)
        return Counter(
            (request.verb, request.resource)
            for request in requests
            if request.verb in WRITE_VERBS and request.resource in ABOUT_CALLBACKS
        )

    def left(self) -> list[str]:
        listed = self.plane.kubectl("-n", self.team, "get", "tscb", "-o", "name")
        return listed.stdout.split()

    def ready(self) -> int:
        items = self.plane.kubectl_json("-n", self.team, "get", "tscb")["items"]
        return sum(
            1
            for item in items
            for c in (item.get("status") or {}).get("conditions") or ()
            if c["type"] == "Ready" and c["status"] == "True"
        )


@pytest.fixture(scope="module")
def installed(
    plane: Cluster, sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    needs_control(plane)  # reads the audit log
    team = unique("deletions")
    plane.kubectl("create", "namespace", team)
    apply(plane, secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS))
    release = Release(plane, unique("thingspace-system"), name=unique("tso"))
    release.install("--set", "watchNamespaces={" + team + "}")
    operator: OperatorProcess | None = None
    try:
        operator = OperatorProcess(release, sim, tmp_path_factory.mktemp("operator")).start()
        yield Installation(plane, sim, release, operator, team)
    finally:
        remove_test_objects(plane, [team], release.namespace, operator is not None)
        if operator is not None:
            operator.stop()
        release.uninstall()


def test_each_deletion_of_a_burst_is_handled_once_with_two_writes(
    installed: Installation,
) -> None:
    plane, sim, operator = installed.plane, installed.sim, installed.operator
    manifests = [
        callback_manifest(
            f"cb-{i}",
            installed.team,
            f"{9100000000 + i // len(SERVICES):010d}-00001",
            serviceName=SERVICES[i % len(SERVICES)],
        )
        for i in range(N)
    ]
    apply(plane, *manifests)
    eventually(lambda: installed.ready() == N, 120, f"{N} Ready")
    # Converged: the status patches and Events trailing the last Ready are in.
    eventually(lambda: installed.writes()[("create", "events")] >= N, 30, "the Events")
    writes_before = installed.writes()
    deregistered_before = sim.calls("deregister")
    log_before = len(operator.log())

    plane.kubectl("-n", installed.team, "delete", "tscb", "--all", "--wait=false")
    eventually(lambda: installed.left() == [], 120, "every callback gone")
    events = writes_before[("create", "events")] + N
    eventually(lambda: installed.writes()[("create", "events")] >= events, 30, "the Events")

    assert sim.calls("deregister") - deregistered_before == N
    # One finalizer removal and one Event each; a retry would also patch kopf's progress
    # annotations, a failed attempt the status.
    assert installed.writes() - writes_before == Counter(
        {("patch", "thingspacecallbacks"): N, ("create", "events"): N}
    )
    log = operator.log()[log_before:]
    assert log.count("deregister' succeeded") == N
    assert "failed temporarily" not in log
    assert "to show the deletion" not in log
