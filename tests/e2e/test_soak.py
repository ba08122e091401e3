"""The chaos soak's short fixed-seed run (bench/soak.py): two operator processes with leader
election under every fault kind once, a changing workload, and every invariant checked all
the way and once more after quiet. The hour-long run is `make soak`."""

from pathlib import Path

import pytest

from bench import soak
from bench.soak_plan import FAULT_KINDS
from tests.e2e.cluster import needs_control
from tests.e2e.controlplane import Cluster

SEED = 20260101  # replays the same schedule; change it only with a green run of the new one


@pytest.mark.timeout(290)
def test_a_short_chaos_soak_violates_no_invariant(plane: Cluster, tmp_path: Path) -> None:
    needs_control(plane)  # restarts the API server and compacts etcd
    args = soak.parse(
        ["--duration", "100", "--seed", str(SEED), "--n", "16", "--resync", "6",
         "--op-every", "1.5"]
    )  # fmt: skip
    code, summary = soak.soak(plane, tmp_path, args)
    assert code == 0, summary
    assert summary["violations"] == 0
    kinds = {kind.removesuffix(" (skipped)") for kind in summary["faults"]}
    assert kinds == set(FAULT_KINDS), summary["faults"]
