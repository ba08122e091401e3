"""Chaos soak: on the project's real control plane, two operator processes with leader
election and the chart's settings, the simulator behind recording proxies, a seeded
workload and fault schedule, and the invariants checked all the way (bench/soak_checks.py).

    python -m bench.soak --duration 3600 --seed 7 --n 40

It prints the seed first; the same seed replays the same schedule. Exit 0: no violation.
"""

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import soak_checks as checks
from bench.soak_plan import FAULT_KINDS, Fault, Op, faults, ops
from bench.soak_wire import HealableProxy, SoakProxy, SoakSimulator
from bench.soak_workload import Workload, credential_sets
from bench.stage import on_a_plane
from tests.e2e.cluster import CHART, OperatorProcess, Release, remove_test_objects
from tests.e2e.controlplane import Cluster, ControlPlane
from tests.e2e.proxies import LoopThread

CHART_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
MEMORY_LIMIT_KIB = int(CHART_VALUES["resources"]["limits"]["memory"].removesuffix("Mi")) * 1024


class Violation(Exception):
    pass


@dataclass
class Pod:
    """One replica: its process (restarted as the kubelet would), its proxies."""

    name: str
    process: OperatorProcess
    calls: SoakProxy
    api: HealableProxy
    starts: int = 0
    rss_baseline: dict[str, int] = field(default_factory=dict)  # incarnation -> KiB
    rss_last: dict[str, int] = field(default_factory=dict)

    @property
    def incarnation(self) -> str:
        return f"{self.name}#{self.starts}"

    def alive(self) -> bool:
        proc = getattr(self.process, "_process", None)
        return proc is not None and proc.poll() is None

    def pid(self) -> int:
        return int(self.process._process.pid)  # type: ignore[union-attr]

    def leading(self) -> bool:
        return self.alive() and self.process.readiness().get("leading") is True


class Soak:
    def __init__(self, plane: Cluster, workdir: Path, args: argparse.Namespace) -> None:
        self.plane, self.workdir, self.args = plane, workdir, args
        self.started = time.monotonic()
        self.stop = threading.Event()  # no more restarts, workload or faults
        # Children die with the thread that started them (PR_SET_PDEATHSIG): the supervisors
        # and the API server's restarter live until the very end.
        self.halt = threading.Event()
        self.plane_jobs: queue.Queue[float] = queue.Queue()
        self.plane_done: queue.Queue[str] = queue.Queue()
        self.violations: list[tuple[float, str]] = []
        self.timeline: list[tuple[float, float, str, str]] = []  # (start, end, kind, detail)
        self.injected: Counter[str] = Counter()
        self.checks_made = 0
        self.api_lock = threading.Lock()
        self.not_ready_since: dict[str, float] = {}
        self.longest_not_ready = (0.0, "")
        self.log_offsets: dict[Path, int] = {}
        self.suffix = uuid.uuid4().hex[:6]
        self.namespaces: list[str] = []

    def t(self) -> float:
        return time.monotonic() - self.started

    # --- set-up --------------------------------------------------------------------

    def setup(self) -> None:
        suffix, seed = self.suffix, self.args.seed
        self.namespaces = [f"soak-{suffix}-t{i}" for i in range(3)]
        for namespace in self.namespaces:
            self.plane.kubectl("create", "namespace", namespace)
        self.release = Release(self.plane, f"soak-{suffix}-system", name=f"tso-soak-{suffix}")
        # The chart's settings; a short drift period and backoff so a run can end in quiet.
        self.release.install(
            "--set", f"thingspace.resyncSeconds={self.args.resync}",
            "--set", "thingspace.retryBaseSeconds=1", "--set", "thingspace.retryMaxSeconds=15",
        )  # fmt: skip
        sets = credential_sets(seed)
        self.sim = SoakSimulator(
            self.workdir,
            [f"{s.app_key}:{s.app_secret}" for s in sets],
            [f"{s.username}:{s.password}" for s in sets],
        )
        self.work = Workload(
            self.plane, self.sim, seed, self.namespaces, self.release.namespace,
            f"soak-{suffix}", self.args.n,
        )  # fmt: skip
        self.work.setup()
        self.loop = LoopThread()
        port = int(self.plane.server.rsplit(":", 1)[1])
        self.pods = []
        for name in ("a", "b"):
            calls = SoakProxy(self.loop, self.sim.url, name)
            api = HealableProxy(self.loop, "127.0.0.1", port)
            process = OperatorProcess(
                self.release, self.sim, self.workdir,
                api_server=f"https://127.0.0.1:{api.port}", thingspace_url=calls.url,
            )  # fmt: skip
            # The chart's backoff, not the e2e helper's shorter one.
            for key in ("THINGSPACE_RETRY_BASE_SECONDS", "THINGSPACE_RETRY_MAX_SECONDS"):
                process.env.pop(key, None)
            self.pods.append(Pod(name, process, calls, api))
        self.supervisors = [
            threading.Thread(target=self.supervise, args=(pod,), daemon=True) for pod in self.pods
        ]
        threading.Thread(target=self.restarter, daemon=True).start()
        for thread in self.supervisors:
            thread.start()
            time.sleep(3)  # a leads, b stands by

    def supervise(self, pod: Pod) -> None:
        """The kubelet: start the pod's process, and again whenever it exits."""
        while not self.halt.is_set():
            if not pod.alive() and not self.stop.is_set():
                if pod.starts:
                    code = pod.process.exit_code()
                    self.note(self.t(), self.t(), "exit", f"{pod.incarnation} exited {code}")
                    pod.process.log_path.rename(f"{pod.process.log_path}.{pod.starts}")
                pod.starts += 1
                pod.calls.sender = pod.incarnation
                # It may exit at once (the API server is away): the next turn retries.
                with contextlib.suppress(RuntimeError, AssertionError):
                    pod.process.start()
            self.halt.wait(1)

    def restarter(self) -> None:
        """Restarts the API server when asked (on this one long-lived thread)."""
        while not self.halt.is_set():
            try:
                hold = self.plane_jobs.get(timeout=1)
            except queue.Empty:
                continue
            assert isinstance(self.plane, ControlPlane)
            self.plane.stop_apiserver()
            time.sleep(hold)
            self.plane.start_apiserver()
            self.plane_done.put(f"down {hold:.1f} s")

    def note(self, start: float, end: float, kind: str, detail: str) -> None:
        self.timeline.append((start, end, kind, detail))
        if self.args.verbose:
            print(f"  t={start:7.1f} {kind:20} {detail}", flush=True)

    # --- faults ----------------------------------------------------------------------

    def leader(self) -> Pod | None:
        return next((pod for pod in self.pods if pod.leading()), None)

    def inject(self, fault: Fault) -> None:
        start, detail = self.t(), ""
        try:
            detail = self._inject(fault)
        except Exception as exc:
            detail = f"could not inject: {exc!r}"
        self.injected[fault.kind if "skipped" not in detail else f"{fault.kind} (skipped)"] += 1
        self.note(start, self.t(), fault.kind, detail)

    def _inject(self, fault: Fault) -> str:
        kind, p = fault.kind, fault.params
        sim = self.sim
        if kind in ("leader-sigterm", "leader-kill9", "partition-long", "partition-short",
                    "standby-kill9"):  # fmt: skip
            leader = self.leader()
            if leader is None:
                return "skipped: nobody leads right now"
            if kind == "standby-kill9":
                standby = next((p for p in self.pods if p is not leader and p.alive()), None)
                if standby is None:
                    return "skipped: no standby alive"
                standby.process.signal(signal.SIGKILL)
                return standby.incarnation
            if kind.startswith("partition"):
                who = leader.incarnation
                leader.api.cut()
                time.sleep(fault.hold)
                leader.api.heal()
                return f"{who} cut for {fault.hold:.1f} s"
            leader.process.signal(signal.SIGTERM if kind == "leader-sigterm" else signal.SIGKILL)
            return leader.incarnation
        if kind == "both-kill9":
            for pod in self.pods:
                if pod.alive():
                    pod.process.signal(signal.SIGKILL)
            return "both"
        if kind == "apiserver-restart":
            with self.api_lock:
                self.plane_jobs.put(fault.hold)
                return self.plane_done.get(timeout=fault.hold + 180)
        if kind == "etcd-compaction":
            assert isinstance(self.plane, ControlPlane)
            self.plane.compact_etcd()
            return "compacted"
        if kind == "ts-5xx-burst":
            sim.request("POST", "faults", {"endpoint": "*", "kind": "status", **p})
        elif kind == "ts-429-retry-after":
            sim.request("POST", "faults", {"endpoint": "*", "kind": "rate_limit", **p})
        elif kind in ("ts-timeout", "ts-slow"):
            sim.request("POST", "faults", {"endpoint": "*",
                        "kind": "timeout" if kind == "ts-timeout" else "latency", **p})  # fmt: skip
        elif kind == "ts-session-expiry":
            sim.request("POST", "sessions/expire")
        elif kind == "ts-token-expiry":
            sim.request("POST", "tokens/revoke")
        elif kind == "ts-lost-answer":
            for pod in self.pods:
                pod.calls.lose_registers += int(p["count"])
        elif kind == "rejected-login":
            name = self.work.break_secret(float(p["secret"]), str(p["what"]))
            if not name:
                return "skipped: no Secret may be broken now"
            time.sleep(fault.hold)
            self.work.fix_secret(name)
            return f"{name} wrong {p['what']} for {fault.hold:.1f} s"
        return json.dumps(p)

    # --- checks ----------------------------------------------------------------------

    def sent(self) -> list[Any]:
        return [call for pod in self.pods for call in list(pod.calls.sent)]

    def check(self, full: bool = False) -> None:
        sent = self.sent()
        found = checks.fencing(sent) + checks.ownership(sent, self.work)
        found += checks.lockout(sent, self.sim.request("GET", "logins"))
        found += checks.leaks(self.new_log_text(), self.work.secret_values)
        found += self.memory()
        if full:
            texts = checks.cluster_texts(self.plane, [*self.namespaces, self.release.namespace])
            for pod in self.pods:
                if pod.alive():
                    with contextlib.suppress(OSError):
                        texts[f"metrics of {pod.incarnation}"] = checks.metrics_text(
                            pod.process.env["THINGSPACE_METRICS_PORT"]
                        )
            found += checks.leaks(texts, self.work.secret_values)
            self.sample_readiness()
        self.checks_made += 1
        for problem in found:
            if problem not in {v for _, v in self.violations}:
                self.violations.append((self.t(), problem))
        if self.violations:
            raise Violation(self.violations[0][1])

    def new_log_text(self) -> dict[str, str]:
        texts = {}
        for path in sorted(self.workdir.glob("operator.log*")):
            offset = self.log_offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            self.log_offsets[path] = offset + len(data)
            texts[f"log {path.name}"] = data.decode(errors="replace")
        return texts

    def memory(self) -> list[str]:
        found = []
        for pod in self.pods:
            if not pod.alive():
                continue
            rss = checks.rss_kib(pod.pid())
            if rss is None:
                continue
            pod.rss_last[pod.incarnation] = rss
            if rss > MEMORY_LIMIT_KIB:
                found.append(f"memory: {pod.incarnation} RSS {rss} KiB over the chart's limit")
        return found

    def sample_readiness(self) -> None:
        """The longest span any declared, writable callback stayed not Ready."""
        now = self.t()
        seen = set()
        for namespace in self.namespaces:
            listed = self.plane.kubectl("-n", namespace, "get", "tscb", "-o", "json", check=False)
            if listed.returncode != 0:
                return
            for item in json.loads(listed.stdout)["items"]:
                spec, meta = item["spec"], item["metadata"]
                if spec.get("suspend") or spec.get("managementPolicy") == "ObserveOnly":
                    continue
                if meta.get("deletionTimestamp"):
                    continue
                who = f"{meta['namespace']}/{meta['name']}"
                seen.add(who)
                ready = checks._condition(item, "Ready").get("status") == "True"
                if ready and who in self.not_ready_since:
                    span = now - self.not_ready_since.pop(who)
                    self.longest_not_ready = max(self.longest_not_ready, (span, who))
                elif not ready:
                    self.not_ready_since.setdefault(who, now)
        for who in [w for w in self.not_ready_since if w not in seen]:
            del self.not_ready_since[who]  # deleted or made non-writable meanwhile

    def all_ready(self) -> bool:
        return not checks.converged(self.plane, self.work)

    # --- the run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        self.setup()
        deadline = time.monotonic() + 120
        while self.leader() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        rng = random.Random(f"initial-{args.seed}")
        for _ in range(args.n):
            self.work.create(rng)
        converge_deadline = time.monotonic() + 90 + args.n
        while not self.all_ready():
            if time.monotonic() > converge_deadline:
                raise Violation("the initial fleet did not converge: " +
                                "; ".join(checks.converged(self.plane, self.work)[:5]))  # fmt: skip
            time.sleep(2)
        first_convergence = self.t()
        for pod in self.pods:
            if pod.alive() and (rss := checks.rss_kib(pod.pid())):
                pod.rss_baseline[pod.incarnation] = rss
        self.note(self.t(), self.t(), "converged", f"{args.n} callbacks Ready")
        plan, work_plan = (
            faults(args.seed, args.duration),
            ops(args.seed, args.duration, args.op_every),
        )
        window = time.monotonic()
        threads: list[threading.Thread] = []
        next_check = time.monotonic()
        full_every = 0
        try:
            fi = 0
            worker = threading.Thread(target=self.drive, args=(work_plan, window), daemon=True)
            worker.start()
            while time.monotonic() - window < args.duration:
                now = time.monotonic() - window
                while fi < len(plan) and plan[fi].at <= now:
                    thread = threading.Thread(target=self.inject, args=(plan[fi],), daemon=True)
                    thread.start()
                    threads.append(thread)
                    fi += 1
                if time.monotonic() >= next_check:
                    full_every += 1
                    self.check(full=full_every % 5 == 0)
                    next_check = time.monotonic() + 3
                time.sleep(0.2)
            worker.join(120)
            for thread in threads:
                thread.join(60)
            last_fault = max((end for _, end, kind, _ in self.timeline if kind in FAULT_KINDS),
                             default=self.t())  # fmt: skip
            # Quiet: nothing injected, nothing changed; the drift period heals the rest.
            self.work.settle()
            quiet_deadline = time.monotonic() + 60 + 6 * args.resync
            recovered = None
            time.sleep(3 * args.resync)  # two lists a period apart before a prune
            while time.monotonic() < quiet_deadline:
                self.check(full=True)
                problems = checks.converged(self.plane, self.work)
                self.checks_made += 1
                if not problems:
                    recovered = self.t() - last_fault
                    break
                time.sleep(3)
            if recovered is None:
                for problem in checks.converged(self.plane, self.work):
                    self.violations.append((self.t(), problem))
                raise Violation(self.violations[0][1])
            self.check(full=True)
            growth = self.rss_growth()
            if growth:
                self.violations.append((self.t(), growth))
                raise Violation(growth)
            return self.summary(first_convergence, recovered)
        finally:
            self.stop.set()

    def drive(self, plan: list[Op], window: float) -> None:
        """The workload, on its own thread: an operation held up by an API server restart
        delays the next ones, never a fault."""
        for index, op in enumerate(plan):
            while not self.stop.is_set() and time.monotonic() - window < op.at:
                time.sleep(0.1)
            if self.stop.is_set():
                return
            try:
                self.work.step(random.Random(op.seed))
                if index % 10 == 0:
                    self.work.forget_deleted()
            except Exception as exc:
                self.note(self.t(), self.t(), "workload-error", repr(exc)[:300])

    def rss_growth(self) -> str:
        """6: the incarnations that lived from the first convergence to the end."""
        for pod in self.pods:
            for incarnation, base in pod.rss_baseline.items():
                end = pod.rss_last.get(incarnation)
                if incarnation == pod.incarnation and end and end > base * 1.2:
                    return f"memory: {incarnation} RSS grew from {base} to {end} KiB (> 20 %)"
        return ""

    def summary(self, first_convergence: float, recovered: float) -> dict[str, Any]:
        sent = self.sent()
        return {
            "seed": self.args.seed,
            "window_seconds": self.args.duration,
            "n": self.args.n,
            "faults": dict(sorted(self.injected.items())),
            "operations": dict(sorted(self.work.counts.items())),
            "thingspace_calls": dict(Counter(call.endpoint for call in sent)),
            "incarnations": sum(pod.starts for pod in self.pods),
            "checks": self.checks_made,
            "violations": 0,
            "first_convergence_s": round(first_convergence, 1),
            "recovered_after_last_fault_s": round(recovered, 1),
            "longest_not_ready_s": round(self.longest_not_ready[0], 1),
            "rss_kib": {
                i: (pod.rss_baseline.get(i), pod.rss_last.get(i))
                for pod in self.pods
                for i in pod.rss_baseline
            },
        }

    def report_violation(self, reason: str) -> None:
        at = self.violations[0][0] if self.violations else self.t()
        print(f"\nVIOLATION (seed {self.args.seed}) at t={at:.1f}: {reason}", flush=True)
        for when, problem in self.violations[:20]:
            print(f"  t={when:7.1f} {problem}")
        print("fault timeline around it (±90 s):")
        for start, end, kind, detail in sorted(self.timeline):
            if at - 90 <= end and start <= at + 90:
                print(f"  t={start:7.1f}..{end:7.1f} {kind:20} {detail}")

    def teardown(self) -> None:
        self.stop.set()
        for pod in getattr(self, "pods", []):
            pod.api.heal()
        with self.api_lock:  # an API server restart under way ends first
            pass
        if hasattr(self, "release"):
            alive = any(pod.alive() for pod in getattr(self, "pods", []))
            remove_test_objects(self.plane, self.namespaces, self.release.namespace, alive)
            self.plane.kubectl("delete", "tsa", f"soak-{self.suffix}", "--ignore-not-found",
                               "--timeout=60s", check=False)  # fmt: skip
        self.halt.set()  # first: no supervisor restarts a process stopped below
        for thread in getattr(self, "supervisors", []):
            thread.join(15)
        for pod in getattr(self, "pods", []):
            pod.process.stop()
            pod.calls.close()
            pod.api.close()
        if hasattr(self, "release"):
            # Best effort: an API server still slow from the run must not fail a clean soak.
            self.release.helm(
                "uninstall", self.release.name, "--namespace", self.release.namespace,
                "--wait", "--timeout=120s", check=False,
            )  # fmt: skip
        if hasattr(self, "loop"):
            self.loop.stop()
        if hasattr(self, "sim"):
            self.sim.stop()


def soak(plane: Cluster, workdir: Path, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """The run on ``plane``: (exit code, summary)."""
    run = Soak(plane, workdir, args)
    try:
        summary = run.run()
    except Violation as violation:
        run.report_violation(str(violation))
        # The work directory goes with the run: keep the logs (not the tokens) as evidence.
        kept = Path(tempfile.gettempdir()) / f"soak-evidence-{args.seed}-{run.suffix}"
        shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*kubeconfig*", "pki"))
        print(f"evidence kept in {kept}", flush=True)
        return 1, {"seed": args.seed, "violations": [v for _, v in run.violations]}
    finally:
        run.teardown()
    return 0, summary


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=3600, help="chaos window, seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n", type=int, default=40, help="callbacks kept declared")
    parser.add_argument("--resync", type=int, default=20, help="drift period, seconds")
    parser.add_argument("--op-every", type=float, default=2.0, help="seconds between ops")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--verbose", action="store_true", help="print the timeline live")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(f"soak seed={args.seed} duration={args.duration:g}s n={args.n}", flush=True)
    code, summary = on_a_plane(lambda plane, workdir: soak(plane, workdir, args), None, "soak")
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"soak seed={args.seed}: {'0 violations' if code == 0 else 'VIOLATED'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
