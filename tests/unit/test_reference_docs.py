"""docs/reference/ is generated from the source by tools/gen_reference.py: each committed page
equals what the tool makes now, the tool documents everything it walks, and every field of
both CRDs has a description (the pages and `kubectl explain` show it)."""

import argparse
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from tools import gen_reference as gen_reference_tool

ROOT = Path(__file__).resolve().parents[2]
FIX = "run: python tools/gen_reference.py"


@cache
def gen_reference() -> ModuleType:
    return gen_reference_tool


@cache
def generated() -> dict[str, str]:
    pages: dict[str, str] = gen_reference().generate()
    return pages


# -- the committed pages -------------------------------------------------------------------


@pytest.mark.parametrize("page", gen_reference().PAGES)
def test_committed_page_is_current(page: str) -> None:
    committed = ROOT / "docs" / "reference" / page
    assert committed.is_file(), f"docs/reference/{page} is missing; {FIX}"
    assert committed.read_text() == generated()[page], f"docs/reference/{page} is stale; {FIX}"


@pytest.mark.parametrize("page", gen_reference().PAGES)
def test_page_says_it_is_generated(page: str) -> None:
    first = generated()[page].splitlines()[0]
    assert "python tools/gen_reference.py" in first
    assert "Do not edit" in first


def test_generating_twice_gives_the_same_pages() -> None:
    assert gen_reference().generate() == generated()


def test_check_names_each_stale_page_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = gen_reference()
    for page, content in generated().items():
        (tmp_path / page).write_text(content)
    assert tool.main(["--check"], out=tmp_path) == 0
    (tmp_path / "cli.md").write_text(generated()["cli.md"].replace("--port", "--prot"))
    (tmp_path / "metrics.md").unlink()
    assert tool.main(["--check"], out=tmp_path) == 1
    said = capsys.readouterr().err
    assert "cli.md is stale" in said
    assert "metrics.md is stale" in said
    assert "crds.md" not in said
    assert "`python tools/gen_reference.py`" in said


def test_writing_makes_the_check_pass(tmp_path: Path) -> None:
    tool = gen_reference()
    shutil.copy(ROOT / "docs" / "reference" / "crds.md", tmp_path / "crds.md")
    assert tool.main([], out=tmp_path) == 0
    assert tool.stale(tmp_path, generated()) == []


# -- everything is documented -------------------------------------------------------------


def all_parsers(
    title: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield title, parser
    for name, _, child in gen_reference().subcommands(parser):
        yield from all_parsers(f"{title} {name}", child)


def test_cli_page_has_every_command_and_flag() -> None:
    page = generated()["cli.md"]
    found = 0
    for title, _, top in gen_reference().commands():
        for command, parser in all_parsers(title, top):
            assert f"`{command}`" in page
            for action in parser._actions:
                for flag in action.option_strings:
                    assert f"`{flag}" in page or f"<code>{flag}" in page, f"{command} {flag}"
                    found += 1
    assert found > 100  # operator run, export, diff, plan, status, the simulator, the plugin


def test_metrics_page_has_every_metric() -> None:
    from thingspace_operator.metrics import Metrics

    page = generated()["metrics.md"]
    names = [family.name for family in Metrics().registry.collect()]
    assert "thingspace_leader" in names
    for name in names:
        if not name.startswith("process_"):
            assert f"`{name}" in page, name
    assert "process_resident_memory_bytes" in page


def test_values_page_has_every_described_key() -> None:
    page = generated()["values.md"]
    values = (ROOT / "charts" / "thingspace-operator" / "values.yaml").read_text()
    described = gen_reference().values_schema().descriptions(values)
    assert len(described) > 50
    for key in described:
        assert f"| `{key}` |" in page, key


# -- every CRD field has a description ----------------------------------------------------

CRD_COPIES = sorted((ROOT / "crds").glob("*.yaml")) + sorted(
    (ROOT / "charts" / "thingspace-operator" / "files" / "crds").glob("*.yaml")
)


def fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node``: properties, array items (``[]``), map values
    (``{}``)."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield path + suffix, node[key]
            yield from fields(node[key], path + suffix)


def undescribed(schema: dict[str, Any]) -> list[str]:
    # The API server allows nothing but the type on metadata, not even a description.
    return [
        path
        for path, node in fields(schema)
        if path != ".metadata" and not str(node.get("description", "")).strip()
    ]


def test_undescribed_finds_fields_items_and_map_values() -> None:
    schema = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "description": "the spec",
                "properties": {
                    "list": {"type": "array", "description": "x", "items": {"type": "string"}},
                    "map": {
                        "type": "object",
                        "description": "y",
                        "additionalProperties": {"type": "string", "description": " "},
                    },
                    "plain": {"type": "string"},
                },
            },
        },
    }
    assert undescribed(schema) == [".spec.list[]", ".spec.map{}", ".spec.plain"]


@pytest.mark.parametrize("path", CRD_COPIES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_crd_field_has_a_description(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["names"]["kind"] in ("ThingSpaceCallback", "ThingSpaceAccount")
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert len(list(fields(schema))) > 20
        assert undescribed(schema) == [], f"{path.name} {version['name']}"
