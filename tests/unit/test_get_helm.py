"""tools/get_helm.py: PyPI carries a Linux x86-64 helm only; elsewhere the installed helm is
used, or make stops with what to do."""

import platform
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from tools import get_helm as get_helm_tool


def get_helm() -> ModuleType:
    return get_helm_tool


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
