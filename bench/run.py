"""Benchmarks: the real operator process against the simulator and the emulated API.

    python -m bench.run                   # S1-S3 at N=1000/M=20, S4 at 100/1000/5000, peer
    python -m bench.run --smoke           # tiny sizes, used by the test suite

Writes docs/benchmarks.md (unless --no-write) and prints the same tables. See
docs/benchmarks.md for what each scenario measures and its lower bound.
"""

import argparse
import asyncio
import base64
import datetime
import os
import platform
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import handover
from tests.harness.demo import free_port, write_kubeconfig_to
from tests.harness.kube import KubernetesEmulator, emulated_kubernetes
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
CREDENTIALS = {
    "appKey": "demo-app-key",
    "appSecret": "demo-app-secret",
    "username": "demo-user",
    "password": "demo-password",
}
SERVICES = [s for s in CALLBACK_SERVICE_NAMES if s != "AlertsService"]
WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")


@dataclass
class Result:
    n: int
    accounts: int
    figures: dict[str, Any] = field(default_factory=dict)
    unrelated: int | None = None  # S5 only: unrelated Secrets in the cluster


def account_names(count: int) -> list[str]:
    return [f"{index:010d}-00001" for index in range(1, count + 1)]


def accounts_for(n: int, wanted: int) -> int:
    """ThingSpace holds one registration per account and service: enough accounts for N."""
    return max(min(wanted, n), -(-n // len(SERVICES)))


def declared(n: int, accounts: int) -> list[tuple[str, str, str]]:
    """N (account, service, url): services fill an account before the next one is used."""
    names = account_names(accounts)
    per_account = -(-n // accounts)
    if per_account > len(SERVICES):
        raise SystemExit(f"{n} resources need more than {len(SERVICES)} services per account")
    return [
        (names[i // per_account], SERVICES[i % per_account], f"https://l.example.com/{i}")
        for i in range(n)
    ]


class Harness:
    def __init__(self, sim: SimulatorServer, kube: KubernetesEmulator, workdir: Path) -> None:
        self.sim, self.kube, self.workdir = sim, kube, workdir
        self.kube_url = str(kube.url).rstrip("/")
        self.process: asyncio.subprocess.Process | None = None

    async def post(self, http: aiohttp.ClientSession, path: str, body: Any) -> None:
        async with http.post(self.kube_url + path, json=body) as response:
            if response.status >= 300:
                raise RuntimeError(await response.text())

    async def create(self, items: list[tuple[str, str, str]]) -> None:
        limit = asyncio.Semaphore(32)
        async with aiohttp.ClientSession() as http:
            await self.post(
                http,
                f"/api/v1/namespaces/{NAMESPACE}/secrets",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "thingspace-credentials",
                        "labels": {"thingspace.io/credentials": "true"},
                    },
                    "stringData": CREDENTIALS,
                },
            )

            async def one(index: int, account: str, service: str, url: str) -> None:
                async with limit:
                    await self.post(
                        http,
                        f"/apis/thingspace.io/v1alpha1/namespaces/{NAMESPACE}/thingspacecallbacks",
                        {
                            "apiVersion": "thingspace.io/v1alpha1",
                            "kind": "ThingSpaceCallback",
                            "metadata": {"name": f"cb-{index}"},
                            "spec": {
                                "accountName": account,
                                "serviceName": service,
                                "url": url,
                                "credentialsSecretRef": {"name": "thingspace-credentials"},
                            },
                        },
                    )

            await asyncio.gather(*(one(i, *item) for i, item in enumerate(items)))

    async def create_unrelated_secrets(self, count: int, size: int, namespaces: int) -> None:
        """What every real cluster holds besides: Helm release records and the like."""
        payload = base64.b64encode(os.urandom(size)).decode()
        limit = asyncio.Semaphore(16)
        async with aiohttp.ClientSession() as http:

            async def one(index: int) -> None:
                async with limit:
                    await self.post(
                        http,
                        f"/api/v1/namespaces/team-{index % namespaces}/secrets",
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "helm.sh/release.v1",
                            "metadata": {
                                "name": f"sh.helm.release.v1.app-{index}.v1",
                                "labels": {"owner": "helm", "name": f"app-{index}"},
                            },
                            "data": {"release": payload},
                        },
                    )

            await asyncio.gather(*(one(i) for i in range(count)))

    def ready_count(self) -> int:
        count = 0
        for (resource, _, _), obj in self.kube.objects.items():
            if resource.plural != "thingspacecallbacks" or obj.deleted:
                continue
            for cond in obj.raw.get("status", {}).get("conditions", []):
                if cond["type"] == "Ready" and cond["status"] == "True":
                    count += 1
        return count

    async def start_operator(self, resync: float) -> None:
        kubeconfig = write_kubeconfig_to(self.workdir / "kubeconfig", self.kube_url)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "THINGSPACE_API_URL": self.sim.url,
            "THINGSPACE_RESYNC_SECONDS": str(resync),
            "THINGSPACE_HEALTH_PORT": str(free_port()),
            "THINGSPACE_METRICS_PORT": str(free_port()),
            "THINGSPACE_LOG_LEVEL": "WARNING",
            "PYTHONOPTIMIZE": "2",  # as the image runs it (see the Dockerfile)
        }
        log = (self.workdir / "operator.log").open("w")
        self.process = await asyncio.create_subprocess_exec(
            str(Path(sysconfig.get_path("scripts")) / "thingspace-operator"),
            "run",
            env=env,
            stdout=log,
            stderr=log,
        )

    async def stop_operator(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 60)

    def process_usage(self) -> tuple[float, float]:
        """Peak RSS (MB) and CPU seconds of the operator process so far."""
        assert self.process is not None
        pid = self.process.pid
        status = Path(f"/proc/{pid}/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return peak_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks

    def thingspace_calls(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (endpoint, _account, _status), count in self.sim.state.request_counts.items():
            totals[endpoint] = totals.get(endpoint, 0) + count
        return totals

    def reset_counts(self) -> None:
        self.sim.state.request_counts.clear()
        self.kube.verb_counts = None

    def kube_requests(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (method, subresource), count in (self.kube.verb_counts or {}).items():
            key = f"{method} {subresource}".strip()
            totals[key] = totals.get(key, 0) + count
        return totals

    async def settled_writes(self, quiet: float = 1.0, limit: float = 30.0) -> int:
        """Kubernetes writes once none has come for ``quiet`` seconds: Events and status
        patches still trail the last Ready condition."""
        deadline = time.monotonic() + limit
        count = self.kube_writes()
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet)
            if self.kube_writes() == count:
                break
            count = self.kube_writes()
        return count

    def kube_writes(self) -> int:
        return sum(
            n for (method, _), n in (self.kube.verb_counts or {}).items() if method in WRITE_VERBS
        )


async def wait_for(predicate: Any, limit: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"not reached within {limit} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass(frozen=True)
class Unrelated:
    """Secrets no resource references, created before the operator starts (S5)."""

    count: int = 0
    size: int = 0
    namespaces: int = 1


async def scenario(
    n: int,
    accounts: int,
    latency: float,
    resync: float,
    periods: int,
    drift: bool,
    workdir: Path,
    unrelated: Unrelated = Unrelated(),
) -> Result:
    result = Result(n, accounts)
    items = declared(n, accounts)
    config = SimulatorConfig(latency_seconds=latency)
    async with SimulatorServer(config) as sim, emulated_kubernetes() as kube:
        harness = Harness(sim, kube, workdir)
        if unrelated.count:
            await harness.create_unrelated_secrets(
                unrelated.count, unrelated.size, unrelated.namespaces
            )
            harness.reset_counts()  # so the wait below sees the operator's first request
        await harness.start_operator(resync)
        try:
            await wait_for(lambda: kube.verb_counts is not None, 30)  # operator is watching
            await asyncio.sleep(1.0)  # let its initial listing finish
            harness.reset_counts()
            started = time.monotonic()
            await harness.create(items)
            await wait_for(lambda: harness.ready_count() == n, 60 + n * 0.2)
            converge = time.monotonic() - started
            calls = harness.thingspace_calls()
            requests = harness.kube_requests()
            bound = accounts * 3 + n  # token + login + list per account, one register each
            result.figures["S1"] = {
                "converge_seconds": converge,
                "calls": calls,
                "calls_total": sum(calls.values()),
                "lower_bound": bound,
                "kube_writes": await harness.settled_writes(),
                "kube_requests_per_resource": {k: v / n for k, v in sorted(requests.items())},
            }
            if periods:  # S2: nothing changes for a few drift periods.
                await asyncio.sleep(resync)  # the first period after convergence may settle
                harness.reset_counts()
                await asyncio.sleep(resync * periods)
                calls = harness.thingspace_calls()
                result.figures["S2"] = {
                    "periods": periods,
                    "calls_per_period": sum(calls.values()) / periods,
                    "lists_per_period": calls.get("list", 0) / periods,
                    "lower_bound": accounts,
                    "kube_writes_per_period": harness.kube_writes() / periods,
                }
            if drift:
                result.figures["S3"] = await drift_scenario(harness, items)
            rss, cpu = harness.process_usage()
            result.figures["process"] = {"peak_rss_mb": rss, "cpu_seconds": cpu}
        finally:
            await harness.stop_operator()
    return result


async def drift_scenario(harness: Harness, items: list[tuple[str, str, str]]) -> dict[str, Any]:
    changed = items[::10]
    harness.reset_counts()
    started = time.monotonic()
    for account, service, _url in changed:
        harness.sim.state.registrations[account][service].url = "https://drifted.example.com/"

    def corrected() -> bool:
        live = harness.sim.state.registrations
        return all(live[a][s].url == url for a, s, url in changed)

    await wait_for(corrected, 120)
    calls = harness.thingspace_calls()
    return {
        "changed": len(changed),
        "correct_seconds": time.monotonic() - started,
        "calls": calls,
        "register_calls": calls.get("register", 0),
    }


def sdk_peer(sim_url: str, items: list[tuple[str, str, str]]) -> None:
    """What a team does without the operator: the official SDK, one call after another."""
    from verizon.configuration import Configuration, Environment, Server
    from verizon.http.auth.thingspace_oauth import ThingspaceOauthCredentials
    from verizon.http.auth.vz_m2m_token import VZM2mTokenCredentials
    from verizon.models.log_in_request import LogInRequest
    from verizon.models.register_callback_request import RegisterCallbackRequest
    from verizon.verizon_client import VerizonClient

    environment = Environment.MOCK_SERVER_FOR_LIMITED_AVAILABILITY_SEE_QUICK_START
    servers = dict(Configuration.environments[environment])
    servers[Server.THINGSPACE] = f"{sim_url}/api"
    servers[Server.OAUTH_SERVER] = f"{sim_url}/api/ts/v1"
    Configuration.environments[environment] = servers
    oauth = ThingspaceOauthCredentials(
        oauth_client_id=CREDENTIALS["appKey"], oauth_client_secret=CREDENTIALS["appSecret"]
    )
    client = VerizonClient(environment=environment, thingspace_oauth_credentials=oauth)
    oauth = oauth.clone_with(oauth_token=client.auth_managers["thingspace_oauth"].fetch_token())
    client = VerizonClient(environment=environment, thingspace_oauth_credentials=oauth)
    session = client.session_management.start_connectivity_management_session(
        LogInRequest(username=CREDENTIALS["username"], password=CREDENTIALS["password"])
    ).body
    client = VerizonClient(
        environment=environment,
        thingspace_oauth_credentials=oauth,
        vz_m2m_token_credentials=VZM2mTokenCredentials(session.session_token),
    )
    for account, service, url in items:
        client.connectivity_callbacks.register_callback(
            account, RegisterCallbackRequest(name=service, url=url)
        )


async def peer(n: int, accounts: int, latency: float) -> dict[str, Any]:
    async with SimulatorServer(SimulatorConfig(latency_seconds=latency)) as sim:
        started = time.monotonic()
        await asyncio.to_thread(sdk_peer, sim.url, declared(n, accounts))
        seconds = time.monotonic() - started
        calls = {}
        for (endpoint, _a, _s), count in sim.state.request_counts.items():
            calls[endpoint] = calls.get(endpoint, 0) + count
    return {"seconds": seconds, "calls": calls, "calls_total": sum(calls.values())}


def render(results: list[Result], peer_figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}); "
        f"simulator latency {args.latency * 1000:.0f} ms per call, drift period {args.resync} s, "
        f"`python -m bench.run {' '.join(sys.argv[1:])}`.",
        "",
        "The operator runs as a real process (`thingspace-operator run`) against the ThingSpace "
        "simulator and the emulated Kubernetes API, both served by the benchmark process over "
        "HTTP on this machine. Lower bounds: S1 = accounts x (token + login + list) + N "
        "registrations; S2 = one list per account per period and zero Kubernetes writes.",
        "",
        "| N | accounts | S1 converge (s) | S1 ThingSpace calls | S1 bound | ratio "
        "| S2 calls/period | S2 bound | S2 k8s writes/period | peak RSS (MB) | CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in results if r.unrelated is None):
        s1, s2, p = r.figures["S1"], r.figures["S2"], r.figures["process"]
        lines.append(
            f"| {r.n} | {r.accounts} | {s1['converge_seconds']:.1f} | {s1['calls_total']} "
            f"| {s1['lower_bound']} | {s1['calls_total'] / s1['lower_bound']:.2f} "
            f"| {s2['calls_per_period']:.1f} | {s2['lower_bound']} "
            f"| {s2['kube_writes_per_period']:.1f} | {p['peak_rss_mb']:.0f} "
            f"| {p['cpu_seconds']:.1f} |"
        )
    lines += ["", "S1 ThingSpace calls by endpoint and Kubernetes requests per resource:", ""]
    for r in (r for r in results if r.unrelated is None):
        s1 = r.figures["S1"]
        kube = ", ".join(f"{k} {v:.1f}" for k, v in s1["kube_requests_per_resource"].items())
        lines.append(f"- N={r.n}: {s1['calls']}; Kubernetes per resource: {kube}")
    drift = [r for r in results if "S3" in r.figures]
    if drift:
        lines += [
            "",
            "| N | S3 changed out of band | time to correct all (s) | register calls | all calls |",
            "|---|---|---|---|---|",
        ]
        for r in drift:
            s3 = r.figures["S3"]
            lines.append(
                f"| {r.n} | {s3['changed']} | {s3['correct_seconds']:.1f} "
                f"| {s3['register_calls']} | {sum(s3['calls'].values())} |"
            )
    lines += render_s5(results, args)
    if peer_figures:
        base = next(r for r in results if r.n == peer_figures["n"] and r.unrelated is None)
        ratio = base.figures["S1"]["converge_seconds"] / peer_figures["seconds"]
        lines += [
            "",
            f"Peer at N={peer_figures['n']}: the official Verizon SDK "
            "(`sdksio-verizon-apis-sdk`) registering the same callbacks one after another "
            f"took {peer_figures['seconds']:.1f} s and {peer_figures['calls_total']} calls "
            f"({peer_figures['calls']}); the operator converged in "
            f"{base.figures['S1']['converge_seconds']:.1f} s "
            f"(ratio operator/SDK {ratio:.2f}).",
        ]
    return "\n".join(lines) + "\n"


async def crowded_cluster(args: argparse.Namespace, workdir: Path) -> list[Result]:
    """S5: converge N with and without the unrelated Secrets, alternating, several times;
    the median run of each side is reported (one run of each varies by seconds here)."""
    accounts = accounts_for(args.n, args.accounts)
    crowd = Unrelated(args.s5_secrets, args.s5_size, args.s5_namespaces)
    runs: dict[int, list[Result]] = {0: [], crowd.count: []}
    for trial in range(args.s5_trials):
        for unrelated in (Unrelated(), crowd):
            print(f"scenario S5 N={args.n} unrelated={unrelated.count} #{trial + 1}", flush=True)
            result = await scenario(
                args.n, accounts, args.latency, args.resync, 0, False, workdir, unrelated
            )
            result.unrelated = unrelated.count
            runs[unrelated.count].append(result)
    return [
        sorted(side, key=lambda r: r.figures["S1"]["converge_seconds"])[len(side) // 2]
        for side in runs.values()
    ]


def render_s5(results: list[Result], args: argparse.Namespace) -> list[str]:
    """S5: the same fleet with and without a cluster full of unrelated Secrets."""
    crowded = next((r for r in results if r.unrelated), None)
    if crowded is None:
        return []
    plain = next(r for r in results if r.unrelated == 0)
    rows = []
    for label, r in (("without", plain), (f"with {crowded.unrelated}", crowded)):
        s1, p = r.figures["S1"], r.figures["process"]
        rows.append(
            f"| {label} | {s1['converge_seconds']:.1f} | {s1['calls_total']} "
            f"| {s1['kube_writes']} | {p['peak_rss_mb']:.1f} | {p['cpu_seconds']:.1f} |"
        )
    ps, cs = plain.figures, crowded.figures
    return [
        "",
        f"S5 crowded cluster, N={crowded.n}: {crowded.unrelated} unrelated Secrets of "
        f"{args.s5_size // 1024} KiB in {args.s5_namespaces} namespaces, created before the "
        "operator starts, against the same run without them (median of "
        f"{args.s5_trials} alternating runs each). Targets: peak RSS within 10 MB, the same "
        "calls and writes, converge at most 1 s slower.",
        "",
        "| unrelated Secrets | S1 converge (s) | ThingSpace calls | Kubernetes writes "
        "| peak RSS (MB) | CPU (s) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Difference: peak RSS {cs['process']['peak_rss_mb'] - ps['process']['peak_rss_mb']:+.1f} "
        f"MB, CPU {cs['process']['cpu_seconds'] - ps['process']['cpu_seconds']:+.1f} s, "
        f"converge {cs['S1']['converge_seconds'] - ps['S1']['converge_seconds']:+.1f} s, "
        f"ThingSpace calls {cs['S1']['calls_total'] - ps['S1']['calls_total']:+d}, "
        f"Kubernetes writes {cs['S1']['kube_writes'] - ps['S1']['kube_writes']:+d}.",
    ]


async def main(args: argparse.Namespace) -> None:
    workdir = ROOT / ".bench"
    workdir.mkdir(exist_ok=True)
    results = []
    for n in args.scales:
        accounts = accounts_for(n, args.accounts)
        print(f"scenario N={n} accounts={accounts} ...", flush=True)
        results.append(
            await scenario(
                n,
                accounts,
                args.latency,
                args.resync,
                args.periods,
                drift=n == args.n,
                workdir=workdir,
            )
        )
    if args.s5_secrets:
        results += await crowded_cluster(args, workdir)
    peer_figures = await peer(args.n, accounts_for(args.n, args.accounts), args.latency)
    peer_figures["n"] = args.n
    report = render(results, peer_figures, args)
    print(report)
    if args.write:
        target = ROOT / "docs" / "benchmarks.md"
        text = report + METHOD_NOTES
        kept = handover.section_of(target.read_text()) if target.exists() else None
        target.write_text(handover.with_section(text, kept) if kept else text)


METHOD_NOTES = """
## Scenarios

- **S1 converge**: N resources over M accounts created at once; time until all are Ready;
  ThingSpace calls by endpoint; Kubernetes API requests per resource by verb (the `GET`
  count includes the long-lived watch requests); operator peak RSS and CPU seconds.
- **S2 steady state**: a few drift periods with nothing changed: ThingSpace calls per period
  and Kubernetes writes per period.
- **S3 drift**: 10 % of the registrations changed out of band; time until all are corrected.
  Drift checks run at the start of each drift period, so this time is up to one period
  plus the correction, depending on where in the period the change lands.
- **S4 scale**: S1 and S2 at several N.
- **S5 crowded cluster**: S1 and S2 at N again, in a cluster that also holds thousands of
  large Secrets no resource references (Helm release records), created before the operator
  starts; compared with the same run without them.
- **Peer**: the official SDK registering the same N callbacks sequentially against the same
  simulator with the same latency.
- **Handover** (`python -m bench.handover`, on the real control plane): two operator
  processes over a converged fleet; the leader stopped with SIGTERM (rolling upgrade,
  drain) or kill -9 (lost node); time until the standby holds the Lease and makes its first
  ThingSpace call, and every call it makes while it resumes the fleet.

Run with `make bench` (defaults) or `python -m bench.run --help` (`python -m bench.handover
--help` for the handover). A tiny version runs in
the test suite (`tests/integration/test_bench_smoke.py`) so the harness cannot rot. What the
figures mean, what they changed and what is still off target: [performance.md](performance.md).

Accounts: ThingSpace holds one registration per account and callback service (23 names),
so N resources need at least N / 23 accounts; the harness raises M to that when needed
(N=1000 runs over 44 accounts, N=5000 over 218).
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="resources for S1-S3 and the peer")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument(
        "--scales", type=lambda v: [int(x) for x in v.split(",")], default=[100, 1000, 5000]
    )
    parser.add_argument("--latency", type=float, default=0.025)
    parser.add_argument("--resync", type=float, default=10.0)
    parser.add_argument("--periods", type=int, default=3)
    parser.add_argument("--s5-secrets", type=int, default=2000, help="unrelated Secrets (S5)")
    parser.add_argument("--s5-size", type=int, default=256 * 1024, help="bytes each (S5)")
    parser.add_argument("--s5-namespaces", type=int, default=50)
    parser.add_argument("--s5-trials", type=int, default=3, help="runs of each side (S5)")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no docs written")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.accounts, args.scales, args.resync, args.periods, args.write = (
            6,
            2,
            [6],
            1.0,
            2,
            False,
        )
        args.s5_secrets, args.s5_size, args.s5_namespaces, args.s5_trials = 10, 4096, 3, 1
    if args.n not in args.scales:
        args.scales = sorted({*args.scales, args.n})
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
