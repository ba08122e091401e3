#!/usr/bin/env python3
"""Set the release version everywhere it is written, from one command:

    python3 tools/set_version.py X.Y.Z

pyproject.toml's ``version`` (the one source: the package's ``__version__`` is read from
it), uv.lock (re-locked, so ``uv sync --locked`` accepts it), the chart's ``version`` and
``appVersion`` (the image tag it asks for by default), and the CHANGELOG's newest heading:
an ``(unreleased)`` heading is renamed, else a new one is added above the last release.
tests/unit/test_versions.py fails when any of them disagrees. Only MAJOR.MINOR.PATCH: a
pre-release is written differently by Python (0.2.0rc1) and Helm (0.2.0-rc.1), so one is
released from its final version (make release VERSION=0.2.0-rc.1).
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FINAL = re.compile(r"^\d+\.\d+\.\d+$")


def with_pyproject_version(text: str, version: str) -> str:
    return re.sub(r'(?m)^version = "[^"]*"', f'version = "{version}"', text, count=1)


def with_chart_version(text: str, version: str) -> str:
    text = re.sub(r"(?m)^version: .*$", f"version: {version}", text, count=1)
    return re.sub(r"(?m)^appVersion: .*$", f'appVersion: "{version}"', text, count=1)


def with_changelog_heading(text: str, version: str) -> str:
    newest = re.search(r"(?m)^## (\S+)(.*)$", text)
    if newest and newest.group(1) == version:
        return text
    if newest and "unreleased" in newest.group(2):
        return text[: newest.start()] + f"## {version} (unreleased)" + text[newest.end() :]
    heading = f"## {version} (unreleased)\n\n"
    at = newest.start() if newest else len(text)
    return text[:at] + heading + text[at:]


def main(version: str) -> None:
    if not FINAL.match(version):
        raise SystemExit(f"set_version: {version!r} is not MAJOR.MINOR.PATCH")
    edits = {
        "pyproject.toml": with_pyproject_version,
        "charts/thingspace-operator/Chart.yaml": with_chart_version,
        "CHANGELOG.md": with_changelog_heading,
    }
    for name, edit in edits.items():
        path = ROOT / name
        path.write_text(edit(path.read_text(), version))
    uv = ROOT / ".venv" / "bin" / "uv"
    subprocess.run([str(uv), "lock", "--quiet"], cwd=ROOT, check=True)  # noqa: S603
    print(f"version {version}: pyproject.toml, uv.lock, Chart.yaml, CHANGELOG.md")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
