#!/usr/bin/env python3
"""The release's tools, built or fetched once and cached outside the checkout.

- ``cosign`` (signing), ``syft`` (the SBOM) and ``actionlint`` (the workflows), each built
  with ``go install`` from a pinned module version of the Go module proxy;
- ``docker-registry`` from Debian's package of the same name (``apt-get download``: no root,
  nothing installed, no service started), the local registry the release test pushes to.

``python tools/release_tools.py [NAME...]`` prints where each is; one that cannot be had is
reported with the module and version that failed, and what needs it says so (the release
test skips with a banner naming it).
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitoring_tools import CACHE, Unavailable, debian_binaries


@dataclass(frozen=True)
class GoTool:
    package: str  # what go install builds
    version: str
    #: The Go release to build with when the module needs a newer one than the machine's
    #: (the go command takes it from the module proxy); "auto": the one the module names.
    toolchain: str = "auto"

    @property
    def name(self) -> str:
        return self.package.rsplit("/", 1)[-1]


GO_TOOLS = {
    tool.name: tool
    for tool in (
        # cosign 3 requires Go 1.27: the proxy serves 1.27.3 here.
        GoTool("github.com/sigstore/cosign/v3/cmd/cosign", "v3.1.4", toolchain="go1.27.3"),
        GoTool("github.com/anchore/syft/cmd/syft", "v1.57.2"),
        GoTool("github.com/rhysd/actionlint/cmd/actionlint", "v1.7.12"),
    )
}
REGISTRY_PACKAGE = "docker-registry"


def go_tool(name: str) -> Path:
    """The path of a Go tool's binary, built on first use (cold: up to a few minutes)."""
    tool = GO_TOOLS[name]
    target = CACHE / "release-tools" / f"{tool.name}-{tool.version}"
    binary = target / tool.name
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise Unavailable(f"{tool.name}: Go is not installed (it is built from the module proxy)")
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    env = {**os.environ, "GOBIN": str(scratch), "CGO_ENABLED": "0", "GOTOOLCHAIN": tool.toolchain}
    print(f"release_tools: building {tool.package}@{tool.version}", file=sys.stderr, flush=True)
    done = subprocess.run(  # noqa: S603
        ["go", "install", "-trimpath", "-ldflags=-s -w", f"{tool.package}@{tool.version}"],  # noqa: S607
        env=env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(
            f"go install {tool.package}@{tool.version} failed: {done.stderr.strip()[-400:]}"
        )
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return binary


def registry_binary() -> Path:
    """Debian's docker-registry (the CNCF distribution registry, version 2)."""
    return debian_binaries(REGISTRY_PACKAGE, ("docker-registry",)) / "docker-registry"


def find(name: str) -> Path:
    return registry_binary() if name == REGISTRY_PACKAGE else go_tool(name)


def main(names: list[str]) -> int:
    failed = 0
    for name in names or [*GO_TOOLS, REGISTRY_PACKAGE]:
        try:
            print(f"{name}: {find(name)}")
        except Unavailable as exc:
            print(f"{name}: not available: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed and names else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
