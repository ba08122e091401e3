"""A release as users receive it: `make release` into a local registry (Debian's
docker-registry on 127.0.0.1, plain HTTP), then the chart installed *from the registry*
(`helm install oci://...`) with only the image's registry changed in values, its pods
pulling the image from there (`IfNotPresent`) on the real node. The signatures verify with
cosign; a tag re-pointed to an unsigned image does not; the SBOM attached to the image
lists the locked Python dependencies with their versions."""

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from tools.release import commit_time, project
from tools.release_tools import Unavailable, find

from tests.e2e.cluster import ROOT
from tests.node.cluster import Node
from tests.node.registry import LocalRegistry
from tests.node.workload import install

pytestmark = pytest.mark.timeout(1500)  # the first test runs `make release` (cold: minutes)

DOCKERFILE = ROOT / "Dockerfile"
PATH = "thingspace"  # the registry path: REGISTRY=127.0.0.1:PORT/thingspace
IMAGE_REPOSITORY = f"{PATH}/thingspace-operator"
CHART_REPOSITORY = f"{PATH}/charts/thingspace-operator"
#: Keyless attestations go whole into Rekor, which refuses entries of a few MB.
SBOM_LIMIT = 2_000_000


def image_python() -> dict[str, str]:
    """The Dockerfile's interpreter (python:X.Y.Z-...): what the lock's markers are read for."""
    found = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.(\d+)", DOCKERFILE.read_text(), re.M)
    assert found, "the Dockerfile's PYTHON_IMAGE names no python:X.Y.Z"
    major, minor, patch = found.groups()
    return {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.{patch}"}


@dataclass
class Released:
    registry: LocalRegistry
    summary: dict[str, Any]
    public_key: Path
    dist: Path

    @property
    def prefix(self) -> str:
        return f"{self.registry.host}/{PATH}"

    @property
    def version(self) -> str:
        return str(self.summary["version"])

    def verify(self, public_key: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`make verify-release`, as the docs tell users to check a release."""
        key = public_key or self.public_key
        return make("verify-release", f"REGISTRY={self.prefix}", f"COSIGN_PUB={key}", check=False)


def make(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=1200,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"make {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def tool(name: str) -> Path:
    """A release tool (built by `make release-tools` before the tests); skips loudly when
    this machine cannot have it."""
    try:
        return find(name)
    except Unavailable as exc:
        pytest.skip(f"RELEASE TOOL NOT AVAILABLE, release test skipped: {exc}")


@pytest.fixture(scope="module")
def released(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    """`make release` into a fresh local registry, signed with a key made for the test."""
    workdir = tmp_path_factory.mktemp("registry")
    registry = LocalRegistry(tool("docker-registry"), workdir)
    try:
        subprocess.run(
            [str(tool("cosign")), "generate-key-pair"],
            cwd=workdir, env={**os.environ, "COSIGN_PASSWORD": ""},
            capture_output=True, check=True,
        )  # fmt: skip
        done = make(
            "release", f"REGISTRY={registry.host}/{PATH}", f"COSIGN_KEY={workdir / 'cosign.key'}",
            f"DIST={workdir / 'dist'}", COSIGN_PASSWORD="",
        )  # fmt: skip
        summary = json.loads((workdir / "dist" / "release.json").read_text())
        assert summary["imageDigest"] in done.stdout
        yield Released(registry, summary, workdir / "cosign.pub", workdir / "dist")
    finally:
        registry.stop()


def test_the_release_pushes_the_image_and_chart_at_the_package_version(released: Released) -> None:
    version = project((ROOT / "pyproject.toml").read_text()).version
    assert released.version == version
    registry = released.registry
    _, digest = registry.manifest(IMAGE_REPOSITORY, version)
    assert digest == released.summary["imageDigest"]
    chart, chart_digest = registry.manifest(CHART_REPOSITORY, version)
    assert chart_digest == released.summary["chartDigest"]
    # the registry links the chart to its source (ghcr.io: to the repository's packages)
    annotations = json.loads(chart)["annotations"]
    assert annotations["org.opencontainers.image.source"].startswith("https://github.com/")


def test_the_image_carries_the_oci_labels_of_its_commit(released: Released) -> None:
    labels = released.registry.image_config(IMAGE_REPOSITORY, released.version)["config"]["Labels"]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "show", "-s", "--format=%H %cI"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    oci = {k.removeprefix("org.opencontainers.image."): v for k, v in labels.items()}
    assert oci["version"] == released.version
    assert oci["revision"].removesuffix("-dirty") == commit[0]
    assert oci["created"] == commit_time(commit[1])  # the commit's time, not the build's
    assert oci["licenses"] == "Apache-2.0"
    assert oci["source"].startswith("https://github.com/")


def test_the_signatures_of_the_image_chart_and_sbom_verify(released: Released) -> None:
    done = released.verify()
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_released_version_is_not_overwritten(released: Released, tmp_path: Path) -> None:
    done = make(
        "release", f"REGISTRY={released.prefix}", f"DIST={tmp_path}",
        f"COSIGN_KEY={released.public_key.with_name('cosign.key')}",
        COSIGN_PASSWORD="", check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"thingspace-operator:{released.version} exists" in done.stderr
    _, digest = released.registry.manifest(IMAGE_REPOSITORY, released.version)
    assert digest == released.summary["imageDigest"]


def test_a_signature_by_another_key_does_not_verify(released: Released, tmp_path: Path) -> None:
    subprocess.run(
        [str(tool("cosign")), "generate-key-pair"],
        cwd=tmp_path, env={**os.environ, "COSIGN_PASSWORD": ""},
        capture_output=True, check=True,
    )  # fmt: skip
    done = released.verify(tmp_path / "cosign.pub")
    assert done.returncode != 0
    assert "failed to verify signature" in done.stderr


def test_a_tag_re_pointed_to_an_unsigned_image_fails_verification(released: Released) -> None:
    """Someone with push rights moves the tag to their own image: cosign refuses it."""
    registry, version = released.registry, released.version
    original, _ = registry.manifest(IMAGE_REPOSITORY, version)
    manifest = json.loads(original)
    config = registry.image_config(IMAGE_REPOSITORY, version)
    config["config"]["Labels"]["tampered"] = "yes"
    config_bytes = json.dumps(config).encode()
    manifest["config"]["digest"] = registry.put_blob(IMAGE_REPOSITORY, config_bytes)
    manifest["config"]["size"] = len(config_bytes)
    registry.put_manifest(IMAGE_REPOSITORY, version, json.dumps(manifest).encode())
    try:
        done = released.verify()
        assert done.returncode != 0
        assert "no signatures found" in done.stderr
    finally:
        registry.put_manifest(IMAGE_REPOSITORY, version, original)
    assert released.verify().returncode == 0  # the original is signed still


def locked_runtime_packages() -> dict[str, str]:
    """name -> version of what `uv sync --locked --no-dev` installs in the image."""
    exported = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "uv"), "export", "--locked", "--no-dev", "--no-hashes",
         "--no-emit-project", "--format", "requirements-txt"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    packages = {}
    for line in exported.splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)(?:\s*;\s*(.*))?$", line.strip())
        if found is None:
            continue
        name, version, marker = found.groups()
        if marker and not Marker(marker).evaluate(image_python()):
            continue
        packages[normalise(name)] = version
    return packages


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_sbom_lists_the_locked_python_dependencies(released: Released) -> None:
    """From the registry, as a user gets it: the attestation's SPDX document."""
    done = subprocess.run(
        [
            str(tool("cosign")), "verify-attestation", "--key", str(released.public_key),
            "--insecure-ignore-tlog=true", "--allow-http-registry", "--type", "spdxjson",
            f"{released.prefix}/thingspace-operator:{released.version}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    statement = json.loads(base64.b64decode(json.loads(done.stdout.splitlines()[0])["payload"]))
    packages = statement["predicate"]["packages"]
    python = {
        normalise(p["name"]): p.get("versionInfo")
        for p in packages
        if any("pkg:pypi/" in ref.get("referenceLocator", "") for ref in p.get("externalRefs", []))
    }
    locked = locked_runtime_packages()
    assert {"kopf", "kubernetes", "aiohttp"} <= locked.keys()
    missing = {name: v for name, v in locked.items() if python.get(name) != v}
    assert not missing, f"locked but not in the SBOM at that version: {missing}"
    assert python.get("thingspace-operator") == released.version
    # small enough for a keyless attestation: packages, not every file of the image
    assert (released.dist / released.summary["sbom"]).stat().st_size < SBOM_LIMIT


def test_the_chart_installs_from_the_registry_and_its_pods_pull_the_image(
    released: Released, node: Node
) -> None:
    """Only the image's registry changed in values; pull policy the chart's default."""
    node.pull_over_plain_http(released.registry.host)
    image = f"{released.prefix}/thingspace-operator"
    assert image not in " ".join(node.image_references())  # nothing imported: it must pull
    chart = f"oci://{released.prefix}/charts/thingspace-operator"
    installed = install(
        node, "--version", released.version, "--plain-http",
        chart=chart, image_values=("--set", f"image.repository={image}"),
    )  # fmt: skip
    try:
        deployment = installed.release.deployment()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{image}:{released.version}"
        assert container["imagePullPolicy"] == "IfNotPresent"
        pods = installed.operator_pods()
        assert pods
        for pod in pods:
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"]
                # what containerd pulled: the digest the release pushed
                assert status["imageID"].endswith(released.summary["imageDigest"])
    finally:
        installed.close()
        installed.release.uninstall()
        node.kubectl("delete", "namespace", installed.namespace, "--wait=false", check=False)
