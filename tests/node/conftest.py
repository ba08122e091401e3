"""Fixtures of the node layer: one real node per test run (tests/node/cluster.py), with the
operator image built from the Dockerfile and imported into its containerd.

Where the machine cannot run a node (not root, no cgroups, no bridge, no Go), every test
here is skipped and the run says what is missing in its summary (and `make test` in a
banner).
"""

from collections.abc import Iterator

import pytest

from tests.node.cluster import Node, NodeUnavailable, build_parts

PARTS = pytest.StashKey[object]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Pods take longer than the suite's default per-test timeout; and every part is built
    here, before any test's timeout runs (cold: minutes)."""
    selected = [item for item in items if "tests/node/" in str(item.path)]
    for item in selected:
        if item.get_closest_marker("timeout") is None:  # a module may need longer
            item.add_marker(pytest.mark.timeout(420))
    if selected:
        try:
            config.stash[PARTS] = build_parts()
        except (NodeUnavailable, RuntimeError) as exc:
            config.stash[PARTS] = exc


@pytest.fixture(scope="session")
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """Started before the first node test, stopped at the end of the run with the host put
    back as it was."""
    parts = request.config.stash.get(PARTS, None) or build_parts()
    if isinstance(parts, NodeUnavailable):
        pytest.skip(f"REAL NODE NOT AVAILABLE, node layer skipped: {parts}")
    if isinstance(parts, Exception):
        raise parts
    cluster = Node(*parts, workdir=tmp_path_factory.mktemp("node")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
