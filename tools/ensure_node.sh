#!/usr/bin/env bash
# Builds what the test node needs besides the control plane binary and Debian's runc and CNI
# plugins (tests/node/parts), when missing, and prints the directory holding it:
#   bin/containerd bin/ctr bin/containerd-shim-runc-v2   containerd 2, static
#   bin/coredns bin/pause                                static
#   images/pause.tar    OCI archive of localhost/pause:node    (ctr -n k8s.io images import)
#   images/coredns.tar  OCI archive of localhost/coredns:node
#
# Cached outside the checkout like ensure_controlplane.sh, keyed by the versions and a hash of
# the sources, the Go versions, the build flags and the image script. Exit 3: Go is not
# installed (callers skip).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/tests/node/parts"
command -v go >/dev/null 2>&1 || { echo "go not found: cannot build the test node" >&2; exit 3; }
# The modules ask for a newer Go than some machines have: let go fetch that toolchain.
export GOTOOLCHAIN=auto

modversion() { # module, go.mod: the required version, from a one-line or a block require
    awk -v m="$1" '$1 == "require" {$1 = ""; $0 = $0} $1 == m {print $2; exit}' "$2"
}
ctrd_version="$(modversion github.com/containerd/containerd/v2 "$src/containerd/go.mod")"
dns_version="$(modversion github.com/coredns/coredns "$src/coredns/go.mod")"
ctrd_pkg=github.com/containerd/containerd/v2
goflags="-trimpath -pgo=off"
# As containerd's own Makefile builds: these tags, plus no_grpc for the shim (it speaks ttrpc).
ctrd_tags="no_btrfs no_devmapper no_zfs urfave_cli_no_docs"
ctrd_ldflags="-s -w -X $ctrd_pkg/version.Version=$ctrd_version"
flags="CGO_ENABLED=0 $goflags | $ctrd_tags | no_grpc | $ctrd_ldflags | -s -w"
key="$( {
    (cd "$src" && find . -type f \( -name 'go.*' -o -name '*.go' -o -name '*.py' \) \
        | LC_ALL=C sort | xargs sha256sum)
    for m in containerd coredns pause; do go -C "$src/$m" env GOVERSION; done
    echo "$flags"
} | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thingspace-operator/node/$ctrd_version-$dns_version-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
# .complete is written last, so an interrupted build is redone rather than half used.
if [[ ! -f "$cache/.complete" ]]; then
    echo "building the test node (containerd $ctrd_version, CoreDNS $dns_version; cold on 2 cores: about 4 minutes)" >&2
    start=$(date +%s)
    rm -rf "$cache/bin" "$cache/images"
    mkdir -p "$cache/bin" "$cache/images"
    export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
    build() { # module dir, tags, ldflags, packages...
        local dir="$1" tags="$2" ldflags="$3"
        shift 3
        # shellcheck disable=SC2086 # goflags is a list
        (cd "$src/$dir" && go build $goflags -tags "$tags" -ldflags "$ldflags" -o "$cache/bin/" "$@")
    }
    # A module of ours requires containerd and builds its commands: `go install pkg@version`
    # would also do, but refuses modules with replace directives (containerd has none today).
    build containerd "$ctrd_tags" "$ctrd_ldflags" "$ctrd_pkg/cmd/containerd" "$ctrd_pkg/cmd/ctr"
    build containerd "$ctrd_tags no_grpc" "$ctrd_ldflags" "$ctrd_pkg/cmd/containerd-shim-runc-v2"
    build coredns "" "-s -w" .
    build pause "" "-s -w" .
    arch="$(go -C "$src/pause" env GOARCH)"
    python3 "$src/oci_image.py" "$cache/bin/pause" localhost/pause:node "$cache/images/pause.tar" \
        --arch "$arch" --user 65535:65535
    python3 "$src/oci_image.py" "$cache/bin/coredns" localhost/coredns:node \
        "$cache/images/coredns.tar" --arch "$arch"
    touch "$cache/.complete"
    echo "built $cache in $(( $(date +%s) - start )) s" >&2
fi
echo "$cache"
