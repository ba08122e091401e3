"""A local OCI registry for the release tests: Debian's docker-registry (the CNCF
distribution registry) on 127.0.0.1 over plain HTTP, its storage in a temporary directory,
and the few registry API calls the tests make themselves (what a tag points to, a tag
re-pointed by someone else)."""

import hashlib
import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.cluster import eventually

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalRegistry:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        (workdir / "config.yml").write_text(CONFIG.format(root=workdir / "data", port=self.port))
        self._log = (workdir / "registry.log").open("ab")
        self._process = subprocess.Popen(
            [str(binary), "serve", str(workdir / "config.yml")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        eventually(self._answers, 20, f"the registry answers on {self.host}")

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            raise AssertionError(f"docker-registry exited ({self._process.returncode})")
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()

    # --- the registry API -----------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[bytes, dict[str, str]]:
        request = urllib.request.Request(f"http://{self.host}/v2/{path}", data=body, method=method)
        request.add_header("Accept", OCI_MANIFEST)
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read(), dict(answer.headers)

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """A manifest's exact bytes and digest."""
        body, headers = self._request("GET", f"{repository}/manifests/{reference}")
        return body, headers["Docker-Content-Digest"]

    def blob(self, repository: str, digest: str) -> bytes:
        return self._request("GET", f"{repository}/blobs/{digest}")[0]

    def image_config(self, repository: str, reference: str) -> dict[str, Any]:
        manifest = json.loads(self.manifest(repository, reference)[0])
        return dict(json.loads(self.blob(repository, manifest["config"]["digest"])))

    def put_blob(self, repository: str, content: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        _, headers = self._request("POST", f"{repository}/blobs/uploads/")
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        upload = f"{location}{separator}digest={digest}"
        request = urllib.request.Request(upload, data=content, method="PUT")
        request.add_header("Content-Type", "application/octet-stream")
        with urllib.request.urlopen(request, timeout=30):
            return digest

    def put_manifest(self, repository: str, tag: str, manifest: bytes) -> None:
        media_type = json.loads(manifest).get("mediaType", OCI_MANIFEST)
        self._request("PUT", f"{repository}/manifests/{tag}", manifest, media_type)

    def has(self, repository: str, reference: str) -> bool:
        try:
            self.manifest(repository, reference)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True
