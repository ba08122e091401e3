"""tools/build_image.py: the pure parts (base name, host apt sources, cache key) and the
Dockerfile's optional extra CA. The build itself runs in the node layer (podman, root)."""

import re
from pathlib import Path
from types import ModuleType

import pytest
from tools import build_image as build_image_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return build_image_tool


@pytest.mark.parametrize(
    ("declared", "qualified"),
    [
        ("python:3.11.14-slim-bookworm", "docker.io/library/python:3.11.14-slim-bookworm"),
        ("acme/python:3.11", "docker.io/acme/python:3.11"),
        ("ghcr.io/acme/python:3.11", "ghcr.io/acme/python:3.11"),
        ("registry:5000/python:3.11", "registry:5000/python:3.11"),
        ("localhost/base:1", "localhost/base:1"),
    ],
)
def test_the_default_base_is_fully_qualified(
    tool: ModuleType, declared: str, qualified: str
) -> None:
    assert tool.default_base(f"# x\nARG PYTHON_IMAGE={declared}\nFROM x\n") == qualified


def test_the_dockerfile_declares_the_official_python_image(tool: ModuleType) -> None:
    base = tool.default_base((ROOT / "Dockerfile").read_text())
    assert base.startswith("docker.io/library/python:3.11")


def test_only_the_hosts_debian_entries_of_the_suite_are_used(
    tool: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "Enabled: no\n"
    )
    (tmp_path / "sources.list.d" / "nodesource.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
    )
    (tmp_path / "sources.list.d" / "off.sources.disabled").write_text(
        "Types: deb\nURIs: http://elsewhere/debian\nSuites: bookworm\n"
    )
    assert tool.host_sources(tmp_path) == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
    ]


def test_the_hosts_acquire_options_are_passed(tool: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "apt.conf.d").mkdir()
    (tmp_path / "apt.conf.d" / "99snapshot").write_text(
        'Acquire::Check-Valid-Until "false";\n// comment\nAPT::Install-Recommends "0";\n'
    )
    assert tool.host_apt_options(tmp_path) == ['Acquire::Check-Valid-Until "false";']


def test_the_cache_key_follows_the_context_and_the_base(tool: ModuleType, tmp_path: Path) -> None:
    for name in tool.CONTEXT:
        (tmp_path / name).write_text(name)
    package = tmp_path / "operator" / "pkg"
    package.mkdir(parents=True)
    (package / "mod.py").write_text("A = 1\n")
    key = tool.inputs_key("base1", tmp_path)

    # What .dockerignore leaves out of the context does not count.
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / "operator" / "pkg.egg-info").mkdir()
    (tmp_path / "operator" / "pkg.egg-info" / "SOURCES.txt").write_text("x")
    assert tool.inputs_key("base1", tmp_path) == key

    assert tool.inputs_key("base2", tmp_path) != key
    (package / "mod.py").write_text("A = 2\n")
    assert tool.inputs_key("base1", tmp_path) != key


def test_the_dockerignore_leaves_out_what_the_key_leaves_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in ("operator/**/__pycache__", "operator/**/*.pyc", "operator/*.egg-info"):
        assert pattern in ignored


def test_every_download_may_trust_an_extra_ca_and_only_the_venv_ships() -> None:
    build, final = (ROOT / "Dockerfile").read_text().split("\nFROM ${PYTHON_IMAGE}\n")
    runs = re.findall(r"^RUN (.*?[^\\])$", build, re.MULTILINE | re.DOTALL)
    downloads = [r for r in runs if re.search(r"\b(pip install|uv sync)\b", r)]
    assert len(downloads) == 3
    for command in downloads:
        assert command.startswith("--mount=type=secret,id=extra_ca,required=false")
        assert "with-extra-ca " in command
    assert "secret" not in final
    assert re.findall(r"^COPY .*$", final, re.MULTILINE) == [
        "COPY --from=build /opt/venv /opt/venv"
    ]
