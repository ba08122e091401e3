"""kopf's floor: how much of the operator's CPU per resource kopf itself costs.

    python -m bench.floor                 # N=1000 and 5000, 2 trials each; writes its section
    python -m bench.floor --smoke         # tiny, used by the test suite

The same harness as S1 (bench/run.py: the simulator and the emulated API server in this
process, the operator as a real process) converges N resources twice: with the operator,
and with bench/floor_operator.py, a kopf operator with the operator's kopf settings that
only writes Ready and posts an Event (the same three writes and watch events per resource,
no ThingSpace call). The difference is what the operator's own work costs.
"""

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import sections
from bench.run import ROOT, Harness, accounts_for, converge, declared, sizes
from tests.harness.kube import emulated_kubernetes
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer

REPORT = ROOT / "docs" / "benchmarks.md"
KINDS = ("operator", "kopf floor")


class FloorHarness(Harness):
    """Runs bench/floor_operator.py where the harness runs the operator."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.floor_operator"]


async def one_run(kind: str, n: int, latency: float) -> dict[str, Any]:
    accounts = accounts_for(n, 20)
    items = declared(n, accounts)
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        async with (
            SimulatorServer(SimulatorConfig(latency_seconds=latency)) as sim,
            emulated_kubernetes() as kube,
        ):
            harness = (FloorHarness if kind == "kopf floor" else Harness)(sim, kube, Path(tmp))
            await harness.start_operator(300.0)
            try:
                figures = await converge(harness, items, accounts)
                _, cpu = harness.process_usage()
            finally:
                await harness.stop_operator()
    return {
        "kind": kind,
        "n": n,
        "converge_seconds": figures["converge_seconds"],
        "writes_per_resource": figures["kube_writes_per_resource"],
        "cpu_ms_per_resource": (cpu - figures["idle"]["cpu_seconds"]) * 1000 / n,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each N: the operator and the floor in turn, ``trials`` times (alternating, so a
    machine that slows down mid-run weighs on both)."""
    results = []
    for n in args.scales:
        for _ in range(args.trials):
            for kind in KINDS:
                print(f"{kind} N={n} ...", flush=True)
                results.append(await one_run(kind, n, args.latency))
                print(results[-1], flush=True)
    return results


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "## kopf's floor",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores), `python -m bench.floor`: S1 converge with the operator, "
        "and with a kopf operator of the same settings and connection pool that only writes "
        "Ready and posts one Event (`bench/floor_operator.py`: the same three writes and "
        "watch events per "
        f"resource, no ThingSpace call); median of {args.trials} alternating runs each.",
        "",
        "| N | operator CPU ms per resource | kopf floor CPU ms per resource | the operator's "
        "own (ms) | operator converge (s) | floor converge (s) | writes per resource "
        "(operator, floor) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in args.scales:
        ours = [r for r in results if r["n"] == n and r["kind"] == "operator"]
        floor = [r for r in results if r["n"] == n and r["kind"] == "kopf floor"]
        cpu, floor_cpu = median(ours, "cpu_ms_per_resource"), median(floor, "cpu_ms_per_resource")
        lines.append(
            f"| {n} | {cpu:.2f} | {floor_cpu:.2f} | {cpu - floor_cpu:.2f} "
            f"| {median(ours, 'converge_seconds'):.1f} | {median(floor, 'converge_seconds'):.1f} "
            f"| {median(ours, 'writes_per_resource'):.2f}, "
            f"{median(floor, 'writes_per_resource'):.2f} |"
        )
    return sections.wrap("floor", "\n".join(lines) + "\n")


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=sizes, default=[1000, 5000])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.025)
    parser.add_argument("--smoke", action="store_true", help="N=20, one trial, no report")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scales, args.trials, args.write = [20], 1, False
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    section = render(asyncio.run(run(args)), args)
    print(section)
    if args.write:
        REPORT.write_text(sections.with_section(REPORT.read_text(), "floor", section))
    return section


if __name__ == "__main__":
    main()
