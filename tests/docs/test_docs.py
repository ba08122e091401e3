"""The documentation: the MkDocs site builds with --strict (a broken link or anchor fails
it), every page of its navigation exists, and README.md stays a short front page whose
quick start runs real make targets."""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MKDOCS = ROOT / ".venv" / "bin" / "mkdocs"
README_MAX_BYTES = 12 * 1024


def nav_pages(nav: Any) -> Iterator[str]:
    """Every page path of an mkdocs.yml nav (strings, lists and titled entries, nested)."""
    if isinstance(nav, str):
        if not re.match(r"^[a-z][a-z0-9+.-]*://", nav):
            yield nav
    elif isinstance(nav, list):
        for entry in nav:
            yield from nav_pages(entry)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.MULTILINE))


@pytest.mark.timeout(300)
def test_site_builds_strictly(tmp_path: Path) -> None:
    if not MKDOCS.exists():
        pytest.fail(f"mkdocs not found at {MKDOCS}: build the virtualenv (make test, or uv sync)")
    # The theme's banner about its successor is left out of the output (not a warning).
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").exists(), output


def test_every_nav_page_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    pages = list(nav_pages(config["nav"]))
    assert "index.md" in pages
    assert [page for page in pages if not (DOCS / page).is_file()] == []
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"


def test_site_dir_is_ignored_by_git() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    ignored = (ROOT / ".gitignore").read_text().split()
    assert f"{config['site_dir'].strip('/')}/" in ignored


def test_readme_is_at_most_12_kib() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md has {size} bytes, more than {README_MAX_BYTES}: move details into docs/"
    )


def test_readme_quick_start_runs_make_targets() -> None:
    readme = README.read_text()
    first_block = re.search(r"^```(?:sh|bash|console)\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert first_block is not None, "README.md has no shell code block"
    assert readme.index("## Quick start") < first_block.start()
    commands = [
        line.split("#", 1)[0].strip()
        for line in first_block.group(1).splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert len(commands) >= 2, commands
    targets = makefile_targets()
    for command in commands[:2]:
        words = command.split()
        assert words[0] == "make", command
        assert len(words) == 2, command
        assert words[1] in targets, f"{command}: no such target in the Makefile"


def test_readme_links_resolve() -> None:
    readme = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#", 1)[0] for link in links if not re.match(r"^[a-z]+:", link)]
    assert local, "README.md links to no page"
    assert [link for link in local if link and not (ROOT / link).exists()] == []
    assert any(link.startswith("docs/") for link in local)
