"""Benchmarks: the real operator process against the simulator and the emulated API.

    python -m bench.run                   # S1-S3 at N=1000/M=20, S4 at 100/1000/5000, peer
    python -m bench.run --smoke           # tiny sizes, used by the test suite

Writes docs/benchmarks.md (unless --no-write) and prints the same tables. See
docs/benchmarks.md for what each scenario measures and its lower bound.
"""

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import itertools
import json
import os
import platform
import signal
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import metrics, sections
from tests.harness.demo import free_port, write_kubeconfig_to
from tests.harness.kube import KubernetesEmulator, emulated_kubernetes
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer
from thingspace_operator.thingspace.ratelimit import RateLimiter
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
METRICS_POLL_SECONDS = 0.25


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
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "THINGSPACE_API_URL": self.sim.url,
            "THINGSPACE_RESYNC_SECONDS": str(resync),
            "THINGSPACE_HEALTH_PORT": str(free_port()),
            "THINGSPACE_METRICS_PORT": str(self.metrics_port),
            "THINGSPACE_LOG_LEVEL": "WARNING",
            "PYTHONOPTIMIZE": "2",  # as the image runs it (see the Dockerfile)
        }
        log = (self.workdir / "operator.log").open("w")
        self.process = await asyncio.create_subprocess_exec(
            *self.command(), cwd=ROOT, env=env, stdout=log, stderr=log
        )

    def command(self) -> list[str]:
        return [str(Path(sysconfig.get_path("scripts")) / "thingspace-operator"), "run"]

    async def stop_operator(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 60)

    def process_usage(self, field: str = "VmHWM") -> tuple[float, float]:
        """Peak (VmHWM) or current (VmRSS) resident memory in MB, and CPU seconds, of the
        operator process so far."""
        assert self.process is not None
        pid = self.process.pid
        status = Path(f"/proc/{pid}/status").read_text()
        kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:")
        )
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return kb / 1024, (int(fields[11]) + int(fields[12])) / ticks

    async def resumed(self) -> int:
        """Resources the operator has reconciled since it started (its metrics)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                text = await response.text()
        except aiohttp.ClientError:
            return 0
        return metrics.resumed(text)

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


async def wait_for(predicate: Any, limit: float, poll: float = 0.05) -> float:
    started = time.monotonic()
    while not await _value(predicate()):
        if time.monotonic() - started > limit:
            raise TimeoutError(f"not reached within {limit} s")
        await asyncio.sleep(poll)
    return time.monotonic() - started


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@dataclass(frozen=True)
class Unrelated:
    """Secrets no resource references, created before the operator starts (S5)."""

    count: int = 0
    size: int = 0
    namespaces: int = 1


async def scenario(
    n: int,
    accounts: int,
    args: argparse.Namespace,
    drift: bool,
    workdir: Path,
    unrelated: Unrelated = Unrelated(),
    periods: int | None = None,
) -> Result:
    """S1 with the production drift period (no sweep while converging), then S6: a
    restart over the converged fleet with the short period, and S2/S3 on that process."""
    result = Result(n, accounts)
    items = declared(n, accounts)
    config = SimulatorConfig(latency_seconds=args.latency)
    periods = args.periods if periods is None else periods
    async with SimulatorServer(config) as sim, emulated_kubernetes() as kube:
        harness = Harness(sim, kube, workdir)
        if unrelated.count:
            await harness.create_unrelated_secrets(
                unrelated.count, unrelated.size, unrelated.namespaces
            )
            harness.reset_counts()  # so the wait below sees the operator's first request
        await harness.start_operator(args.converge_resync)
        try:
            result.figures["S1"] = await converge(harness, items, accounts)
            rss, cpu = harness.process_usage()
            idle = result.figures["S1"]["idle"]
            result.figures["process"] = {
                "peak_rss_mb": rss,
                "cpu_seconds": cpu,
                "idle_rss_mb": idle["rss_mb"],
                "kb_per_resource": (rss - idle["rss_mb"]) * 1024 / n,
                "cpu_ms_per_resource": (cpu - idle["cpu_seconds"]) * 1000 / n,
            }
        finally:
            await harness.stop_operator()
        if not periods and not drift:
            return result
        try:
            result.figures["S6"] = await restart(harness, n, accounts, args.resync)
            if periods:
                result.figures["S2"] = await steady(harness, accounts, args.resync, periods)
            if drift:
                result.figures["S3"] = await drift_scenario(harness, items)
        finally:
            await harness.stop_operator()
    return result


async def converge(
    harness: Harness, items: list[tuple[str, str, str]], accounts: int
) -> dict[str, Any]:
    n = len(items)
    await wait_for(lambda: harness.kube.verb_counts is not None, 30)  # operator is watching
    await asyncio.sleep(1.0)  # let its initial listing finish
    rss, cpu = harness.process_usage("VmRSS")
    harness.reset_counts()
    started = time.monotonic()
    await harness.create(items)
    await wait_for(lambda: harness.ready_count() == n, 60 + n * 0.2)
    converge_seconds = time.monotonic() - started
    calls = harness.thingspace_calls()
    writes = await harness.settled_writes() - n - 1  # less the creates and the Secret
    requests = harness.kube_requests()
    return {
        "converge_seconds": converge_seconds,
        "calls": calls,
        "calls_total": sum(calls.values()),
        # One credential set here: token + login once, one list per account, one register
        # per resource.
        "lower_bound": 2 + accounts + n,
        "kube_writes": writes,
        "kube_writes_per_resource": writes / n,
        "kube_requests_per_resource": {k: v / n for k, v in sorted(requests.items())},
        "idle": {"rss_mb": rss, "cpu_seconds": cpu},
    }


async def restart(harness: Harness, n: int, accounts: int, period: float) -> dict[str, Any]:
    """S6: the operator starts over a converged fleet (an upgrade, a crash, a handover)."""
    harness.reset_counts()
    started = time.monotonic()
    await harness.start_operator(period)

    async def all_resumed() -> bool:
        return await harness.resumed() >= n

    limit = 60 + n * 0.05
    with contextlib.suppress(TimeoutError):  # reported: how many had resumed by then
        # Each look is a scrape of the operator's /metrics, which costs it CPU: at 20 a
        # second, about a tenth of what it spent resuming 5000 resources.
        await wait_for(all_resumed, limit, poll=METRICS_POLL_SECONDS)
    resumed = time.monotonic() - started
    calls = harness.thingspace_calls()
    return {
        "resumed_seconds": resumed,
        "resumed": await harness.resumed(),
        "period": period,
        "calls": calls,
        "calls_total": sum(calls.values()),
        "lower_bound": 2 + accounts,
        "registers": calls.get("register", 0),
        "kube_writes": await harness.settled_writes(),
    }


async def steady(harness: Harness, accounts: int, period: float, periods: int) -> dict[str, Any]:
    await asyncio.sleep(period)  # the first period after the restart may settle
    harness.reset_counts()
    await asyncio.sleep(period * periods)
    calls = harness.thingspace_calls()
    return {
        "periods": periods,
        "calls_per_period": sum(calls.values()) / periods,
        "lists_per_period": calls.get("list", 0) / periods,
        "lower_bound": accounts,
        "kube_writes_per_period": harness.kube_writes() / periods,
    }


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


def sdk_client(sim_url: str) -> Any:
    """The official SDK pointed at the simulator, with a token and a session."""
    from verizon.configuration import Configuration, Environment, Server
    from verizon.http.auth.thingspace_oauth import ThingspaceOauthCredentials
    from verizon.http.auth.vz_m2m_token import VZM2mTokenCredentials
    from verizon.models.log_in_request import LogInRequest
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
    return VerizonClient(
        environment=environment,
        thingspace_oauth_credentials=oauth,
        vz_m2m_token_credentials=VZM2mTokenCredentials(session.session_token),
    )


def sdk_register(client: Any, account: str, service: str, url: str) -> None:
    from verizon.models.register_callback_request import RegisterCallbackRequest

    client.connectivity_callbacks.register_callback(
        account, RegisterCallbackRequest(name=service, url=url)
    )


def sdk_peer(sim_url: str, items: list[tuple[str, str, str]]) -> None:
    """What a team does without the operator: the official SDK, one call after another."""
    client = sdk_client(sim_url)
    for item in items:
        sdk_register(client, *item)


def sdk_concurrent_peer(
    sim_url: str, items: list[tuple[str, str, str]], in_flight: int, per_second: float
) -> None:
    """The official SDK driven as someone in a hurry would, under the operator's politeness
    budget: per account at most ``in_flight`` calls at once and ``per_second`` calls per
    second (the operator's own rate limiter), accounts in parallel."""
    client = sdk_client(sim_url)
    by_account: dict[str, list[tuple[str, str, str]]] = {}
    for item in items:
        by_account.setdefault(item[0], []).append(item)
    budgets = {
        account: (threading.BoundedSemaphore(in_flight), RateLimiter(per_second), threading.Lock())
        for account in by_account
    }

    def register(item: tuple[str, str, str]) -> None:
        slots, limiter, lock = budgets[item[0]]
        with slots:
            with lock:
                delay = limiter.reserve()
            time.sleep(delay)
            sdk_register(client, *item)

    # Round-robin over accounts, so no account's budget holds up the others' workers.
    interleaved = [
        item for batch in itertools.zip_longest(*by_account.values()) for item in batch if item
    ]
    workers = min(256, len(by_account) * in_flight)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(register, interleaved))


async def peer(n: int, accounts: int, latency: float, concurrent_script: bool) -> dict[str, Any]:
    items = declared(n, accounts)
    async with SimulatorServer(SimulatorConfig(latency_seconds=latency)) as sim:
        started = time.monotonic()
        if concurrent_script:
            await asyncio.to_thread(sdk_concurrent_peer, sim.url, items, 4, 10.0)
        else:
            await asyncio.to_thread(sdk_peer, sim.url, items)
        seconds = time.monotonic() - started
        calls: dict[str, int] = {}
        for (endpoint, _a, _s), count in sim.state.request_counts.items():
            calls[endpoint] = calls.get(endpoint, 0) + count
        registered = sum(len(r) for r in sim.state.registrations.values())
    if registered != n:
        raise RuntimeError(f"the SDK peer registered {registered} of {n}")
    return {
        "n": n,
        "accounts": accounts,
        "concurrent": concurrent_script,
        "seconds": seconds,
        "calls": calls,
        "calls_total": sum(calls.values()),
    }


def render(results: list[Result], peers: list[dict[str, Any]], args: argparse.Namespace) -> str:
    main_runs = [r for r in results if r.unrelated is None]
    lines = [
        "# Benchmarks",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}); "
        f"simulator latency {args.latency * 1000:.0f} ms per call; drift period "
        f"{args.converge_resync:g} s while converging (the default: no sweep runs during S1), "
        f"{args.resync:g} s after the restart (S6, S2, S3); "
        f"`python -m bench.run {' '.join(sys.argv[1:])}`.",
        "",
        "The operator runs as a real process (`thingspace-operator run`, bytecode and "
        "`PYTHONOPTIMIZE=2` as in the image) against the ThingSpace simulator and the "
        "emulated Kubernetes API, both served by the benchmark process over HTTP on this "
        "machine. Tight bounds, with one credential set: S1 = token + login + one list per "
        "account + one register per resource; S6 = token + login + one list per account; "
        "S2 = one list per account per period and zero Kubernetes writes.",
        "",
        "| N | accounts | S1 converge (s) | ThingSpace calls | tight bound | ratio "
        "| k8s writes per resource | peak RSS (MB) | idle RSS (MB) | KB per resource "
        "| CPU ms per resource |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in main_runs:
        s1, p = r.figures["S1"], r.figures["process"]
        lines.append(
            f"| {r.n} | {r.accounts} | {s1['converge_seconds']:.1f} | {s1['calls_total']} "
            f"| {s1['lower_bound']} | {s1['calls_total'] / s1['lower_bound']:.3f} "
            f"| {s1['kube_writes_per_resource']:.2f} | {p['peak_rss_mb']:.0f} "
            f"| {p['idle_rss_mb']:.0f} | {p['kb_per_resource']:.1f} "
            f"| {p['cpu_ms_per_resource']:.2f} |"
        )
    lines += ["", "S1 ThingSpace calls by endpoint and Kubernetes requests per resource:", ""]
    for r in main_runs:
        s1 = r.figures["S1"]
        kube = ", ".join(f"{k} {v:.2f}" for k, v in s1["kube_requests_per_resource"].items())
        lines.append(f"- N={r.n}: {s1['calls']}; Kubernetes per resource: {kube}")
    lines += render_restart(main_runs)
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
    lines += render_peers(main_runs, peers)
    return "\n".join(lines) + "\n"


def render_restart(results: list[Result]) -> list[str]:
    """S6 and S2: the restarted operator over the converged fleet."""
    rows = [r for r in results if "S6" in r.figures]
    if not rows:
        return []
    lines = [
        "",
        "S6 restart over the converged fleet, then S2 steady state on that process. Resumed: "
        "from the start of the process until every resource was reconciled (the operator's "
        "`thingspace_reconciles_total`); each resume compares the resource with the live list. "
        "Within one period: the benchmark's short drift period (the operator's default is "
        "300 s).",
        "",
        "| N | S6 resumed (s) | within one period | S6 calls | S6 bound | S6 registers "
        "| S6 k8s writes | S2 calls/period | S2 bound | S2 k8s writes/period |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s6, s2 = r.figures["S6"], r.figures.get("S2", {})
        within = "yes" if s6["resumed_seconds"] <= s6["period"] else "no"
        seconds = f"{s6['resumed_seconds']:.1f}"
        if s6["resumed"] < r.n:
            seconds = f"only {s6['resumed']} of {r.n} after {seconds}"
        lines.append(
            f"| {r.n} | {seconds} | {within} | {s6['calls_total']} "
            f"({s6['calls']}) | {s6['lower_bound']} | {s6['registers']} | {s6['kube_writes']} "
            f"| {s2.get('calls_per_period', 0):.1f} | {s2.get('lower_bound', '-')} "
            f"| {s2.get('kube_writes_per_period', 0):.1f} |"
        )
    return lines


def render_peers(results: list[Result], peers: list[dict[str, Any]]) -> list[str]:
    if not peers:
        return []
    lines = [
        "",
        "Peers: the official Verizon SDK (`sdksio-verizon-apis-sdk`) registering the same "
        "callbacks against the same simulator: one after another, and concurrently under "
        "the operator's politeness budget (per account at most 4 calls in flight and 10 calls "
        "per second, with the operator's own rate limiter; accounts in parallel). The SDK "
        "writes nothing to Kubernetes; the operator also writes finalizers, status and Events.",
        "",
        "| N | accounts | SDK script | SDK (s) | SDK calls | operator S1 (s) | operator / SDK |",
        "|---|---|---|---|---|---|---|",
    ]
    for figures in peers:
        base = next((r for r in results if r.n == figures["n"]), None)
        if base is None:
            continue
        converge = base.figures["S1"]["converge_seconds"]
        kind = "concurrent, same budget" if figures["concurrent"] else "sequential"
        lines.append(
            f"| {figures['n']} | {figures['accounts']} | {kind} | {figures['seconds']:.1f} "
            f"| {figures['calls_total']} | {converge:.1f} | {converge / figures['seconds']:.2f} |"
        )
    return lines


async def crowded_cluster(args: argparse.Namespace, workdir: Path) -> list[Result]:
    """S5: converge N with and without the unrelated Secrets, alternating, several times;
    the median run of each side is reported (one run of each varies by seconds here)."""
    accounts = accounts_for(args.n, args.accounts)
    crowd = Unrelated(args.s5_secrets, args.s5_size, args.s5_namespaces)
    runs: dict[int, list[Result]] = {0: [], crowd.count: []}
    for trial in range(args.s5_trials):
        for unrelated in (Unrelated(), crowd):
            print(f"scenario S5 N={args.n} unrelated={unrelated.count} #{trial + 1}", flush=True)
            result = await scenario(args.n, accounts, args, False, workdir, unrelated, periods=0)
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


async def main(args: argparse.Namespace) -> tuple[list[Result], list[dict[str, Any]]]:
    workdir = ROOT / ".bench"
    workdir.mkdir(exist_ok=True)
    results = []
    for n in args.scales:
        accounts = accounts_for(n, args.accounts)
        print(f"scenario N={n} accounts={accounts} ...", flush=True)
        results.append(await scenario(n, accounts, args, drift=n == args.n, workdir=workdir))
        print(json.dumps(results[-1].figures, default=str), flush=True)  # in case a later one fails
    if args.s5_secrets:
        results += await crowded_cluster(args, workdir)
    peers = []
    for n in args.peer_scales:
        for concurrent_script in (False, True):
            print(f"peer N={n} concurrent={concurrent_script} ...", flush=True)
            peers.append(
                await peer(n, accounts_for(n, args.accounts), args.latency, concurrent_script)
            )
    report = render(results, peers, args)
    print(report)
    if args.write:
        target = ROOT / "docs" / "benchmarks.md"
        text = report + METHOD_NOTES
        old = target.read_text() if target.exists() else ""
        target.write_text(sections.keeping_sections(text, old))
    return results, peers


METHOD_NOTES = """
## Scenarios

- **S1 converge**: N resources over M accounts created at once, with the default drift
  period (no sweep runs while converging); time until all are Ready; ThingSpace calls by
  endpoint against the tight bound; Kubernetes writes per resource (finalizer, status,
  Event) and requests per resource by verb (the `GET` count includes the long-lived watch
  requests); the operator's peak and idle RSS, memory and CPU per resource.
- **S6 restart**: the operator stopped (SIGTERM) and started again over the converged fleet,
  as in an upgrade, a crash or a leader handover: time until every resource was resumed,
  ThingSpace calls (bound: token + login + one list per account, no register) and
  Kubernetes writes (bound: zero).
- **S2 steady state**: on the restarted process, a few drift periods with nothing changed:
  ThingSpace calls per period and Kubernetes writes per period.
- **S3 drift**: 10 % of the registrations changed out of band; time until all are corrected.
  Drift checks run at the start of each drift period, so this time is up to one period
  plus the correction, depending on where in the period the change lands.
- **S4 scale**: S1, S6 and S2 at several N.
- **S5 crowded cluster**: S1 at N again, in a cluster that also holds thousands of
  large Secrets no resource references (Helm release records), created before the operator
  starts; compared with the same run without them.
- **Peers**: the official SDK registering the same N callbacks against the same simulator
  with the same latency, sequentially and concurrently under the operator's budget.
- **Handover** (`python -m bench.handover`, on the real control plane): two operator
  processes over a converged fleet; the leader stopped with SIGTERM (rolling upgrade,
  drain) or kill -9 (lost node); time until the standby holds the Lease and makes its first
  ThingSpace call, and every call it makes while it resumes the fleet.
- **kopf's floor** (`python -m bench.floor`): S1 converged by the operator and, in turn, by
  a kopf operator with the same kopf settings that only writes Ready and posts an Event
  (`bench/floor_operator.py`): the same three writes and watch events per resource, no
  ThingSpace call. The difference in CPU per resource is the operator's own work.
- **Deleting the fleet** (`python -m bench.realcp`; `--only-delete` for this alone, on the
  real control plane): the converged fleet deleted with `kubectl delete tscb --all --wait`;
  when kubectl's DELETEs had taken effect, the first and the last deregistration, when the
  last callback was gone and when kubectl returned; the same command over as many callbacks
  no operator holds (kubectl's own time); ThingSpace calls, the operator's Kubernetes
  writes and retries.

Run with `make bench` (defaults) or `python -m bench.run --help` (`python -m bench.handover
--help` for the handover, `python -m bench.realcp --help` for the real control plane). A
tiny version runs in the test suite (`tests/integration/test_bench_smoke.py`,
`tests/e2e/test_bench_realcp.py`) so the harness cannot rot. What the figures mean, what
they changed and what is still off target: [performance.md](performance.md).

Accounts: ThingSpace holds one registration per account and callback service (23 names),
so N resources need at least N / 23 accounts; the harness raises M to that when needed
(N=1000 runs over 44 accounts, N=5000 over 218, N=10000 over 435).
"""


def sizes(value: str) -> list[int]:
    return [int(item) for item in value.split(",")]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="resources for S1-S3 and the peer")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--scales", type=sizes, default=[100, 1000, 5000, 10000])
    parser.add_argument("--peer-scales", type=sizes, default=[1000, 5000])
    parser.add_argument("--latency", type=float, default=0.025)
    parser.add_argument(
        "--converge-resync", type=float, default=300.0, help="drift period while converging"
    )
    parser.add_argument("--resync", type=float, default=10.0, help="drift period from S6 on")
    parser.add_argument("--periods", type=int, default=3)
    parser.add_argument("--s5-secrets", type=int, default=2000, help="unrelated Secrets (S5)")
    parser.add_argument("--s5-size", type=int, default=256 * 1024, help="bytes each (S5)")
    parser.add_argument("--s5-namespaces", type=int, default=50)
    parser.add_argument("--s5-trials", type=int, default=3, help="runs of each side (S5)")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no docs written")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.accounts, args.scales, args.peer_scales = 6, 2, [6], [6]
        args.converge_resync, args.resync, args.periods, args.write = 60.0, 1.0, 2, False
        args.s5_secrets, args.s5_size, args.s5_namespaces, args.s5_trials = 10, 4096, 3, 1
    if args.n not in args.scales:
        args.scales = sorted({*args.scales, args.n})
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
