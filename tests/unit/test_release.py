"""tools/release.py, tools/set_version.py and tools/release_notes.py: the pure parts (labels,
plain HTTP, names, versions). `make release` itself runs against a local registry in the
node layer (tests/node/test_release.py)."""

import subprocess
import tomllib
from pathlib import Path

import pytest
from tools import release, release_notes, set_version
from tools.release import (
    Commit,
    Signer,
    Target,
    commit_time,
    oci_labels,
    plain_http,
    project,
    pushed_digest,
    release_version,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_labels_come_from_the_project_and_the_commit() -> None:
    meta = project((ROOT / "pyproject.toml").read_text())
    commit = Commit(revision="abc123", created="2026-12-08T01:02:03Z")
    labels = oci_labels(meta, commit, "1.2.3", "docker.io/library/python:3.11.14-slim-bookworm")
    prefix = "org.opencontainers.image."
    assert labels[prefix + "base.name"] == "docker.io/library/python:3.11.14-slim-bookworm"
    assert labels[prefix + "version"] == "1.2.3"
    assert labels[prefix + "revision"] == "abc123"
    assert labels[prefix + "created"] == "2026-12-08T01:02:03Z"
    assert labels[prefix + "licenses"] == "Apache-2.0"
    assert labels[prefix + "source"] == meta.source
    assert meta.source.startswith("https://github.com/")


def test_created_is_the_commit_time_in_utc() -> None:
    assert commit_time("2026-12-08T03:04:05+02:00") == "2026-12-08T01:04:05Z"
    assert commit_time("2026-12-08T01:04:05Z") == "2026-12-08T01:04:05Z"


@pytest.mark.parametrize(
    ("registry", "plain"),
    [
        ("127.0.0.1:5000/thingspace", True),
        ("localhost:5000/x", True),
        ("[::1]:5000/x", True),
        ("127.0.0.1/x", True),
        ("ghcr.io/thingspace-operator", False),
        ("registry.example.com:5000/x", False),
        ("10.0.0.1:5000/x", False),
    ],
)
def test_only_loopback_registries_speak_plain_http(registry: str, plain: bool) -> None:
    assert plain_http(registry) is plain


def test_where_the_image_and_chart_go() -> None:
    target = Target("ghcr.io/org", "0.2.0")
    assert target.image == "ghcr.io/org/thingspace-operator"
    assert target.chart == "ghcr.io/org/charts/thingspace-operator"
    assert target.chart_repository == "ghcr.io/org/charts"


def test_the_chart_digest_is_read_from_helm_push() -> None:
    digest = "sha256:" + "ab" * 32
    output = f"Pushed: r/charts/thingspace-operator:0.1.0\nDigest: {digest}\n"
    assert pushed_digest(output) == digest
    with pytest.raises(SystemExit):
        pushed_digest("Pushed: somewhere\n")


def test_key_signatures_stay_offline_and_keyless_uses_the_transparency_log() -> None:
    keyed = Signer.with_key(Path("cosign.key"), Path("offline.json"), True).flags
    assert keyed[keyed.index("--signing-config") + 1] == "offline.json"
    assert "--allow-http-registry" in keyed
    keyless = Signer.keyless(insecure_registry=False).flags
    assert "--key" not in keyless
    assert "--signing-config" not in keyless  # Sigstore's, from its TUF root
    assert "--allow-http-registry" not in keyless


@pytest.mark.parametrize(
    ("requested", "released"),
    [(None, "0.2.0"), ("0.2.0", "0.2.0"), ("0.2.0-rc.1", "0.2.0-rc.1"), ("0.2.0+abc", "0.2.0+abc")],
)
def test_a_release_is_the_package_version_or_a_pre_release_of_it(
    requested: str | None, released: str
) -> None:
    assert release_version(requested, "0.2.0") == released


@pytest.mark.parametrize("requested", ["0.3.0", "0.2.1-rc.1", "v0.2.0", "0.2", "latest"])
def test_any_other_version_is_refused(requested: str) -> None:
    with pytest.raises(SystemExit):
        release_version(requested, "0.2.0")


def refused_before_any_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, *, env: dict[str, str] | None = None
) -> str:
    """``release.py`` exits with a message and has run nothing (built, pushed, signed)."""

    def no_command(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a command ran: {args}")

    monkeypatch.setattr(subprocess, "run", no_command)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as refused:
        release.main(argv)
    return str(refused.value)


def test_publish_refuses_a_missing_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = ["publish", "--registry", "127.0.0.1:5000/x", "--dist", str(tmp_path)]
    message = refused_before_any_command(
        [*argv, "--key", str(tmp_path / "nope.key")], monkeypatch, env={"COSIGN_PASSWORD": ""}
    )
    assert "no cosign key" in message


def test_publish_needs_the_key_password_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "cosign.key"
    key.write_text("not read")
    argv = ["publish", "--registry", "127.0.0.1:5000/x", "--dist", str(tmp_path), "--key", str(key)]
    assert "COSIGN_PASSWORD" in refused_before_any_command(argv, monkeypatch)


def test_publish_refuses_a_version_that_is_not_semver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = ["publish", "--registry", "r.example/x", "--dist", str(tmp_path), "--unsigned"]
    assert "semver" in refused_before_any_command([*argv, "--version", "1.0"], monkeypatch)


def test_publish_needs_a_registry_and_a_way_to_sign() -> None:
    with pytest.raises(SystemExit):
        release.main(["publish", "--unsigned"])
    with pytest.raises(SystemExit):
        release.main(["publish", "--registry", "r.example/x"])


def test_set_version_writes_every_place() -> None:
    assert 'version = "2.0.0"' in set_version.with_pyproject_version(
        '[project]\nname = "x"\nversion = "0.1.0"\n', "2.0.0"
    )
    chart = set_version.with_chart_version('version: 0.1.0\nappVersion: "0.1.0"\n', "2.0.0")
    assert chart == 'version: 2.0.0\nappVersion: "2.0.0"\n'
    changelog = "# Changelog\n\n## 0.1.0 (unreleased)\n\n- a\n"
    renamed = set_version.with_changelog_heading(changelog, "0.2.0")
    assert renamed == "# Changelog\n\n## 0.2.0 (unreleased)\n\n- a\n"
    released = "# Changelog\n\n## 0.1.0 (2026-12-08)\n\n- a\n"
    added = set_version.with_changelog_heading(released, "0.2.0")
    assert added.index("## 0.2.0 (unreleased)") < added.index("## 0.1.0 (2026-12-08)")


@pytest.mark.parametrize("version", ["0.2.0-rc.1", "0.2", "v0.2.0"])
def test_set_version_takes_final_versions_only(version: str) -> None:
    with pytest.raises(SystemExit):
        set_version.main(version)


def test_the_pyproject_edit_touches_only_the_project_version() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    edited = tomllib.loads(set_version.with_pyproject_version(text, "9.9.9"))
    original = tomllib.loads(text)
    assert edited["project"]["version"] == "9.9.9"
    edited["project"]["version"] = original["project"]["version"]
    assert edited == original


def test_the_release_notes_are_the_versions_changelog_section() -> None:
    changelog = "# Changelog\n\n## 0.2.0 (2027-01-01)\n\n- new\n\n## 0.1.0 (2026-12-08)\n\n- old\n"
    assert release_notes.section(changelog, "0.2.0") == "- new\n"
    assert release_notes.section(changelog, "0.1.0") == "- old\n"
    with pytest.raises(SystemExit):
        release_notes.section(changelog, "0.3.0")


def test_a_release_to_a_real_registry_never_falls_back_to_the_stand_in_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = []

    def unreachable(requested: str | None, stand_in: bool) -> str:
        asked.append(requested)
        raise subprocess.CalledProcessError(125, ["podman", "pull", str(requested)])

    monkeypatch.setattr(release.build_image, "ensure_base", unreachable)
    with pytest.raises(SystemExit, match="cannot pull the Dockerfile's base"):
        release.release_base(insecure=False)
    official = release.build_image.default_base((ROOT / "Dockerfile").read_text())
    assert asked == [official]  # never None, which would allow the stand-in
