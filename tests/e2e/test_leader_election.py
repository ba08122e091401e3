"""Leader election on a real kube-apiserver: two operator processes of one release, each
with its own token (the audit log tells them apart) and its own recording proxy in front of
the simulator (every ThingSpace call each one makes is on record).

Timings use the chart's defaults, which are client-go's: lease 15 s, renew deadline 10 s,
retry period 2 s.
"""

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench import handover
from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    condition,
    eventually,
    needs_control,
    remove_test_objects,
    secret_manifest,
    settled,
    unique,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.proxies import Candidate, CuttableTcpProxy, LoopThread, RecordingProxy
from tests.e2e.rbac import used_requests
from thingspace_operator.kube import rejections
from thingspace_operator.thingspace.http import LOGIN_PATH
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

LEASE_DURATION, RENEW_DEADLINE = 15.0, 10.0
# Distinct services (AlertsService is only another spelling of AlertService).
SERVICES = [s for s in CALLBACK_SERVICE_NAMES if s != "AlertsService"][:20]


@dataclass
class HighAvailability:
    plane: Cluster
    sim: Simulator
    release: Release
    team: str
    workdir: Path
    loop: LoopThread
    candidates: list[Candidate] = field(default_factory=list)
    declared: dict[tuple[str, str], str] = field(default_factory=dict)
    accounts: int = 0

    @property
    def lease(self) -> str:
        return self.release.service_account  # the chart names the Lease after the release

    def start(self, api_server: str | None = None, **env: str) -> Candidate:
        proxy = RecordingProxy(self.loop, self.sim.url)
        process = OperatorProcess(
            self.release, self.sim, self.workdir, api_server=api_server,
            thingspace_url=proxy.url, THINGSPACE_RESYNC_SECONDS="3", **env,
        )  # fmt: skip
        candidate = Candidate(process.start(), proxy)
        self.candidates.append(candidate)
        return candidate

    def leader_then_standby(self, **env: str) -> tuple[Candidate, Candidate]:
        leader = self.start(**env)
        eventually(leader.leading, 20, "first process leads")
        standby = self.start(**env)
        eventually(lambda: standby.process.readiness().get("leader") == leader.identity, 20)
        return leader, standby

    def holder(self) -> str:
        lease = self.plane.kubectl_json("-n", self.release.namespace, "get", "lease", self.lease)
        return str(lease["spec"].get("holderIdentity") or "")

    def declare(self, accounts: int, services: list[str], prefix: str = "cb") -> None:
        """Apply one callback per account and service, on accounts not used before."""
        manifests: list[dict[str, Any]] = []
        for _ in range(accounts):
            self.accounts += 1
            account = f"{7000000000 + self.accounts:010d}-00001"
            for service in services:
                name = unique(prefix)
                manifests.append(callback_manifest(name, self.team, account, serviceName=service))
                self.declared[(account, service)] = f"https://listener.example.com/{name}"
        apply(self.plane, *manifests)

    def all_ready(self) -> bool:
        """Every declared callback Ready for its latest generation."""
        items = self.plane.kubectl_json("-n", self.team, "get", "tscb")["items"]
        return len(items) == len(self.declared) and all(map(handled, items))

    def clean_up(self) -> None:
        alive = any(c.process.exit_code() is None for c in self.candidates)
        remove_test_objects(self.plane, [self.team], self.release.namespace, alive)

    def registered(self) -> dict[tuple[str, str], str]:
        live = self.sim.request("GET", "registrations")
        return {
            (account, item["serviceName"]): item["url"]
            for account, items in live.items()
            for item in items
        }

    def register_counts(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for candidate in self.candidates:
            for call in candidate.calls.registers():
                counts[(call.path.rsplit("/", 1)[-1], call.service)] += 1
        return counts


@pytest.fixture
def ha(plane: Cluster, sim: Simulator, tmp_path: Path) -> Iterator[HighAvailability]:
    """A fresh release (its own Lease) and team namespace; the simulator emptied."""
    sim.request("POST", "reset")
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("ha-system"), name=unique("tso"))
    release.install("--set", "watchNamespaces={" + team + "}")  # no other test's objects
    apply(plane, secret_manifest("thingspace-credentials", team, DEMO_CREDENTIALS))
    loop = LoopThread()
    setup = HighAvailability(plane, sim, release, team, tmp_path, loop)
    try:
        yield setup
    finally:
        setup.clean_up()
        for candidate in setup.candidates:
            candidate.process.stop()
            candidate.calls.close()
        release.uninstall()
        loop.stop()


def test_one_process_acts_and_the_standby_makes_no_call(ha: HighAvailability) -> None:
    leader, standby = ha.leader_then_standby()
    assert ha.holder() == leader.identity
    ha.declare(2, ["QoS", "CarrierService", "DeviceUsage"])
    eventually(ha.all_ready, 60, "all Ready")
    assert ha.registered() == ha.declared
    assert leader.calls.calls
    assert standby.calls.calls == []
    assert leader.process.metric("thingspace_leader") == 1
    assert standby.process.metric("thingspace_leader") == 0
    assert standby.process.readiness() == {
        "leaderElection": True,
        "identity": standby.identity,
        "leader": leader.identity,
        "leading": False,
        "lease": f"{ha.release.namespace}/{ha.lease}",
    }
    assert f"{leader.identity} became leader" in lease_events(ha)


def test_the_standby_reads_only_its_lease(ha: HighAvailability) -> None:
    """From the audit log: a standby's every request is a get or watch of its own Lease,
    and each was allowed (the chart's lease Role covers the watch by name)."""
    needs_control(ha.plane)
    _, standby = ha.leader_then_standby()
    ha.declare(1, ["QoS"])
    eventually(ha.all_ready, 60, "Ready")
    user = f"system:serviceaccount:{ha.release.namespace}:{ha.release.service_account}"

    def standby_requests() -> list[Any]:
        return list(used_requests(ha.plane.audit_events(), user, standby.process.credential_id))

    eventually(lambda: {r.verb for r in standby_requests()} == {"get", "watch"}, 20)
    assert {(r.group, r.resource, r.name, r.code) for r in standby_requests()} == {
        ("coordination.k8s.io", "leases", ha.lease, 200)
    }


def test_sigterm_mid_convergence_hands_over_in_under_3_seconds(ha: HighAvailability) -> None:
    # 2 calls per second per account: 200 registrations take ~10 s, so the SIGTERM lands
    # in the middle of them.
    leader, standby = ha.leader_then_standby(THINGSPACE_MAX_CALLS_PER_SECOND_PER_ACCOUNT="2")
    ha.declare(10, SERVICES)
    eventually(lambda: len(leader.calls.registers()) >= 30, 60, "convergence under way")
    signalled = time.monotonic()
    leader.process.signal(signal.SIGTERM)
    eventually(standby.leading, 10, "the standby leads")
    handover = time.monotonic() - signalled
    assert len(leader.calls.registers()) < len(ha.declared), "converged before the SIGTERM"
    assert handover < 3.0, f"handover took {handover:.2f} s"
    eventually(lambda: leader.process.exit_code() == 0, 30, "the old leader exits cleanly")
    eventually(ha.all_ready, 120, "all 200 Ready")
    last_of_old = max(call.at for call in leader.calls.calls)
    assert min(call.at for call in standby.calls.calls) > last_of_old  # never both at once
    assert ha.registered() == ha.declared
    assert set(ha.register_counts().values()) == {1}, "a registration was written twice"


def test_kill_9_takeover_within_the_lease_duration(ha: HighAvailability) -> None:
    leader, standby = ha.leader_then_standby()
    ha.declare(2, SERVICES[:10])
    eventually(ha.all_ready, 60, "all Ready")
    killed = time.monotonic()
    leader.process.signal(signal.SIGKILL)
    ha.declare(1, SERVICES[:10], prefix="later")  # declared while nobody leads
    eventually(standby.leading, LEASE_DURATION + 5, "takeover")
    assert time.monotonic() - killed < LEASE_DURATION + 5
    eventually(ha.all_ready, 60, "all Ready after the takeover")
    assert ha.registered() == ha.declared
    assert set(ha.register_counts().values()) == {1}


def test_a_partitioned_leader_stops_calling_thingspace_and_exits(ha: HighAvailability) -> None:
    proxy = CuttableTcpProxy(ha.loop, "127.0.0.1", int(ha.plane.server.rsplit(":", 1)[1]))
    try:
        leader = ha.start(api_server=f"https://127.0.0.1:{proxy.port}")
        eventually(leader.leading, 20, "the proxied process leads")
        standby = ha.start()
        ha.declare(2, SERVICES[:5])
        eventually(ha.all_ready, 60, "all Ready")
        proxy.cut()
        assert proxy.cut_at is not None
        eventually(lambda: leader.process.exit_code() is not None, RENEW_DEADLINE + 5)
        assert leader.process.exit_code() == 3, leader.process.log()[-2000:]
        after_cut = [
            call.at - proxy.cut_at for call in leader.calls.calls if call.at > proxy.cut_at
        ]
        assert after_cut, "the leader made no ThingSpace call while partitioned"
        assert max(after_cut) < RENEW_DEADLINE, "a ThingSpace call after the renew deadline"
        eventually(standby.leading, LEASE_DURATION + 10, "the standby takes over")
        ha.declare(1, ["QoS"], prefix="after")
        eventually(ha.all_ready, 60, "the new leader acts")
        assert ha.registered() == ha.declared
        first_of_new = min(call.at for call in standby.calls.calls)
        assert first_of_new > max(call.at for call in leader.calls.calls)
    finally:
        proxy.close()


def test_a_new_leader_never_retries_a_login_the_last_one_saw_rejected(
    ha: HighAvailability,
) -> None:
    """Five rejected logins lock the UWS user: a handover (or a restart, an upgrade) must
    not cost one more each time. The rejection passes to the next leader on the Lease, as
    the Secret's name and resourceVersion, never a value."""
    wrong = {**DEMO_CREDENTIALS, "password": "wrong-password-e2e"}
    apply(ha.plane, secret_manifest("wrong-credentials", ha.team, wrong))
    leader, standby = ha.leader_then_standby()
    name = unique("cb")
    ref = {"name": "wrong-credentials"}
    apply(ha.plane, callback_manifest(name, ha.team, "0000123456-00001", credentialsSecretRef=ref))

    def synced() -> dict[str, Any]:
        return condition(ha.plane, ha.team, name, "Synced")

    eventually(lambda: synced().get("reason") == "AuthenticationFailed", 30, "rejected")
    eventually(lambda: rejections.ANNOTATION in lease_annotations(ha), 10, "recorded")
    assert f"{ha.team}/wrong-credentials" in lease_annotations(ha)[rejections.ANNOTATION]
    leader.process.signal(signal.SIGTERM)
    eventually(standby.leading, 10, "the standby leads")
    # The new leader's own verdict names where it learned it.
    eventually(lambda: f"Lease {ha.release.namespace}/" in synced().get("message", ""), 60)
    assert logins(ha) == 1, "the new leader sent the rejected login again"
    assert ha.sim.request("GET", "logins")["failed"] == {"demo-user": 1}
    assert "wrong-password-e2e" not in json.dumps(lease(ha))

    apply(ha.plane, secret_manifest("wrong-credentials", ha.team, DEMO_CREDENTIALS))  # fixed
    eventually(lambda: settled(ha.plane, ha.team, name), 60, "Ready with the fixed Secret")
    assert logins(ha) == 2
    eventually(lambda: rejections.ANNOTATION not in lease_annotations(ha), 10, "cleared")


def logins(ha: HighAvailability) -> int:
    return sum(
        call.path == LOGIN_PATH for candidate in ha.candidates for call in candidate.calls.calls
    )


def lease(ha: HighAvailability) -> dict[str, Any]:
    return dict(ha.plane.kubectl_json("-n", ha.release.namespace, "get", "lease", ha.lease))


def lease_annotations(ha: HighAvailability) -> dict[str, str]:
    return dict(lease(ha)["metadata"].get("annotations") or {})


def handled(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    ready = [c for c in status.get("conditions") or () if c["type"] == "Ready"]
    generation = item["metadata"]["generation"]
    return bool(
        ready and ready[0]["status"] == "True" and status.get("observedGeneration") == generation
    )


def lease_events(ha: HighAvailability) -> list[str]:
    items = ha.plane.kubectl_json("-n", ha.release.namespace, "get", "events")["items"]
    return [
        item.get("message", "")
        for item in items
        if item.get("involvedObject", {}).get("kind") == "Lease"
    ]


def test_the_handover_benchmark_runs(plane: Cluster) -> None:
    """A tiny run of bench/handover.py (short lease timings), so the benchmark cannot rot."""
    args = handover.parse(
        ["--n", "4", "--trials", "1", "--lease-duration", "3", "--renew-deadline", "2",
         "--retry-period", "1", "--no-write"]
    )  # fmt: skip
    trials = handover.run(args, plane)
    assert [trial.kind for trial in trials] == ["SIGTERM", "kill -9"]
    assert all(trial.calls["register"] == 0 for trial in trials)
    assert all(0 < trial.takeover < 10 for trial in trials)
    assert "| kill -9 |" in handover.render(trials, args)
