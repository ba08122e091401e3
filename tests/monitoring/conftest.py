"""The monitoring layer's tools: Debian's prometheus and promtool, fetched once and cached
(tools/monitoring_tools.py). Without them the layer skips, saying why."""

from pathlib import Path

import pytest
from tools import monitoring_tools


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    try:
        return monitoring_tools.prometheus_bin()
    except monitoring_tools.Unavailable as exc:
        pytest.skip(f"######## prometheus/promtool not available: {exc} ########")
