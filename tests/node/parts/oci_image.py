"""Wrap one static binary as a FROM-scratch OCI image archive (used by tools/ensure_node.sh).

    python3 oci_image.py BINARY NAME OUT.tar [--user UID:GID] [--arch amd64]

The image holds only /<basename of BINARY>, which is its entrypoint. The archive is an OCI
image layout in a tar, as `ctr -n k8s.io images import` and `podman load` read it; NAME is kept
through the `io.containerd.image.name` annotation. Written with the standard library rather than
podman/buildah: no container runtime is needed to build it, and every byte is reproducible
(fixed timestamps and owners, no compression), so the same binary gives the same image digest.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


def tar_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    """A deterministic tar of (name, content, mode) regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode  # mtime, uid and gid default to 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("name", help="image reference, e.g. localhost/pause:node")
    parser.add_argument("out")
    parser.add_argument("--user", default="", help="the image's USER (empty: root)")
    parser.add_argument("--arch", default="amd64", help="GOARCH of the binary")
    args = parser.parse_args()

    blobs: dict[str, bytes] = {}

    def blob(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def canonical(obj: object) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    exe = os.path.basename(args.binary)
    with open(args.binary, "rb") as f:
        layer = blob("application/vnd.oci.image.layer.v1.tar", tar_bytes([(exe, f.read(), 0o755)]))
    run: dict[str, object] = {"Entrypoint": [f"/{exe}"]}
    if args.user:
        run["User"] = args.user
    platform = {"architecture": args.arch, "os": "linux"}
    config = {
        **platform,
        "config": run,
        # An uncompressed layer's diff ID is its digest.
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob("application/vnd.oci.image.config.v1+json", canonical(config)),
        "layers": [layer],
    }
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            blob(
                "application/vnd.oci.image.manifest.v1+json",
                canonical(manifest),
                platform=platform,
                # containerd names the image after the first; OCI tools read the second.
                annotations={
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            )
        ],
    }
    files = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), 0o644)]
    files += [("index.json", canonical(index), 0o644)]
    files += [(f"blobs/sha256/{d[7:]}", data, 0o644) for d, data in sorted(blobs.items())]
    with open(args.out + ".tmp", "wb") as out:
        out.write(tar_bytes(files))
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
