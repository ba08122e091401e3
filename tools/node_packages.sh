#!/usr/bin/env bash
# Installs the Debian packages the test node and the image build use, when missing: runc and
# the CNI plugins (pods), iptables, nftables and conntrack (kube-proxy and the node's guard),
# podman, buildah and mmdebstrap (the image), shellcheck (actionlint checks the workflows'
# scripts with it). Only as root with apt-get; otherwise it says what is missing and the
# node layer skips.
set -euo pipefail

wanted=(runc containernetworking-plugins iptables nftables conntrack podman buildah mmdebstrap uidmap shellcheck)
missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "not installed (the node layer needs them): ${missing[*]}" >&2
    exit 0
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
