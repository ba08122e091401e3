"""Fixtures of the end-to-end layer: one real control plane per test run (built by the
project from tests/controlplane), a simulator per module; the helpers are in cluster.py.

Without Go the control plane cannot be built: every test here is skipped, and the run says
so in its summary (and `make test` says so in a banner).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Simulator
from tests.e2e.controlplane import (
    Cluster,
    ControlPlane,
    ControlPlaneUnavailable,
    ExternalCluster,
    ensure_binary,
)

# --- the control plane -------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A real cluster takes longer than the suite's default per-test timeout."""
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.timeout(240))


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The project's own control plane, or the cluster of E2E_KUBECONFIG (kind, ...)."""
    external = os.environ.get("E2E_KUBECONFIG")
    if external:
        yield ExternalCluster(Path(external), tmp_path_factory.mktemp("external"))
        return
    try:
        binary = ensure_binary()
    except ControlPlaneUnavailable as exc:
        pytest.skip(f"REAL CONTROL PLANE NOT AVAILABLE, e2e layer skipped: {exc}")
    with ControlPlane(binary, tmp_path_factory.mktemp("controlplane")) as control_plane:
        yield control_plane


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path_factory.mktemp("sim"))
    yield simulator
    simulator.stop()
