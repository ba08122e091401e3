#!/usr/bin/env python3
"""Cut a release into an OCI registry, as `make release` does:

1. the operator image, built from the Dockerfile with podman and the OCI labels (version,
   revision, source, licenses; created is the commit's time, so two builds of one commit
   label alike), pushed as REGISTRY/thingspace-operator:VERSION;
2. its SBOM (syft, SPDX JSON) of the image as pushed, attached to it as a signed attestation;
3. the chart, packaged with the same version and appVersion, pushed as the OCI artifact
   REGISTRY/charts/thingspace-operator:VERSION;
4. cosign signatures on the image and the chart, by digest: with a key file, or keyless
   (Sigstore's OIDC flow, for the hosted release workflow).

    python3 tools/release.py publish --registry HOST[:PORT]/PATH [--version V] [--force]
                                     [--dist DIR] (--key cosign.key | --keyless | --unsigned)
    python3 tools/release.py verify --registry HOST[:PORT]/PATH [--version V]
                                    (--key cosign.pub | --identity URI [--issuer URL])

VERSION defaults to pyproject.toml's version, and may only add a pre-release or build
suffix to it (0.2.0-rc.1 of 0.2.0): the package inside says the same. A version already in
the registry is not overwritten without --force. Registries on the loopback address are
spoken to over plain HTTP, as Docker treats them, and only there may the image be built on
the stand-in base where the Dockerfile's cannot be pulled; log in to any other beforehand
(podman login, helm registry login; cosign and syft read the same credentials). A key
file's password comes from COSIGN_PASSWORD; the key is opened before anything is built.
What was pushed is written to dist/release.json and printed.
"""

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_image
from release_tools import go_tool

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "thingspace-operator"
DIST = ROOT / "dist"
IMAGE_NAME = "thingspace-operator"
CHART_PATH = "charts"  # under the registry path: REGISTRY/charts/thingspace-operator
#: semver 2, as helm requires of a chart version
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
#: cosign's flags for a registry on the loopback address (plain HTTP)
HTTP_REGISTRY = ("--allow-http-registry", "--allow-insecure-registry")
#: An SBOM of packages, without every file of the image: a keyless attestation goes whole
#: into Rekor, which refuses entries of a few MB (the files alone made it 5 MB).
SYFT_ENV = {
    "SYFT_FILE_METADATA_SELECTION": "none",
    "SYFT_RELATIONSHIPS_PACKAGE_FILE_OWNERSHIP": "false",
    "SYFT_CHECK_FOR_APP_UPDATE": "false",
}


def log(message: str) -> None:
    print(f"release: {message}", file=sys.stderr, flush=True)


def run(*command: str, env: dict[str, str] | None = None) -> str:
    """Run a command, its progress on stderr; its stdout is returned."""
    log(" ".join(command[:3]) + (" ..." if len(command) > 3 else ""))
    done = subprocess.run(  # noqa: S603
        command, stdout=subprocess.PIPE, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        # Arguments carry references and paths, never a secret (those come in env).
        raise SystemExit(f"release: failed (exit {done.returncode}): {' '.join(command)}")
    return done.stdout


# --- what is released: pure -----------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    version: str
    licenses: str
    source: str
    description: str


@dataclass(frozen=True)
class Commit:
    revision: str  # the commit id, "-dirty" appended when the tree has uncommitted changes
    created: str  # the commit's time, RFC 3339 in UTC


def project(pyproject: str) -> Project:
    table = tomllib.loads(pyproject)["project"]
    return Project(
        version=table["version"],
        licenses=table["license"]["text"],
        source=table["urls"]["Source"],
        description=table["description"],
    )


def release_version(requested: str | None, package: str) -> str:
    """The version to release: the package's, or a pre-release or build of it."""
    version = requested or package
    if not SEMVER.match(version):
        raise SystemExit(f"release: version {version!r} is not semver (MAJOR.MINOR.PATCH[-PRE])")
    if version != package and not version.startswith((f"{package}-", f"{package}+")):
        raise SystemExit(
            f"release: version {version} is not pyproject.toml's {package} (nor a pre-release "
            f"of it); set it first: make version VERSION=..."
        )
    return version


def commit_time(iso: str) -> str:
    """git's strict ISO 8601 time (any offset) as RFC 3339 in UTC, as the OCI spec asks."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def oci_labels(project: Project, commit: Commit, version: str, base: str) -> dict[str, str]:
    prefix = "org.opencontainers.image"
    return {
        f"{prefix}.base.name": base,
        f"{prefix}.title": IMAGE_NAME,
        f"{prefix}.description": project.description,
        f"{prefix}.version": version,
        f"{prefix}.revision": commit.revision,
        f"{prefix}.created": commit.created,
        f"{prefix}.source": project.source,
        f"{prefix}.url": project.source,
        f"{prefix}.licenses": project.licenses,
    }


def plain_http(registry: str) -> bool:
    """A registry on the loopback address speaks plain HTTP (Docker's rule too)."""
    host = registry.split("/", 1)[0]
    if host.startswith("["):  # [IPv6]:port
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:  # host:port
        host = host.split(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    registry: str
    version: str

    @property
    def image(self) -> str:
        return f"{self.registry}/{IMAGE_NAME}"

    @property
    def chart_repository(self) -> str:
        return f"{self.registry}/{CHART_PATH}"

    @property
    def chart(self) -> str:
        return f"{self.chart_repository}/{IMAGE_NAME}"


def pushed_digest(helm_output: str) -> str:
    found = re.search(r"^Digest:\s*(sha256:[0-9a-f]{64})\s*$", helm_output, re.MULTILINE)
    if found is None:
        raise SystemExit(f"release: no digest in helm push's output:\n{helm_output}")
    return found.group(1)


# --- signing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """cosign flags: with a key file, offline (a signing config naming no transparency log
    nor timestamp service), or keyless (Fulcio and Rekor, with the CI's OIDC identity)."""

    flags: tuple[str, ...]

    @classmethod
    def with_key(cls, key: Path, offline_config: Path, insecure_registry: bool) -> "Signer":
        registry = HTTP_REGISTRY if insecure_registry else ()
        return cls(("--yes", "--key", str(key), "--signing-config", str(offline_config), *registry))

    @classmethod
    def keyless(cls, insecure_registry: bool) -> "Signer":
        return cls(("--yes", *(HTTP_REGISTRY if insecure_registry else ())))

    def sign(self, reference: str) -> None:
        run(str(go_tool("cosign")), "sign", *self.flags, reference)

    def attest_sbom(self, reference: str, sbom: Path) -> None:
        run(
            str(go_tool("cosign")), "attest", *self.flags, "--type", "spdxjson",
            "--predicate", str(sbom), reference,
        )  # fmt: skip


def offline_signing_config(dist: Path) -> Path:
    """Key-file signatures live in the registry only: no Sigstore service is contacted."""
    path = dist / "offline-signing-config.json"
    run(str(go_tool("cosign")), "signing-config", "create", "--out", str(path))
    return path


# --- the steps -----------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), *args],  # noqa: S607
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def head_commit() -> Commit:
    revision = git("rev-parse", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        log("warning: the working tree has uncommitted changes; revision labelled -dirty")
        revision += "-dirty"
    return Commit(revision=revision, created=commit_time(git("show", "-s", "--format=%cI")))


def release_base(insecure: bool) -> str:
    """The Dockerfile's base image; only a dry run into a local registry may fall back to
    the stand-in built from Debian packages when that cannot be pulled."""
    if insecure:
        return build_image.ensure_base(None, stand_in=False)
    official = build_image.default_base((ROOT / "Dockerfile").read_text())
    try:
        return build_image.ensure_base(official, stand_in=False)  # pulls, or fails
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"release: cannot pull the Dockerfile's base {official}, which a release is built "
            "on (only a dry run into a loopback registry may use the stand-in)"
        ) from exc


def build_and_push_image(
    target: Target, meta: Project, commit: Commit, insecure: bool, dist: Path
) -> str:
    """The pushed image's digest."""
    reference = f"{target.image}:{target.version}"
    extra_ca = build_image.HOST_CA if build_image.HOST_CA.is_file() else None
    digest_file = dist / "image.digest"
    with build_image.exclusive():
        base = release_base(insecure)
        labels = oci_labels(meta, commit, target.version, base)
        label_args = [f"{key}={value}" for key, value in labels.items()]
        image = build_image.build(base, [reference], extra_ca, labels=label_args)
        run(
            "podman", "push", f"--tls-verify={str(not insecure).lower()}", "--format", "oci",
            "--digestfile", str(digest_file), image, f"docker://{reference}",
        )  # fmt: skip
    return digest_file.read_text().strip()


def sbom(target: Target, digest: str, insecure: bool, dist: Path) -> Path:
    """The pushed image's SBOM, SPDX JSON."""
    path = dist / f"{IMAGE_NAME}-{target.version}.spdx.json"
    run(
        str(go_tool("syft")), "scan", f"registry:{target.image}@{digest}",
        "--source-name", IMAGE_NAME, "--source-version", target.version,
        "--output", f"spdx-json={path}", "--quiet",
        env={**SYFT_ENV, "SYFT_REGISTRY_INSECURE_USE_HTTP": str(insecure).lower()},
    )  # fmt: skip
    return path


def helm_plain_http(insecure: bool) -> list[str]:
    return ["--plain-http"] if insecure else []


def already_released(target: Target, helm: str, insecure: bool) -> bool:
    """The chart of this version is in the registry: pushed last, it marks a release."""
    shown = subprocess.run(  # noqa: S603
        [helm, "show", "chart", f"oci://{target.chart}", "--version", target.version,
         *helm_plain_http(insecure)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return shown.returncode == 0


def package_and_push_chart(target: Target, helm: str, insecure: bool, dist: Path) -> str:
    """The pushed chart's digest."""
    run(
        helm, "package", str(CHART), "--version", target.version,
        "--app-version", target.version, "--destination", str(dist),
    )  # fmt: skip
    package = dist / f"{IMAGE_NAME}-{target.version}.tgz"
    done = subprocess.run(  # noqa: S603
        [helm, "push", str(package), f"oci://{target.chart_repository}",
         *helm_plain_http(insecure)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"release: helm push failed: {done.stderr.strip()}")
    return pushed_digest(done.stdout + done.stderr)


def signer_for(args: argparse.Namespace, insecure: bool) -> Signer | None:
    """The signer, its inputs checked before anything is built or pushed: a wrong key path
    or password found after the push would leave an unsigned release behind."""
    if args.unsigned:
        return None
    if args.keyless:
        return Signer.keyless(insecure)
    if not args.key.is_file():
        raise SystemExit(f"release: no cosign key at {args.key}")
    if "COSIGN_PASSWORD" not in os.environ:
        raise SystemExit("release: set COSIGN_PASSWORD (empty for a key without one)")
    run(str(go_tool("cosign")), "public-key", "--key", str(args.key))  # opens the key
    return Signer.with_key(args.key, offline_signing_config(args.dist), insecure)


def publish(args: argparse.Namespace) -> None:
    meta = project((ROOT / "pyproject.toml").read_text())
    version = release_version(args.version, meta.version)
    target, insecure = Target(args.registry, version), plain_http(args.registry)
    args.dist.mkdir(parents=True, exist_ok=True)
    signer = signer_for(args, insecure)
    if not args.force and already_released(target, args.helm, insecure):
        raise SystemExit(f"release: {target.chart}:{version} exists; --force (FORCE=1) replaces it")

    commit = head_commit()
    image_digest = build_and_push_image(target, meta, commit, insecure, args.dist)
    sbom_path = sbom(target, image_digest, insecure, args.dist)
    chart_digest = package_and_push_chart(target, args.helm, insecure, args.dist)
    if signer is not None:
        signer.sign(f"{target.image}@{image_digest}")
        signer.attest_sbom(f"{target.image}@{image_digest}", sbom_path)
        signer.sign(f"{target.chart}@{chart_digest}")

    summary = {
        **asdict(commit),
        "version": version,
        "image": f"{target.image}:{version}",
        "imageDigest": image_digest,
        "chart": f"oci://{target.chart}",
        "chartDigest": chart_digest,
        "sbom": sbom_path.name,
        "signed": "no" if signer is None else "keyless" if args.keyless else "key",
    }
    (args.dist / "release.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def verification_flags(args: argparse.Namespace) -> list[str]:
    """Whose signature counts: the public key's, or the keyless identity's."""
    if args.key is not None:
        return ["--key", str(args.key), "--insecure-ignore-tlog=true"]
    return [
        "--certificate-identity", args.identity,
        "--certificate-oidc-issuer", args.issuer,
    ]  # fmt: skip


def verify(args: argparse.Namespace) -> None:
    """cosign verify the image and the chart of a version, and the image's SBOM attestation;
    exits non-zero when any is missing or signed by someone else."""
    meta = project((ROOT / "pyproject.toml").read_text())
    target = Target(args.registry, args.version or meta.version)
    flags = verification_flags(args) + list(HTTP_REGISTRY if plain_http(args.registry) else ())
    cosign = str(go_tool("cosign"))
    run(cosign, "verify", *flags, f"{target.image}:{target.version}")
    run(cosign, "verify", *flags, f"{target.chart}:{target.version}")
    run(
        cosign,
        "verify-attestation",
        *flags,
        "--type",
        "spdxjson",
        f"{target.image}:{target.version}",
    )
    log(f"verified: {target.image}:{target.version}, its SBOM and {target.chart}:{target.version}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    publish_parser = commands.add_parser("publish", help="build, push and sign a release")
    verify_parser = commands.add_parser("verify", help="check a release's signatures")
    for each in (publish_parser, verify_parser):
        each.add_argument(
            "--registry",
            required=True,
            type=lambda r: r.rstrip("/"),
            help="HOST[:PORT]/PATH, e.g. ghcr.io/thingspace-operator",
        )
        each.add_argument("--version", help="default: pyproject.toml's version")
    publish_parser.add_argument("--helm", default=str(ROOT / ".tools" / "helm"))
    publish_parser.add_argument("--dist", type=Path, default=DIST, help="default: dist/")
    publish_parser.add_argument("--force", action="store_true", help="replace a version")
    signing = publish_parser.add_mutually_exclusive_group(required=True)
    signing.add_argument("--key", type=Path, help="a cosign private key file")
    signing.add_argument("--keyless", action="store_true", help="Sigstore keyless (OIDC)")
    signing.add_argument("--unsigned", action="store_true", help="no signatures, no attestation")
    signer = verify_parser.add_mutually_exclusive_group(required=True)
    signer.add_argument("--key", type=Path, help="the cosign public key")
    signer.add_argument("--identity", help="keyless: the signing workflow's identity")
    verify_parser.add_argument("--issuer", default="https://token.actions.githubusercontent.com")

    args = parser.parse_args(argv)
    (publish if args.command == "publish" else verify)(args)


if __name__ == "__main__":
    main()
