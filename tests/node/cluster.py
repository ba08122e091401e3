"""A real one-node Kubernetes cluster: the control plane of tests/e2e bound to a bridge
address, plus kube-scheduler, containerd with runc and the CNI bridge, the kubelet,
kube-proxy and CoreDNS. Pods run from images built here and imported into containerd.

Pods reach only the pod range, the Service range and their own loopback: their only routes
are those two ranges, nothing masquerades their traffic, and an nftables guard drops
anything forwarded from the bridge to another interface. Everything the node changes on the
host is put back when it stops (tests/node/host.py).

Also usable from the command line (``python -m tests.node.cluster``) to get a node by hand.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.controlplane import (
    AUDIT_POLICY,
    ROOT,
    ControlPlane,
    ControlPlaneUnavailable,
    die_with_parent,
    ensure_binary,
    free_port,
    kubeconfig,
    write_certificates,
)
from tests.node import host
from tests.node.host import HostState, run

ENSURE_NODE = ROOT / "tools" / "ensure_node.sh"
BUILD_IMAGE = ROOT / "tools" / "build_image.py"
NODE_NAME = "tso-node"
BRIDGE = "tsonode0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
PAUSE_IMAGE = "localhost/pause:node"
COREDNS_IMAGE = "localhost/coredns:node"
#: The operator image as the node layer builds it (tools/build_image.py).
OPERATOR_REPOSITORY = "localhost/thingspace-operator"
OPERATOR_TAG = "dev"
#: A second tag of the same image, for rolling upgrades.
OPERATOR_NEXT_TAG = "next"
#: Each named component's client identity (the default RBAC binds these names).
CLIENTS = {
    "kubelet": f"/O=system:nodes/CN=system:node:{NODE_NAME}",
    "scheduler": "/CN=system:kube-scheduler",
    "proxy": "/CN=system:kube-proxy",
}


class NodeUnavailable(Exception):
    """This machine cannot run a node (not root, no cgroups, no bridge, no Go...)."""


def ensure_node_binaries() -> Path:
    """containerd, its runc shim, ctr, and the pause and CoreDNS image archives."""
    done = subprocess.run(["bash", str(ENSURE_NODE)], stdout=subprocess.PIPE, text=True)
    if done.returncode == 3:
        raise NodeUnavailable("Go is not installed")
    if done.returncode != 0:
        raise RuntimeError("building the node's parts failed (see the output above)")
    return Path(done.stdout.strip().splitlines()[-1])


def ensure_operator_image() -> Path:
    """The operator image built from the Dockerfile (tools/build_image.py): its archive.
    NODE_IMAGE_ARCHIVE=path uses an archive built elsewhere instead (tagged with both
    OPERATOR_TAG and OPERATOR_NEXT_TAG), e.g. to try the layer on an older image."""
    if os.environ.get("NODE_IMAGE_ARCHIVE"):
        return Path(os.environ["NODE_IMAGE_ARCHIVE"])
    done = subprocess.run(
        [
            sys.executable,
            str(BUILD_IMAGE),
            "--tag",
            f"{OPERATOR_REPOSITORY}:{OPERATOR_TAG}",
            "--tag",
            f"{OPERATOR_REPOSITORY}:{OPERATOR_NEXT_TAG}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError("building the operator image failed (see the output above)")
    return Path(done.stdout.strip().splitlines()[-1])


class Node(ControlPlane):
    """The control plane plus one node, started and stopped as a unit."""

    def __init__(self, binary: Path, parts: Path, images: Sequence[Path], workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.parts = parts
        self.images = list(images)
        self.server = f"https://{NODE_IP}:{self.port}"
        self.host_state: HostState | None = None
        self.containerd_socket = workdir / "containerd" / "containerd.sock"

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> "Node":
        self.host_state = HostState.save()
        try:
            self._make_bridge()
            self._write_configuration()
            self._start_etcd()
            self.start_apiserver()
            self._start("kube-controller-manager", self._controller_manager_args())
            self._start("kube-scheduler", self._scheduler_args())
            self._start_containerd()
            self._import_images()
            self._start("kubelet", self._kubelet_args())
            self._start("kube-proxy", [f"--config={self.workdir / 'kube-proxy.yaml'}", "-v=1"])
            self._wait_node_ready()
            self._install_coredns()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Pods first (the kubelet tears their sandboxes and networks down), then every
        process by PID, then the host as it was."""
        if "kubelet" in self._processes and "kube-apiserver" in self._processes:
            with contextlib.suppress(Exception):
                self._delete_every_pod()
        for name in ("kube-proxy", "kubelet", "containerd"):
            self._stop(name)
        self._kill_shims()
        super().stop()
        if self.host_state is not None:
            problems = self.host_state.restore(self.workdir, BRIDGE)
            self.host_state = None
            if problems:
                print("node teardown left:", *problems, sep="\n  ", file=sys.stderr)

    # --- the host's network --------------------------------------------------------------

    def _make_bridge(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Pods on the bridge reach Services through the host (DNAT then back out the bridge).
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        # Nothing the node's pods send is forwarded anywhere but back onto the bridge.
        run("nft", "-f", "-", input=GUARD)

    # --- configuration -----------------------------------------------------------------

    def _write_configuration(self) -> None:
        self.certs.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)
        (self.bin / "kubectl").symlink_to(self.binary)
        for name in ("ctr", "containerd", "containerd-shim-runc-v2"):
            (self.bin / name).symlink_to(self.parts / "bin" / name)
        more = {name: (subject, "extendedKeyUsage=clientAuth") for name, subject in CLIENTS.items()}
        more["kubelet-serving"] = (
            f"/CN={NODE_NAME}",
            f"subjectAltName=IP:{NODE_IP},DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth",
        )
        write_certificates(self.certs, (NODE_IP, API_SERVICE_IP, "127.0.0.1"), more)
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.admin_kubeconfig.write_text(self._kubeconfig("admin"))
        for name in CLIENTS:
            (self.workdir / f"{name}.kubeconfig").write_text(self._kubeconfig(name))
        self._write_containerd_config()
        self._write_kubelet_config()
        self._write_proxy_config()

    def _kubeconfig(self, name: str) -> str:
        c = self.certs
        user = {"client-certificate": str(c / f"{name}.crt"), "client-key": str(c / f"{name}.key")}
        return kubeconfig(self.server, c / "ca.crt", user)

    def _write_containerd_config(self) -> None:
        d = self.workdir / "containerd"
        (d / "cni").mkdir(parents=True)
        (d / "certs.d").mkdir()
        spec = json.loads(run(str(self.parts / "bin" / "ctr"), "oci", "spec"))
        # runc cannot raise a limit here (no CAP_SYS_RESOURCE): start every container low.
        spec["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
            {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096},
        ]
        (d / "base-spec.json").write_text(json.dumps(spec))
        (d / "cni" / "10-bridge.conflist").write_text(json.dumps(cni_config(d / "ipam")))
        (d / "config.toml").write_text(
            CONTAINERD_CONFIG.format(dir=d, pause=PAUSE_IMAGE, runc=shutil.which("runc"))
        )

    def _write_kubelet_config(self) -> None:
        c = self.certs
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False,
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(c / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(c / "kubelet-serving.key"),
            "authentication": {
                "x509": {"clientCAFile": str(c / "ca.crt")},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE, which this VM lacks
            "maxOpenFiles": 20000,
            "makeIPTablesUtilChains": False,
            "clusterDNS": [DNS_IP],
            "clusterDomain": "cluster.local",
            "resolvConf": "",  # pods get the cluster's DNS only, no upstream of the host
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(config))

    def _write_proxy_config(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.workdir / "proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "clusterCIDR": POD_CIDR,
            # Service traffic between pods on one bridge returns through the host, which
            # undoes the DNAT (no br_netfilter needed); nothing leaves the bridge.
            "iptables": {"localhostNodePorts": False, "masqueradeAll": True},
            "conntrack": {"maxPerCore": 0, "min": 0},  # leave the host's sysctls alone
            "oomScoreAdj": 0,
        }
        (self.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(config))

    # --- arguments ---------------------------------------------------------------------

    def _apiserver_args(self) -> list[str]:
        replaced = {
            "--bind-address": NODE_IP,
            "--endpoint-reconciler-type": "lease",
            "--authorization-mode": "Node,RBAC",
            "--service-cluster-ip-range": SERVICE_CIDR,
        }
        args = []
        for arg in super()._apiserver_args():
            flag = arg.split("=", 1)[0]
            args.append(f"{flag}={replaced[flag]}" if flag in replaced else arg)
        c = self.certs
        return [
            *args,
            f"--advertise-address={NODE_IP}",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={c / 'admin.crt'}",
            f"--kubelet-client-key={c / 'admin.key'}",
            f"--kubelet-certificate-authority={c / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.admin_kubeconfig}",
            f"--service-account-private-key-file={self.certs / 'sa.key'}",
            f"--root-ca-file={self.certs / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=true",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ]

    def _kubelet_args(self) -> list[str]:
        return [
            f"--config={self.workdir / 'kubelet.yaml'}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "-v=1",
        ]

    # --- containerd and images ---------------------------------------------------------

    def _start_containerd(self) -> None:
        log = (self.workdir / "containerd.log").open("ab")
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._processes["containerd"] = subprocess.Popen(
            [
                str(self.bin / "containerd"),
                "--config",
                str(self.workdir / "containerd" / "config.toml"),
            ],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while not self._ctr("version", check=False):
            if self._processes["containerd"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not start; see {self.workdir / 'containerd.log'}"
                )
            time.sleep(0.2)

    def _ctr(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [
                str(self.bin / "ctr"),
                "--address",
                str(self.containerd_socket),
                "-n",
                "k8s.io",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout if done.returncode == 0 else ""

    def _import_images(self) -> None:
        for archive in [*(self.parts / "images").glob("*.tar"), *self.images]:
            self.import_image(archive)

    def import_image(self, archive: Path) -> None:
        self._ctr("images", "import", str(archive))

    def pull_over_plain_http(self, registry: str) -> None:
        """Let the CRI pull from a registry that speaks plain HTTP (a host:port), as an
        administrator configures containerd for one: a hosts.toml, read at each pull."""
        hosts = self.workdir / "containerd" / "certs.d" / registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{registry}"\n\n'
            f'[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def image_references(self) -> list[str]:
        """The image references containerd's CRI namespace holds."""
        return self._ctr("images", "list", "--quiet").split()

    def _kill_shims(self) -> None:
        """A shim outlives containerd by design: end ours (their command line names our
        containerd's address) so nothing of the node keeps running."""
        marker = str(self.containerd_socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)

    # --- readiness and cleanup ------------------------------------------------------------

    def _wait_node_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in ("containerd", "kubelet", "kube-proxy", "kube-scheduler"):
                if self._processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.workdir / (name + '.log')}")
            done = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if done.returncode == 0:
                conditions = json.loads(done.stdout)["status"].get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the node was not Ready in {timeout} s; see {self.workdir}/kubelet.log")

    def _install_coredns(self) -> None:
        self.kubectl(
            "apply", "-f", "-", input=COREDNS_MANIFESTS.format(image=COREDNS_IMAGE, ip=DNS_IP)
        )
        self.kubectl(
            "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s"
        )

    def _delete_every_pod(self) -> None:
        """Namespaces' controllers would recreate pods: delete their owners, then the pods,
        and wait until the kubelet has stopped every sandbox (CNI DEL, netns gone)."""
        self.kubectl("delete", "deployments,replicasets,statefulsets,daemonsets,jobs",
                     "--all", "--all-namespaces", "--wait=false", check=False)  # fmt: skip
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1",
                     "--timeout=60s", check=False)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self._ctr("tasks", "ls", "-q", check=False).strip():
            time.sleep(0.5)


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "tso-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing from a pod is rewritten to go off the machine
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    # No default route: the pod and Service ranges only.
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


GUARD = f"""\
table inet tso-node-guard {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname "{BRIDGE}" oifname != "{BRIDGE}" drop
        ip saddr {POD_CIDR} oifname != "{BRIDGE}" drop
    }}
}}
"""

CONTAINERD_CONFIG = """\
version = 3
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{dir}/certs.d"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "{dir}/base-spec.json"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{dir}/cni"
"""

COREDNS_MANIFESTS = """\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
        - name: coredns
          image: {image}
          imagePullPolicy: Never
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {{name: dns, containerPort: 53, protocol: UDP}}
            - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
          readinessProbe:
            httpGet: {{path: /ready, port: 8181}}
            periodSeconds: 2
          resources:
            limits: {{memory: 100Mi}}
          volumeMounts:
            - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
        - name: config
          configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {ip}
  selector: {{k8s-app: kube-dns}}
  ports:
    - {{name: dns, port: 53, protocol: UDP}}
    - {{name: dns-tcp, port: 53, protocol: TCP}}
"""


def build_parts() -> tuple[Path, Path, list[Path]]:
    """Build (or reuse) every part: the cluster binary, the node's, the operator image."""
    missing = host.missing_prerequisites()
    if missing:
        raise NodeUnavailable("missing " + ", ".join(missing))
    try:
        binary = ensure_binary()
    except ControlPlaneUnavailable as exc:
        raise NodeUnavailable(str(exc)) from exc
    return binary, ensure_node_binaries(), [ensure_operator_image()]


def main() -> None:
    """Run a node until interrupted, for trying the chart by hand; ``--build``: only build
    (or reuse) its parts, saying loudly when this machine cannot run one."""
    if sys.argv[1:] == ["--build"]:
        try:
            build_parts()
        except NodeUnavailable as exc:
            print(f"######## REAL NODE NOT AVAILABLE ({exc}): tests/node will be SKIPPED ########")
        return
    workdir = ROOT / ".demo" / "node"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    node = Node(*build_parts(), workdir=workdir).start()
    try:
        print(f"export KUBECONFIG={node.admin_kubeconfig} PATH={node.bin}:$PATH", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        node.stop()


if __name__ == "__main__":
    main()
