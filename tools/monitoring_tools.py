#!/usr/bin/env python3
"""The monitoring tests' tools, fetched once and cached outside the checkout.

- ``prometheus`` and ``promtool`` from Debian's ``prometheus`` package: ``apt-get download``
  (no root, nothing installed, no service started), unpacked into the cache;
- the Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule, ...) from the Go module
  ``github.com/prometheus-operator/prometheus-operator``, which carries its published CRD
  manifests under ``example/prometheus-operator-crd``.

``python tools/monitoring_tools.py`` fetches both and prints where they are; a tool that
cannot be had is reported, and the tests that need it skip with a banner naming it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thingspace-operator"
PROMETHEUS_PACKAGE = "prometheus"
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
# The newest version the Go module proxy serves (later ones answer 403 here).
OPERATOR_VERSION = "v0.85.0"
CRD_DIR = "example/prometheus-operator-crd"


class Unavailable(Exception):
    """The tool cannot be had on this machine; the message says why."""


def prometheus_bin() -> Path:
    """The directory holding ``prometheus`` and ``promtool``."""
    return debian_binaries(PROMETHEUS_PACKAGE, ("prometheus", "promtool"))


def debian_binaries(package: str, tools: tuple[str, ...]) -> Path:
    """A directory holding ``tools`` from /usr/bin of Debian's ``package`` (the candidate
    version), downloaded and unpacked once: no root, nothing installed, no service started."""
    version = _candidate_version(package)
    target = CACHE / package / version.replace(":", "_")
    if all((target / tool).exists() for tool in tools):
        return target
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        os.chmod(work, 0o755)  # noqa: S103 (apt's download user must be able to write there)
        _run(["apt-get", "download", f"{package}={version}"], cwd=work)
        (deb,) = work.glob("*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(work / "root")])
        target.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            shutil.copy2(work / "root" / "usr" / "bin" / tool, target / tool)
    return target


def operator_crds() -> Path:
    """The directory of the Prometheus Operator's CRD manifests."""
    if shutil.which("go") is None:
        raise Unavailable("Go is not installed (the CRDs come from the Go module proxy)")
    done = _run(["go", "mod", "download", "-json", f"{OPERATOR_MODULE}@{OPERATOR_VERSION}"])
    found = json.loads(done.stdout)
    if found.get("Error"):
        raise Unavailable(f"{OPERATOR_MODULE}@{OPERATOR_VERSION}: {found['Error']}")
    crds = Path(found["Dir"]) / CRD_DIR
    if not crds.is_dir():
        raise Unavailable(f"{OPERATOR_MODULE}@{OPERATOR_VERSION} has no {CRD_DIR}")
    return crds


def _candidate_version(package: str, refreshed: bool = False) -> str:
    if shutil.which("apt-cache") is None:
        raise Unavailable(f"no apt-cache: Debian's {package} package cannot be fetched")
    policy = _run(["apt-cache", "policy", package]).stdout
    for line in policy.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    if os.geteuid() == 0 and not refreshed:  # a fresh machine may have no package lists
        _run(["apt-get", "update", "-qq"])
        return _candidate_version(package, refreshed=True)
    raise Unavailable(f"apt knows no {package} package (apt-get update?)")


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise Unavailable(f"{' '.join(command[:3])} failed: {done.stderr.strip()[-300:]}")
    return done


def main() -> int:
    for name, fetch in (("prometheus, promtool", prometheus_bin), ("CRDs", operator_crds)):
        try:
            print(f"{name}: {fetch()}")
        except Unavailable as exc:
            print(f"{name}: not available: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
