"""One version: the package's, in pyproject.toml, is the chart's version and appVersion
(so the image tag the chart asks for by default), the package's ``__version__`` and the
CHANGELOG's newest heading. `make version VERSION=x.y.z` (tools/set_version.py) writes them
all; `make release` tags the image and packages the chart with it."""

import re
import tomllib
from pathlib import Path

import yaml

import thingspace_operator

ROOT = Path(__file__).resolve().parents[2]


def package_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_the_chart_carries_the_package_version() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "thingspace-operator" / "Chart.yaml").read_text())
    assert chart["version"] == package_version()
    assert chart["appVersion"] == package_version()  # the default image tag


def test_the_module_says_the_package_version() -> None:
    assert thingspace_operator.__version__ == package_version()


def test_the_changelog_heads_with_the_package_version() -> None:
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings, "CHANGELOG.md has no version heading"
    assert headings[0] == package_version(), (
        f"CHANGELOG.md's newest heading is {headings[0]}, the package is {package_version()}"
    )
