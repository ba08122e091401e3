"""S1, S6, S2 and the deletion of the fleet on the real control plane: the operator
against the project's own kube-apiserver (built by tests/controlplane), with the API
server's audit log counting every request the operator made, by verb.

    python -m bench.realcp                # N=1000; writes its sections of docs/benchmarks.md
    python -m bench.realcp --only-delete  # the fleet converged, then only the deletion
    python -m bench.realcp --no-write

The control plane, chart and simulator are the e2e suite's (tests/e2e): the chart installed
with helm, one operator process with the chart's arguments and ServiceAccount.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench import metrics, sections
from bench.stage import Stage, on_a_plane
from tests.e2e.cluster import (
    OperatorProcess,
    apply,
    callback_manifest,
    eventually,
    remove_test_objects,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.rbac import used_requests
from thingspace_operator.config import OperatorConfig
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
class Deletion:
    """``kubectl delete tscb --all --wait`` over the converged fleet. Times are seconds
    from the start of the command."""

    seconds: float  # until kubectl returned
    marked: float  # every callback marked for deletion (kubectl's last DELETE took effect)
    first_deregister: float
    last_deregister: float
    gone: float  # the API server holds none of them any more
    calls: dict[str, int]
    verbs: Counter[str]  # the operator's, per the audit log
    handled: int  # deletions the operator's handler completed (its log)
    retried: int  # deletions the handler failed and kopf retried (its log)
    wait_gets: int  # kubectl's GETs of single callbacks while it waited
    throttled: float  # seconds kubectl held its own requests back (client-side throttling)
    kubectl_alone: float | None  # the same command over as many callbacks nobody holds

    @property
    def deregistering(self) -> float:
        """From the first deregistration to the last (the simulator's request counts)."""
        return self.last_deregister - self.first_deregister

    @property
    def writes(self) -> int:
        return _writes(self.verbs)


@dataclass
class Figures:
    n: int
    accounts: int
    period: float
    converge: Phase | None
    restart: Phase | None
    steady_calls_per_period: float
    steady_writes_per_period: float
    deletion: Deletion | None = None


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
    converge = restart = None
    steady_calls = steady_writes = 0.0
    try:
        # S1: the fleet declared at once, with the default drift period.
        run.sim.request("DELETE", "requests")
        started = time.monotonic()
        run.declare_fleet()
        eventually(lambda: run.ready() == args.n, 60 + args.n * 0.3, "all Ready")
        converge = Phase(time.monotonic() - started, run.calls(), run.settle(operator))
        if not args.only_delete:
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

            # The deletion, by an operator with the default drift period again.
            operator.stop()
            operator = run.operator(args.converge_resync).start()
            eventually(lambda: resumed(operator) >= args.n, 60 + args.n * 0.1, "all resumed")
            run.settle(operator)
        deletion = delete_all(run, operator, workdir)
        return Figures(
            args.n,
            run.accounts,
            args.resync,
            None if args.only_delete else converge,
            restart,
            steady_calls,
            steady_writes,
            deletion,
        )
    finally:
        operator.stop()
        # Nothing left for a later operator on this control plane.
        remove_test_objects(plane, [run.team], run.release.namespace, operator_running=False)
        run.release.uninstall()
        run.close()


def delete_all(run: Run, operator: OperatorProcess, workdir: Path) -> Deletion:
    """``kubectl delete tscb --all --wait`` over the converged fleet, as users delete it,
    with a watch timing when each callback was marked and when it was gone, the
    simulator's counts timing the deregistrations, and kubectl's own log (-v=6) counting
    its requests while it waited."""
    n = run.args.n
    run.sim.request("DELETE", "requests")
    verbs_before = run.verbs(operator)
    log_before = operator.log().count("\n")
    watch = CallbackWatch(run.plane, run.team, workdir / "deletion-watch.log")
    deregisters = Deregisters(run)
    try:
        started = time.monotonic()
        done = _kubectl_delete_all(run.plane, run.team, workdir / "kubectl-delete.log")
        seconds = time.monotonic() - started
        eventually(lambda: watch.gone_count() >= n, 60, "every deletion seen")
        eventually(lambda: deregisters.count >= n, 60, "every deregistration counted")
    finally:
        deregisters.stop()
        watch.stop()
    verbs = run.settle(operator) - verbs_before
    log = operator.log().split("\n")[log_before:]
    requests = _kubectl_requests(done)
    alone = kubectl_alone(run, n) if run.args.kubectl_alone else None
    return Deletion(
        seconds=seconds,
        marked=watch.all_marked - started,
        first_deregister=deregisters.first - started,
        last_deregister=deregisters.last - started,
        gone=watch.all_gone - started,
        calls=run.calls(),
        verbs=verbs,
        handled=sum("deregister' succeeded" in line for line in log),
        retried=sum(_retried(line) for line in log),
        wait_gets=requests["wait_gets"],
        throttled=requests["throttled"],
        kubectl_alone=alone,
    )


def kubectl_alone(run: Run, n: int) -> float:
    """The same ``kubectl delete --all --wait`` over ``n`` callbacks that no operator
    holds (in a namespace the release does not watch: no finalizer): kubectl's own time."""
    namespace = f"{run.team}-alone"
    run.plane.kubectl("create", "namespace", namespace)
    try:
        manifests = [
            callback_manifest(f"cb-{i}", namespace, f"{8100000000 + i // 23:010d}-00001")
            for i in range(n)
        ]
        apply(run.plane, *manifests)
        started = time.monotonic()
        _kubectl_delete_all(run.plane, namespace, None)
        return time.monotonic() - started
    finally:
        run.plane.kubectl("delete", "namespace", namespace, "--timeout=120s", check=False)


def _kubectl_delete_all(plane: Cluster, namespace: str, log: Path | None) -> str:
    """``kubectl delete tscb --all --wait`` (kubectl's default) in ``namespace``; its -v=6
    log when ``log`` is given."""
    verbosity = ["-v=6"] if log is not None else []
    done = subprocess.run(  # noqa: S603 - kubectl with fixed arguments
        [str(plane.bin / "kubectl"), *verbosity, "-n", namespace, "delete", "tscb", "--all",
         "--wait", "--timeout=1800s"],
        capture_output=True, text=True, env=plane.env(), check=False, timeout=2000,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"kubectl delete failed:\n{done.stderr[-3000:]}")
    if log is not None:
        log.write_text(done.stderr)
    return done.stderr


def _kubectl_requests(log: str) -> dict[str, Any]:
    """From kubectl's -v=6 log: its GETs of single callbacks (how ``--wait`` waits, one
    after another) and how long its client-side rate limit held its requests back."""
    wait_gets = len(re.findall(r'"Response" verb="GET" url="[^"]*/thingspacecallbacks/', log))
    throttled = sum(
        _go_seconds(delay)
        for delay in re.findall(r'delay="([^"]+)" reason="client-side throttling', log)
    )
    return {"wait_gets": wait_gets, "throttled": throttled}


def _go_seconds(duration: str) -> float:
    """A Go duration as klog prints it (``185.56ms``, ``1.2s``) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(
        float(value) * units[unit]
        for value, unit in re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", duration)
    )


def _retried(line: str) -> bool:
    """A line of the operator's log saying kopf will run the deletion handler again."""
    failed = "failed temporarily" in line or "failed with an exception" in line
    return "deregister" in line and failed


class CallbackWatch:
    """A watch of a namespace's callbacks from now on (``kubectl get --raw``, from the
    resourceVersion of a listing made first, so nothing is missed however late the
    stream opens): when each was first seen marked for deletion, and when each was gone."""

    def __init__(self, plane: Cluster, namespace: str, log: Path) -> None:
        self.marked: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        path = f"/apis/thingspace.io/v1alpha1/namespaces/{namespace}/thingspacecallbacks"
        listed = json.loads(plane.kubectl("get", "--raw", f"{path}?limit=1").stdout)
        version = listed["metadata"]["resourceVersion"]
        self._log: TextIO = log.open("w")
        self._process = subprocess.Popen(  # noqa: S603 - kubectl with fixed arguments
            [str(plane.bin / "kubectl"), "get", "--raw",
             f"{path}?watch=1&resourceVersion={version}"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=plane.env(),
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            now = time.monotonic()
            event = json.loads(line)
            meta = (event.get("object") or {}).get("metadata") or {}
            name = meta.get("name")
            if event.get("type") not in ("MODIFIED", "DELETED") or not name:
                continue
            if meta.get("deletionTimestamp") or event["type"] == "DELETED":
                self.marked.setdefault(name, now)
            if event["type"] == "DELETED":
                self.gone[name] = now

    def gone_count(self) -> int:
        return len(self.gone)

    @property
    def all_marked(self) -> float:
        return max(self.marked.values())

    @property
    def all_gone(self) -> float:
        return max(self.gone.values())

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._reader.join(10)
        self._log.close()


class Deregisters:
    """The simulator's count of deregistrations, read ten times a second: when the first
    and the last were answered."""

    def __init__(self, run: Run) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self._run = run
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopped.wait(0.1):
            count = self._run.calls().get("deregister", 0)
            now = time.monotonic()
            if count and not self.count:
                self.first = now
            if count > self.count:
                self.last = now
            self.count = count

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)


def run_on(args: argparse.Namespace, plane: Cluster | None = None) -> Figures:
    return on_a_plane(lambda cluster, workdir: measure(cluster, workdir, args), plane, "realcp")


def render(figures: Figures, args: argparse.Namespace) -> str:
    n, m = figures.n, figures.accounts
    s1, s6 = figures.converge, figures.restart
    assert s1 is not None, "S1 was not run"
    assert s6 is not None, "S6 was not run"
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


def render_deletion(figures: Figures, args: argparse.Namespace) -> str:
    d = figures.deletion
    assert d is not None
    n, m = figures.n, figures.accounts
    per_account = -(-n // m)
    alone = f"{d.kubectl_alone:.1f}" if d.kubectl_alone is not None else "-"
    deregistering = max(d.deregistering, 0.1)  # the resolution of the simulator's counts
    body = "\n".join(
        [
            "## Deleting the fleet on the real control plane",
            "",
            f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on "
            f"{platform.node()} ({os.cpu_count()} cores), "
            f"`python -m bench.realcp {' '.join(sys.argv[1:])}`: N={n} converged callbacks "
            f"over {m} accounts in one namespace, deleted with `kubectl delete tscb --all "
            "--wait`; the operator process, simulator and control plane as above. Times are "
            "seconds from the start of that command: deregistrations by the simulator's "
            "request counts (read every 0.1 s), the callbacks' deletion by a watch of the "
            "namespace's callbacks. *kubectl alone*: the same command over N callbacks "
            "no operator holds (no finalizer), in a namespace the release does not watch.",
            "",
            "| N | kubectl returned (s) | all marked for deletion (s) "
            "| deregistrations, first to last (s) | all gone (s) "
            "| all gone / deregistering | kubectl / deregistering | kubectl alone (s) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {n} | {d.seconds:.1f} | {d.marked:.1f} "
            f"| {d.first_deregister:.1f} to {d.last_deregister:.1f} ({d.deregistering:.1f}) "
            f"| {d.gone:.1f} | {d.gone / deregistering:.2f} "
            f"| {d.seconds / deregistering:.1f} | {alone} |",
            "",
            f"- ThingSpace calls during the deletion: {sum(d.calls.values())} "
            f"({dict(sorted(d.calls.items()))}); the per-account budget alone "
            f"(`THINGSPACE_MAX_CALLS_PER_SECOND_PER_ACCOUNT`, "
            f"{args.calls_per_second:g}) needs {per_account / args.calls_per_second:.1f} s "
            f"for {per_account} deregistrations of one account.",
            f"- The operator: {d.handled} deletions handled, {d.retried} retried; "
            f"{d.writes} Kubernetes writes ({d.writes / n:.2f} per resource: the finalizer's "
            f"removal and the `Deregistered` Event), requests by verb "
            f"{dict(sorted(d.verbs.items()))}.",
            f"- kubectl's wait: {d.wait_gets} GETs of one callback each, one after another, "
            f"held back {d.throttled:.1f} s in total by its client-side rate limit.",
        ]
    )
    return sections.wrap("realcp-delete", body + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="resources")
    parser.add_argument("--converge-resync", type=float, default=300.0)
    parser.add_argument("--resync", type=float, default=10.0, help="drift period from S6 on")
    parser.add_argument("--periods", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.025, help="simulator, per call")
    parser.add_argument(
        "--only-delete",
        action="store_true",
        help="converge the fleet, then only the deletion (no S1, S6 or S2 figures)",
    )
    parser.add_argument(
        "--no-kubectl-alone",
        dest="kubectl_alone",
        action="store_false",
        help="skip timing the same kubectl command over callbacks no operator holds",
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    args.calls_per_second = OperatorConfig().max_calls_per_second_per_account
    return args


def main(args: argparse.Namespace) -> Any:
    figures = run_on(args)
    rendered = [("realcp-delete", render_deletion(figures, args))]
    if figures.converge is not None:
        rendered.insert(0, ("realcp", render(figures, args)))
    text = REPORT.read_text()
    for name, section in rendered:
        print(section)
        text = sections.with_section(text, name, section)
    if args.write:
        REPORT.write_text(text)
    return figures


if __name__ == "__main__":
    main(parse())
