"""A tiny run of the benchmark harness, so it cannot rot (the real run: make bench)."""

import asyncio

from bench import floor
from bench.run import main, parse


def test_benchmark_harness_runs_end_to_end(capsys) -> None:
    results, peers = asyncio.run(main(parse(["--smoke"])))
    report = capsys.readouterr().out
    run = next(r for r in results if r.n == 6 and r.unrelated is None)
    s1, s6 = run.figures["S1"], run.figures["S6"]
    assert s1["calls"] == {"token": 1, "login": 1, "list": 2, "register": 6}  # the tight bound
    assert s1["kube_writes_per_resource"] <= 3
    # S6: a restart over the converged fleet writes nothing anywhere.
    assert (s6["registers"], s6["kube_writes"]) == (0, 0)
    assert (s6["calls"]["token"], s6["calls"]["login"]) == (1, 1)
    assert s6["calls"]["list"] >= 2
    assert "S2" in run.figures
    assert "S3" in run.figures
    assert {(p["n"], p["concurrent"]) for p in peers} == {(6, False), (6, True)}
    assert "| 6 | 2 |" in report  # the S1 row for N=6 over 2 accounts
    assert "S6 restart over the converged fleet" in report
    assert "concurrent, same budget" in report
    assert "S5 crowded cluster, N=6: 10 unrelated Secrets" in report


def test_the_kopf_floor_benchmark_makes_the_operators_writes() -> None:
    """bench/floor.py compares like with like: the floor makes the operator's three
    Kubernetes writes per resource, and the report has a row per N."""
    args = floor.parse(["--smoke"])
    results = asyncio.run(floor.run(args))
    writes = {r["kind"]: r["writes_per_resource"] for r in results}
    assert writes == {"operator": 3.0, "kopf floor": 3.0}
    assert all(r["cpu_ms_per_resource"] > 0 for r in results)
    assert "| 20 |" in floor.render(results, args)
