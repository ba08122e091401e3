"""The GitHub workflows (CI and the release) pass actionlint, which also type-checks their
expressions and, where shellcheck is installed, their scripts. They cannot run here; what
they call (`.ci/run`, `make release`, `make verify-release`, tools/release_notes.py) is
exercised by the rest of the suite."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tools.release_tools import Unavailable, find

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint() -> Path:
    try:
        return find("actionlint")
    except Unavailable as exc:
        pytest.skip(f"######## actionlint not available: {exc} ########")


def lint(*flags: str) -> None:
    done = subprocess.run(
        [str(actionlint()), "-no-color", *flags, *map(str, WORKFLOWS)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflows_pass_actionlint() -> None:
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "release.yml"}
    lint("-shellcheck=")  # the workflows themselves: syntax, expressions, permissions


def test_the_workflows_scripts_pass_shellcheck() -> None:
    """actionlint skips the scripts silently without shellcheck: here it says so."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("######## shellcheck not installed: the workflows' scripts unchecked ########")
    lint(f"-shellcheck={shellcheck}")


def test_ci_runs_the_ci_entry_point() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert any("bash .ci/run" in step for step in steps)


def test_the_release_runs_make_release_keyless_on_a_version_tag() -> None:
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    triggers = release[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["tags"] == ["v*.*.*"]
    assert release["permissions"] == {"contents": "read"}
    publish, announce = release["jobs"]["publish"], release["jobs"]["github-release"]
    assert publish["permissions"]["id-token"] == "write"  # Sigstore's OIDC identity
    assert publish["permissions"]["packages"] == "write"  # ghcr.io
    assert publish["permissions"]["contents"] == "read"
    steps = "\n".join(step.get("run", "") for step in publish["steps"])
    assert re.search(r"make release REGISTRY=\S+ SIGN=keyless", steps)
    assert "make verify-release" in steps
    assert "ghcr.io" in publish["env"]["REGISTRY"]
    # only the job that runs no project code may write to the repository
    assert announce["permissions"] == {"contents": "write"}
    assert not any("make" in step.get("run", "") for step in announce["steps"])


def test_every_action_is_pinned_to_a_commit() -> None:
    """A tag can be moved by whoever controls the action's repository; a commit cannot."""
    uses = [
        line.split("uses:", 1)[1].split("#")[0].strip()
        for path in WORKFLOWS
        for line in path.read_text().splitlines()
        if "uses:" in line
    ]
    assert uses
    unpinned = [use for use in uses if not re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use)]
    assert not unpinned, unpinned
