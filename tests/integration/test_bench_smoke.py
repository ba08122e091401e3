"""A tiny run of the benchmark harness, so it cannot rot (the real run: make bench)."""

import asyncio

from bench.run import main, parse


def test_benchmark_harness_runs_end_to_end(capsys) -> None:
    asyncio.run(main(parse(["--smoke"])))
    report = capsys.readouterr().out
    assert "| 6 | 2 |" in report  # S1/S2 row for N=6 over 2 accounts
    assert "Peer at N=6" in report
    assert "S3 changed out of band" in report
    assert "S5 crowded cluster, N=6: 10 unrelated Secrets" in report
