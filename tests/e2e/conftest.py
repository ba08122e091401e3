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


BINARY = pytest.StashKey[Path | Exception]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A real cluster takes longer than the suite's default per-test timeout; and the
    control plane is built here, before any test's timeout runs (cold: about 10 minutes)."""
    selected = [item for item in items if "tests/e2e/" in str(item.path)]
    for item in selected:
        item.add_marker(pytest.mark.timeout(240))
    if selected and not os.environ.get("E2E_KUBECONFIG"):
        try:
            config.stash[BINARY] = ensure_binary()
        except (ControlPlaneUnavailable, RuntimeError) as exc:
            config.stash[BINARY] = exc


@pytest.fixture(scope="session")
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The project's own control plane, or the cluster of E2E_KUBECONFIG (kind, ...)."""
    external = os.environ.get("E2E_KUBECONFIG")
    if external:
        yield ExternalCluster(Path(external), tmp_path_factory.mktemp("external"))
        return
    binary = request.config.stash.get(BINARY, None) or ensure_binary()
    if isinstance(binary, ControlPlaneUnavailable):
        pytest.skip(f"REAL CONTROL PLANE NOT AVAILABLE, e2e layer skipped: {binary}")
    if isinstance(binary, Exception):
        raise binary
    with ControlPlane(binary, tmp_path_factory.mktemp("controlplane")) as control_plane:
        yield control_plane


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path_factory.mktemp("sim"))
    yield simulator
    simulator.stop()
