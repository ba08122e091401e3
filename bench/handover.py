"""Leader handover on the real control plane: how long ThingSpace registrations go
unwatched when the leader is stopped (SIGTERM: a rolling upgrade or drain) or killed
(kill -9: a lost node), and what the new leader costs ThingSpace while it takes over.

    python -m bench.handover              # N=200, 3 trials of each; writes docs/benchmarks.md
    python -m bench.handover --no-write

The control plane, chart, simulator and proxies are the e2e suite's (tests/e2e): two
operator processes with the chart's settings and ServiceAccount, each with its own
recording proxy in front of the simulator.
"""

import argparse
import datetime
import os
import platform
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import sections
from bench.stage import Stage, on_a_plane
from tests.e2e.cluster import OperatorProcess, eventually, remove_test_objects
from tests.e2e.controlplane import Cluster
from tests.e2e.proxies import Candidate, LoopThread, RecordingProxy
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks.md"
# Distinct services (AlertsService is only another spelling of AlertService).
SERVICES = [s for s in CALLBACK_SERVICE_NAMES if s != "AlertsService"][:10]
QUIET_SECONDS = 3.0  # a new leader with no call for this long has resumed every resource


@dataclass
class Trial:
    kind: str  # "SIGTERM" | "kill -9"
    takeover: float  # stop -> the standby holds the Lease
    first_call: float  # stop -> the new leader's first ThingSpace call
    old_exit: float | None  # stop -> the old leader's exit (SIGTERM only)
    calls: Counter[str]  # the new leader's ThingSpace calls until it went quiet


class Bench(Stage):
    def __init__(self, plane: Cluster, workdir: Path, args: argparse.Namespace) -> None:
        super().__init__(
            plane, workdir, "handover",
            "--set", f"leaderElection.leaseDurationSeconds={args.lease_duration}",
            "--set", f"leaderElection.renewDeadlineSeconds={args.renew_deadline}",
            "--set", f"leaderElection.retryPeriodSeconds={args.retry_period}",
        )  # fmt: skip
        self.n = args.n
        self.loop = LoopThread()

    def candidate(self) -> Candidate:
        proxy = RecordingProxy(self.loop, self.sim.url)
        process = OperatorProcess(self.release, self.sim, self.workdir, thingspace_url=proxy.url)
        return Candidate(process.start(), proxy)

    def declare_fleet(self) -> None:
        self.declare(self.n, SERVICES, 8000000000)

    def all_ready(self) -> bool:
        return self.ready() == self.n

    def standby_of(self, leader: Candidate) -> Candidate:
        """A new standby, once it knows the leader and the leader is in steady state."""
        standby = self.candidate()
        eventually(lambda: standby.process.readiness().get("leader"), 30)
        eventually(lambda: leader.quiet(QUIET_SECONDS), 120)
        return standby

    def handover(self, leader: Candidate, standby: Candidate, kind: str) -> Trial:
        stopped = time.monotonic()
        leader.process.signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGKILL)
        takeover = _until(standby.leading, 60) - stopped
        old_exit = None
        if kind == "SIGTERM":
            old_exit = _until(lambda: leader.process.exit_code() is not None, 60) - stopped
        first_call = _until(lambda: standby.calls.calls, 60)
        _until(lambda: standby.quiet(QUIET_SECONDS), 120)
        calls = Counter(_endpoint(call.method, call.path) for call in standby.calls.calls)
        return Trial(kind, takeover, first_call - stopped, old_exit, calls)

    def close(self) -> None:
        super().close()
        self.loop.stop()


def _until(predicate: Any, limit: float) -> float:
    eventually(predicate, limit)
    return time.monotonic()


def _endpoint(method: str, path: str) -> str:
    if "oauth2/token" in path:
        return "token"
    if "session/login" in path:
        return "login"
    if method == "GET":
        return "list"
    return "register" if method == "POST" else "deregister"


def run(args: argparse.Namespace, plane: Cluster | None = None) -> list[Trial]:
    """The trials, on ``plane`` or on a control plane of their own."""
    return on_a_plane(lambda cluster, workdir: trials_on(cluster, workdir, args), plane, "handover")


def trials_on(plane: Cluster, workdir: Path, args: argparse.Namespace) -> list[Trial]:
    bench = Bench(plane, workdir, args)
    processes: list[Candidate] = []
    try:
        leader = bench.candidate()
        processes.append(leader)
        eventually(leader.leading, 30)
        bench.declare_fleet()
        eventually(bench.all_ready, 300)
        trials = []
        for kind in ["SIGTERM", "kill -9"] * args.trials:
            standby = bench.standby_of(leader)
            processes.append(standby)
            trials.append(bench.handover(leader, standby, kind))
            print(f"{kind}: {trials[-1]}", flush=True)
            leader = standby
        return trials
    finally:
        alive = any(candidate.process.exit_code() is None for candidate in processes)
        remove_test_objects(plane, [bench.team], bench.release.namespace, alive)
        for candidate in processes:
            candidate.process.stop()
            candidate.calls.close()
        bench.release.uninstall()
        bench.close()


def render(trials: list[Trial], args: argparse.Namespace) -> str:
    lines = [
        "## Handover (leader election, real control plane)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores), `python -m bench.handover {' '.join(sys.argv[1:])}`: "
        f"N={args.n} converged resources over {-(-args.n // len(SERVICES))} accounts, two "
        f"operator processes with the chart's settings (lease {args.lease_duration} s, renew "
        f"deadline {args.renew_deadline} s, retry {args.retry_period} s) against the project's "
        "kube-apiserver; median of "
        f"{args.trials} trials each. Takeover: from the stop to the standby holding the "
        "Lease. Calls: the new leader's ThingSpace calls until it went quiet (every resource "
        "resumed); the bound is token + login + one list per account, and no register.",
        "",
        "| stop | takeover (s) | first ThingSpace call (s) | old leader exited (s) "
        "| calls by the new leader | bound | registers |",
        "|---|---|---|---|---|---|---|",
    ]
    bound = 2 + -(-args.n // len(SERVICES))
    for kind in ("SIGTERM", "kill -9"):
        of_kind = [t for t in trials if t.kind == kind]
        exits = [t.old_exit for t in of_kind if t.old_exit is not None]
        calls = [sum(t.calls.values()) for t in of_kind]
        lines.append(
            f"| {kind} | {_median([t.takeover for t in of_kind])} "
            f"| {_median([t.first_call for t in of_kind])} "
            f"| {_median(exits) if exits else 'killed'} "
            f"| {statistics.median(calls):.0f} ({dict(of_kind[0].calls)}) | {bound} "
            f"| {max(t.calls['register'] for t in of_kind)} |"
        )
    return sections.wrap("handover", "\n".join(lines) + "\n")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}"


def write(section: str) -> None:
    REPORT.write_text(sections.with_section(REPORT.read_text(), "handover", section))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="converged resources")
    parser.add_argument("--trials", type=int, default=3, help="trials of each kind of stop")
    parser.add_argument("--lease-duration", type=int, default=15)
    parser.add_argument("--renew-deadline", type=int, default=10)
    parser.add_argument("--retry-period", type=int, default=2)
    parser.add_argument("--no-write", dest="write", action="store_false")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    section = render(run(arguments), arguments)
    print(section)
    if arguments.write:
        write(section)
