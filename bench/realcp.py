"""S1, S6 and S2 on the real control plane: the operator against the project's own
kube-apiserver (built by tests/controlplane), with the API server's audit log counting
every request the operator made, by verb.

    python -m bench.realcp                # N=1000; writes its section of docs/benchmarks.md
    python -m bench.realcp --no-write

The control plane, chart and simulator are the e2e suite's (tests/e2e): the chart installed
with helm, one operator process with the chart's arguments and ServiceAccount.
"""

import argparse
import datetime
import os
import platform
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import metrics, sections
from bench.stage import Stage, on_a_plane
from tests.e2e.cluster import OperatorProcess, eventually, remove_test_objects
from tests.e2e.controlplane import Cluster
from tests.e2e.rbac import used_requests
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks.md"
SERVICES = [s for s in CALLBACK_SERVICE_NAMES if s != "AlertsService"]
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class Phase:
    seconds: float
    calls: dict[str, int]
    verbs: Counter[str] = field(default_factory=Counter)  # the operator's, per the audit log

    @property
    def writes(self) -> int:
        return _writes(self.verbs)


@dataclass
class Figures:
    n: int
    accounts: int
    period: float
    converge: Phase
    restart: Phase
    steady_calls_per_period: float
    steady_writes_per_period: float


class Run(Stage):
    def __init__(self, plane: Cluster, workdir: Path, args: argparse.Namespace) -> None:
        super().__init__(
            plane, workdir, "realcp",
            "--set", "leaderElection.enabled=false", "--set", "replicaCount=1",
        )  # fmt: skip
        self.args = args
        self.accounts = -(-args.n // len(SERVICES))
        self.user = f"system:serviceaccount:{self.release.namespace}:{self.release.service_account}"

    def operator(self, resync: float) -> OperatorProcess:
        return OperatorProcess(
            self.release, self.sim, self.workdir, THINGSPACE_RESYNC_SECONDS=f"{resync:g}"
        )

    def declare_fleet(self) -> None:
        per_account = -(-self.args.n // self.accounts)
        self.declare(self.args.n, SERVICES[:per_account], 8100000000)

    def calls(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in self.sim.request("GET", "requests")["counts"]:
            totals[row["endpoint"]] = totals.get(row["endpoint"], 0) + row["count"]
        return totals

    def verbs(self, process: OperatorProcess) -> Counter[str]:
        """The operator process's requests as the API server recorded them."""
        requests = used_requests(self.plane.audit_events(), self.user, process.credential_id)
        return Counter(request.verb for request in requests)

    def settle(self, process: OperatorProcess, quiet: float = 2.0) -> Counter[str]:
        """The process's requests once no write has come for ``quiet`` seconds."""
        before = self.verbs(process)
        while True:
            time.sleep(quiet)
            after = self.verbs(process)
            if _writes(after) == _writes(before):
                return after
            before = after


def _writes(verbs: Counter[str]) -> int:
    return sum(n for verb, n in verbs.items() if verb in WRITE_VERBS)


def resumed(process: OperatorProcess) -> int:
    url = f"http://127.0.0.1:{process.env['THINGSPACE_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return metrics.resumed(response.read().decode())


def measure(plane: Cluster, workdir: Path, args: argparse.Namespace) -> Figures:
    run = Run(plane, workdir, args)
    run.sim.request("PUT", "config", {"latency_seconds": args.latency})
    operator = run.operator(args.converge_resync).start()
    try:
        # S1: the fleet declared at once, with the default drift period.
        run.sim.request("DELETE", "requests")
        started = time.monotonic()
        run.declare_fleet()
        eventually(lambda: run.ready() == args.n, 60 + args.n * 0.3, "all Ready")
        converge = Phase(time.monotonic() - started, run.calls(), run.settle(operator))
        operator.stop()

        # S6: a restart over the converged fleet, with the short drift period.
        run.sim.request("DELETE", "requests")
        started = time.monotonic()
        operator = run.operator(args.resync).start()
        eventually(lambda: resumed(operator) >= args.n, 60 + args.n * 0.1, "all resumed")
        restart = Phase(time.monotonic() - started, run.calls(), run.settle(operator))

        # S2: nothing changes for a few periods.
        time.sleep(args.resync)
        run.sim.request("DELETE", "requests")
        writes_before = _writes(run.verbs(operator))
        time.sleep(args.resync * args.periods)
        steady_calls = sum(run.calls().values()) / args.periods
        steady_writes = (_writes(run.verbs(operator)) - writes_before) / args.periods
        return Figures(
            args.n, run.accounts, args.resync, converge, restart, steady_calls, steady_writes
        )
    finally:
        operator.stop()
        # Nothing left for a later operator on this control plane.
        remove_test_objects(plane, [run.team], run.release.namespace, operator_running=False)
        run.release.uninstall()
        run.close()


def run_on(args: argparse.Namespace, plane: Cluster | None = None) -> Figures:
    return on_a_plane(lambda cluster, workdir: measure(cluster, workdir, args), plane, "realcp")


def render(figures: Figures, args: argparse.Namespace) -> str:
    n, m = figures.n, figures.accounts
    s1, s6 = figures.converge, figures.restart
    s1_bound, s6_bound = 2 + m + n, 2 + m
    body = "\n".join(
        [
            "## On the real control plane (S1, S6, S2)",
            "",
            f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on "
            f"{platform.node()} ({os.cpu_count()} cores), "
            f"`python -m bench.realcp {' '.join(sys.argv[1:])}`: N={n} over {m} accounts, "
            "one operator process with the chart's arguments and ServiceAccount against the "
            "project's kube-apiserver and etcd; the simulator in its own process, "
            f"{args.latency * 1000:.0f} ms per call. Kubernetes requests are the API server's "
            "audit log of the operator's own token, by verb (`get`, `list` and `watch` "
            "include the watches and the Secret reads). S1 time counts from the start of "
            "`kubectl apply` of the N manifests (one create request each) until all are Ready.",
            "",
            "| scenario | time (s) | ThingSpace calls | bound | Kubernetes writes "
            "| requests by verb (audit log) |",
            "|---|---|---|---|---|---|",
            f"| S1 converge {n} | {s1.seconds:.1f} | {sum(s1.calls.values())} ({s1.calls}) "
            f"| {s1_bound} | {s1.writes} ({s1.writes / n:.2f} per resource) "
            f"| {dict(sorted(s1.verbs.items()))} |",
            f"| S6 restart | {s6.seconds:.1f} | {sum(s6.calls.values())} ({s6.calls}) "
            f"| {s6_bound}, no register | {s6.writes} | {dict(sorted(s6.verbs.items()))} |",
            f"| S2 per period ({figures.period:g} s) | - | {figures.steady_calls_per_period:.1f} "
            f"| {m} | {figures.steady_writes_per_period:.1f} | - |",
        ]
    )
    return sections.wrap("realcp", body + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="resources")
    parser.add_argument("--converge-resync", type=float, default=300.0)
    parser.add_argument("--resync", type=float, default=10.0, help="drift period from S6 on")
    parser.add_argument("--periods", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.025, help="simulator, per call")
    parser.add_argument("--no-write", dest="write", action="store_false")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Any:
    figures = run_on(args)
    section = render(figures, args)
    print(section)
    if args.write:
        REPORT.write_text(sections.with_section(REPORT.read_text(), "realcp", section))
    return figures


if __name__ == "__main__":
    main(parse())
