#!/usr/bin/env bash
# Builds the test control plane (tests/controlplane: kube-apiserver, kube-controller-manager and
# embedded etcd in one static binary) when it is missing, and prints its path on stdout.
#
# The binary is cached outside the checkout, keyed by Kubernetes version and a hash of the
# sources, the Go version and the link flags, so a fresh clone on the same machine (CI) reuses
# it. K8S_TESTBIN=/path overrides everything. Exit 3: Go is not installed (callers skip).
set -euo pipefail

if [[ -n "${K8S_TESTBIN:-}" ]]; then
    [[ -x "$K8S_TESTBIN" ]] || { echo "K8S_TESTBIN=$K8S_TESTBIN is not executable" >&2; exit 1; }
    echo "$K8S_TESTBIN"
    exit 0
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/tests/controlplane"
command -v go >/dev/null 2>&1 || { echo "go not found: cannot build the control plane" >&2; exit 3; }
# A Go older than the module asks for (1.24 or newer is enough, docs/development.md) fetches
# the toolchain it needs through the module proxy, even where the environment says
# GOTOOLCHAIN=local.
export GOTOOLCHAIN=auto

version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$src/go.mod")"
minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w
 -X k8s.io/component-base/version.gitVersion=$version
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=$minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
key="$( { cat "$src/go.mod" "$src/go.sum" "$src/main.go"; go version; echo "$ldflags"; } | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thingspace-operator/k8s-testbin/$version-$key"
binary="$cache/k8s-testbin"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ ! -x "$binary" ]]; then
    echo "building the control plane $version (cold on 2 cores: about 10 minutes; see docs/development.md)" >&2
    start=$(date +%s)
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -pgo=off \
        -ldflags "$(echo $ldflags)" -o "$binary.tmp" .)
    mv "$binary.tmp" "$binary"
    echo "built $binary in $(( $(date +%s) - start )) s" >&2
fi
echo "$binary"
