#!/usr/bin/env python3
"""Build the operator image from the Dockerfile with podman, as users build it, and write an
archive for `ctr -n k8s.io images import`; its path is the last line of stdout.

    python3 tools/build_image.py [--tag REF]... [--label K=V]... [--base IMAGE] [--stand-in]
                                 [--check]

The Dockerfile's default base (the official Python image) comes from Docker Hub. Where that
cannot be pulled, a stand-in base with the same layout is built once from Debian packages
(mmdebstrap: python3 at /usr/local/bin/python, no user for uid 10001). Both the base and the
operator image are cached, keyed by their inputs, so a warm run takes seconds. Progress goes
to stderr. Needs root (podman, mmdebstrap); installs them with apt-get when missing.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TAG = "localhost/thingspace-operator:dev"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
IMAGES = CACHE / "thingspace-operator" / "images"
#: Bump when the way either image is built changes, to invalidate the caches.
VERSION = "1"
#: What the Dockerfile's context holds (see .dockerignore); the operator image's inputs.
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"  # the official python:3.11-slim-bookworm's Debian release
# podman's default limits (nofile 1048576) exceed the hard limits of these hosts: runc fails.
ULIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096"]
# crun is not installed with Debian's podman everywhere, and runc works on cgroup v1 hosts.
PODMAN = ["podman", "--runtime", "runc"]
# podman's bridge network (netavark, iptables) fails while the node layer's nftables rules
# are in place ("Chain already exists"); RUN steps only download, the host network does.
BUILD_NETWORK = ["--network", "host"]
PULL_TIMEOUT = 15  # seconds: where Docker Hub is unreachable, pulling fails or hangs


def log(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


def run(*command: str, timeout: float | None = None) -> None:
    """Run a command with its output on stderr (stdout carries only the archive path)."""
    subprocess.run(command, check=True, stdout=sys.stderr, timeout=timeout)  # noqa: S603


def output(*command: str) -> str:
    done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
    return done.stdout.strip()


def succeeds(*command: str) -> bool:
    done = subprocess.run(command, capture_output=True, check=False)  # noqa: S603
    return done.returncode == 0


def ensure_installed(*programs: str) -> None:
    """apt-get install what is missing: CI machines start clean (the package is the name)."""
    missing = [program for program in programs if shutil.which(program) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"build_image: {', '.join(missing)} missing; install as root")
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        subprocess.run(command, check=True, stdout=sys.stderr, env=env)  # noqa: S603


def digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def image_id(reference: str) -> str | None:
    if not succeeds("podman", "image", "exists", reference):
        return None
    return output("podman", "image", "inspect", "--format", "{{.Id}}", reference)


# --- the base image ------------------------------------------------------------------------


def default_base(dockerfile: str) -> str:
    """ARG PYTHON_IMAGE's default, fully qualified (podman refuses ambiguous short names)."""
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    if match is None:
        raise SystemExit("build_image: no ARG PYTHON_IMAGE=... in the Dockerfile")
    name = match.group(1)
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[str]:
    """The host's Debian SUITE entries as one-line sources: the stand-in uses its mirror.

    Other repositories (vendor ones) are left out: their keys are not in the stand-in."""
    entries: list[tuple[str, str, str]] = []
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in filter(Path.is_file, one_line):
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 4 and words[0] == "deb":
                entries.append((words[1], words[2], " ".join(words[3:])))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ", "\t")):
                    fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("components", "main")))
    wanted = [e for e in entries if e[1] == SUITE or e[1].startswith(f"{SUITE}-")]
    return [f"deb {uri} {suite} {components}" for uri, suite, components in wanted]


def host_apt_options(etc_apt: Path = Path("/etc/apt")) -> list[str]:
    """The host's one-line Acquire:: settings (proxy, Check-Valid-Until for snapshots)."""
    files = [etc_apt / "apt.conf", *sorted((etc_apt / "apt.conf.d").glob("*"))]
    return [
        line.strip()
        for path in files
        if path.is_file()
        for line in path.read_text(errors="replace").splitlines()
        if line.strip().startswith("Acquire::")
    ]


def stand_in_base() -> str:
    """Debian's python3 laid out like the official image, built once and imported."""
    ensure_installed("mmdebstrap")
    command = [
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,python3-pip,python3-venv,ca-certificates",
        # Like debian:*-slim, under the official image: no docs, manual pages, locales.
        *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")),
        *(f"--aptopt={option}" for option in host_apt_options()),
        # The official image's interpreter is /usr/local/bin/python: venvs link to it.
        '--customize-hook=ln -sf /usr/bin/python3 "$1/usr/local/bin/python"',
        # The host's apt options (maybe a proxy) were for building only.
        '--customize-hook=rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"',
        SUITE,
    ]
    sources = host_sources()
    key = digest(VERSION.encode(), json.dumps([command, sources]).encode())
    reference = f"localhost/thingspace-operator-base:{key}"
    if image_id(reference):
        return reference
    tarball = IMAGES / f"base-{key}.tar"
    if not tarball.exists():
        log(f"building the stand-in base with mmdebstrap ({SUITE}; about a minute)")
        partial = tarball.with_suffix(".partial.tar")
        partial.unlink(missing_ok=True)
        run(*command, str(partial), *sources)
        partial.replace(tarball)
    run(
        "podman", "import",
        "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV LANG=C.UTF-8",
        # Debian marks its python3 externally managed; the Dockerfile pip-installs uv.
        "--change", "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        "--change", 'CMD ["python3"]',
        str(tarball), reference,
    )  # fmt: skip
    return reference


def ensure_base(requested: str | None, stand_in: bool) -> str:
    """The requested base, else the Dockerfile's default if it can be had, else the stand-in."""
    if requested:
        if image_id(requested) is None:
            run("podman", "pull", requested)
        return requested
    official = default_base((ROOT / "Dockerfile").read_text())
    if not stand_in:
        if image_id(official):
            return official
        try:
            pulled = subprocess.run(  # noqa: S603
                ["podman", "pull", "--quiet", official],  # noqa: S607
                capture_output=True, text=True, timeout=PULL_TIMEOUT, check=False,
            )  # fmt: skip
            if pulled.returncode == 0:
                return official
            why = (pulled.stderr.strip().splitlines() or ["?"])[-1]
        except subprocess.TimeoutExpired:
            why = f"no answer in {PULL_TIMEOUT} s"
        log(f"note: cannot pull {official} ({why}); using a stand-in base from Debian packages")
    return stand_in_base()


# --- the operator image --------------------------------------------------------------------


def context_files(root: Path = ROOT) -> Iterator[Path]:
    """The files the build context sends (.dockerignore: no bytecode, no egg-info)."""
    yield from (root / name for name in CONTEXT)
    for directory, subdirectories, files in os.walk(root / "operator"):
        subdirectories[:] = sorted(
            d for d in subdirectories if d != "__pycache__" and not d.endswith(".egg-info")
        )
        yield from (Path(directory) / f for f in sorted(files) if not f.endswith(".pyc"))


def inputs_key(base_id: str, root: Path = ROOT, labels: Sequence[str] = ()) -> str:
    parts = [VERSION.encode(), base_id.encode(), *(label.encode() for label in labels)]
    for path in context_files(root):
        parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return digest(*parts)


def build(
    base: str,
    tags: Sequence[str],
    extra_ca: Path | None,
    fresh: bool = False,
    labels: Sequence[str] = (),
) -> str:
    """The operator image's id: podman build, unless the same inputs were built already."""
    base_id = image_id(base)
    assert base_id is not None
    record = IMAGES / f"operator-{inputs_key(base_id, labels=labels)}.id"
    cached = record.read_text().strip() if record.exists() else None
    if cached and not fresh and image_id(cached):
        log(f"reusing image {cached[:12]} (same inputs)")
        record.touch()  # recently used: kept by prune()
        run("podman", "tag", cached, *tags)
        return cached
    log(f"podman build on {base}")
    secret = ["--secret", f"id=extra_ca,src={extra_ca}"] if extra_ca else []
    tag_flags = [flag for tag in tags for flag in ("--tag", tag)]
    label_flags = [flag for label in labels for flag in ("--label", label)]
    run(
        *PODMAN, "build", *ULIMITS, *BUILD_NETWORK, "--pull=never", *(["--no-cache"] * fresh),
        "--build-arg", f"PYTHON_IMAGE={base}", *secret, *tag_flags, *label_flags,
        "--file", str(ROOT / "Dockerfile"), str(ROOT),
    )  # fmt: skip
    built = image_id(tags[0])
    assert built is not None
    record.write_text(built + "\n")
    return built


def save(image: str, tags: Sequence[str]) -> Path:
    """A docker-archive: unlike podman's oci-archive, it keeps every tag for ctr import."""
    archive = IMAGES / f"operator-{digest(image.encode(), *map(str.encode, tags))}.tar"
    if not archive.exists():
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        run("podman", "save", "--quiet", "--format", "docker-archive", "-o", str(partial), *tags)
        partial.replace(archive)
    archive.touch()
    prune()
    return archive


def prune(keep: int = 3) -> None:
    """Drop all but the newest few operator images and archives (each is ~300 MB)."""
    for pattern in ("operator-*.id", "operator-*.tar"):
        old = sorted(IMAGES.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]
        for path in old:
            if path.suffix == ".id":
                # Still tagged (in use) or shared: podman refuses without --force; fine.
                succeeds("podman", "rmi", path.read_text().strip())
            path.unlink(missing_ok=True)


def check(image: str) -> None:
    """Run the entry points as the cluster does: read-only root, uid 10001, no network."""
    user = output("podman", "image", "inspect", "--format", "{{.Config.User}}", image)
    if user != "10001:10001":
        raise SystemExit(f"build_image: image USER is {user!r}, not 10001:10001")
    for program in ("thingspace-operator", "thingspace-sim"):
        run(
            *PODMAN, "run", "--rm", *ULIMITS, "--read-only", "--user", "10001:10001",
            "--network", "none", "--entrypoint", program, image, "--help",
        )  # fmt: skip
    log("check passed (note: podman adds a passwd entry for uid 10001; containerd does not)")


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """podman and the image cache to this process: make, the test layers and a release
    may build together."""
    ensure_installed("podman", "runc")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with (IMAGES / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", action="append", help=f"repeatable (default {DEFAULT_TAG})")
    parser.add_argument("--base", help="base image (default: the Dockerfile's, or a stand-in)")
    parser.add_argument("--stand-in", action="store_true", help="skip trying the default base")
    parser.add_argument(
        "--extra-ca", default=str(HOST_CA), help="CA bundle to trust while building ('' none)"
    )
    parser.add_argument("--check", action="store_true", help="run the image's entry points")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE, repeatable")
    args = parser.parse_args(argv)
    tags: list[str] = args.tag or [DEFAULT_TAG]
    extra_ca = Path(args.extra_ca) if args.extra_ca and Path(args.extra_ca).is_file() else None

    with exclusive():
        base = ensure_base(args.base, args.stand_in)
        image = build(base, tags, extra_ca, args.no_cache, args.label)
        archive = save(image, tags)
        if args.check:
            check(image)
    print(archive)


if __name__ == "__main__":
    main()
