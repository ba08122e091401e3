"""A real Kubernetes control plane for the end-to-end suite: etcd, kube-apiserver and
kube-controller-manager from the project's own build (tests/controlplane), each its own
process, on free loopback ports, with RBAC, a service-account issuer, an audit log and
kubectl of the same release.

Also usable from the command line (``python -m tests.e2e.controlplane``) to get a cluster
for the demo or by hand.
"""

import base64
import concurrent.futures
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "tools" / "ensure_controlplane.sh"
#: Not built because Go is missing (the script's exit code 3).
GO_MISSING = 3
PR_SET_PDEATHSIG = 1
#: The operator's service accounts' requests, at Metadata level: enough to see every verb,
#: resource, name, query (label selectors) and response code; never a body.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
CONTROLLERS = ",".join(
    [
        "namespace-controller",
        "garbage-collector-controller",
        "serviceaccount-controller",
        "clusterrole-aggregation-controller",
        "root-ca-certificate-publisher-controller",
    ]
)


class ControlPlaneUnavailable(Exception):
    """The binary cannot be built here (no Go): the e2e layer is skipped, loudly."""


def ensure_binary() -> Path:
    """Build the control plane if needed (cached outside the checkout); its path."""
    # Progress (a cold build takes minutes) goes to stderr, so it shows.
    done = subprocess.run(["bash", str(ENSURE)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode == GO_MISSING:
        raise ControlPlaneUnavailable("Go is not installed")
    if done.returncode != 0:
        raise RuntimeError("building the control plane failed (see the output above)")
    return Path(done.stdout.strip().splitlines()[-1])


def die_with_parent() -> None:
    """Runs in a child before exec: the kernel kills it when the test process dies, even
    when pytest-timeout ends that with os._exit and no teardown runs."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="controlplane-spawner")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def write_certificates(
    directory: Path,
    addresses: Sequence[str] = ("127.0.0.1",),
    more: dict[str, tuple[str, str]] | None = None,
) -> None:
    """A throwaway CA, the serving certificate (for ``addresses``), the admin client
    certificate, the service-account signing key; ``more``: name -> (subject, extensions)."""
    d = directory
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d / "sa.key"))
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "30", "-subj", "/CN=thingspace-e2e-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
    )  # fmt: skip
    leaves = {
        "apiserver": (
            "/CN=kube-apiserver",
            "subjectAltName="
            + ",".join(f"IP:{address}" for address in addresses)
            + ",DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth",
        ),
        "admin": ("/O=system:masters/CN=e2e-admin", "extendedKeyUsage=clientAuth"),
        **(more or {}),
    }
    for name, (subject, extensions) in leaves.items():
        (d / f"{name}.ext").write_text(extensions + "\n")
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", subject, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "30",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"),
        )  # fmt: skip


def kubeconfig(server: str, ca: Path, user: dict[str, str], namespace: str = "default") -> str:
    """A kubeconfig (JSON is valid YAML) for one user of this cluster."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "e2e",
                    "context": {"cluster": "e2e", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "e2e",
        }
    )


class Cluster:
    """What the tests need of a cluster: kubectl and helm environments, the server, its CA."""

    #: Whether the tests may restart its API server, compact its etcd and read its audit log.
    controlled = False
    server: str
    certs: Path  # holds ca.crt
    bin: Path  # holds kubectl
    workdir: Path
    admin_kubeconfig: Path
    audit_log: Path | None = None

    def env(self, kubeconfig_path: Path | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig_path or self.admin_kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.workdir),  # kubectl's and helm's caches stay in the workdir
        }

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        kubeconfig_path: Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig_path),
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def audit_events(self) -> Iterator[dict[str, Any]]:
        if self.audit_log is None or not self.audit_log.exists():
            return
        with self.audit_log.open() as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


class ExternalCluster(Cluster):
    """Any cluster a kubeconfig reaches (kind, a test cluster): E2E_KUBECONFIG=path. The
    tests that restart the API server, compact etcd or read the audit log are skipped."""

    def __init__(self, kubeconfig_path: Path, workdir: Path) -> None:
        self.admin_kubeconfig, self.workdir = kubeconfig_path, workdir
        self.certs = workdir
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ControlPlaneUnavailable("E2E_KUBECONFIG is set but kubectl is not on PATH")
        self.bin = Path(kubectl).parent
        view = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        cluster = view["clusters"][0]["cluster"]
        self.server = cluster["server"]
        if cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"])
            (workdir / "ca.crt").write_bytes(ca)
        elif cluster.get("certificate-authority"):
            shutil.copy(cluster["certificate-authority"], workdir / "ca.crt")


class ControlPlane(Cluster):
    """etcd + kube-apiserver + kube-controller-manager, started and stopped as a unit."""

    controlled = True

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.certs = workdir / "pki"
        self.bin = workdir / "bin"
        self.audit_log = workdir / "audit.log"
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.etcd_url = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> "ControlPlane":
        self.certs.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)
        (self.bin / "kubectl").symlink_to(self.binary)
        write_certificates(self.certs)
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.admin_kubeconfig.write_text(
            kubeconfig(
                self.server,
                self.certs / "ca.crt",
                {
                    "client-certificate": str(self.certs / "admin.crt"),
                    "client-key": str(self.certs / "admin.key"),
                },
            )
        )
        try:
            self._start_etcd()
            self.start_apiserver()
            self._start("kube-controller-manager", self._controller_manager_args())
        except BaseException:
            self.stop()  # no half-started cluster outlives a failed start
            raise
        return self

    def stop(self) -> None:
        """Stop everything at once: a throwaway cluster needs no orderly goodbye."""
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in reversed(list(self._processes)):
            self._stop(name)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_etcd(self) -> None:
        process = self._start("etcd", ["-data-dir", str(self.workdir / "etcd")], stdout=True)
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline().decode()
            if line.startswith("ETCD_URL="):
                self.etcd_url = line.split("=", 1)[1].strip()
                return
            if not line and process.poll() is not None:
                break
        raise RuntimeError(f"etcd did not start; see {self.workdir / 'etcd.log'}")

    def start_apiserver(self) -> None:
        self._start("kube-apiserver", self._apiserver_args())
        self.wait_ready()

    def stop_apiserver(self) -> None:
        self._stop("kube-apiserver")

    def compact_etcd(self) -> None:
        """Drop etcd's history: watches resuming from an older resourceVersion get 410."""
        subprocess.run(
            [str(self.binary), "etcd-compact", self.etcd_url], check=True, capture_output=True
        )

    def _apiserver_args(self) -> list[str]:
        c = self.certs
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={c}",
            f"--tls-cert-file={c / 'apiserver.crt'}",
            f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--client-ca-file={c / 'ca.crt'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={c / 'sa.key'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--profiling=false",
            "-v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.admin_kubeconfig}",
            f"--controllers={CONTROLLERS}",
            f"--root-ca-file={self.certs / 'ca.crt'}",
            "--leader-elect=false",
            "--secure-port=0",
            "--concurrent-gc-syncs=5",
        ]

    def _start(
        self, name: str, args: Sequence[str], stdout: bool = False
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")

        def spawn() -> "subprocess.Popen[bytes]":
            return subprocess.Popen(
                [str(self.binary), name, *args],
                stdout=subprocess.PIPE if stdout else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

        # The kernel's parent-death signal follows the *thread* that started the child: a
        # component restarted from a short-lived thread (the chaos soak's) would be killed
        # when that thread ends. One thread that lives as long as the process starts them.
        process = _SPAWNER.submit(spawn).result()
        self._processes[name] = process
        return process

    def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /readyz answers ok (anonymous access is allowed there)."""
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        deadline = time.monotonic() + timeout
        while True:
            server = self._processes.get("kube-apiserver")
            if server is not None and server.poll() is not None:
                raise RuntimeError(
                    f"kube-apiserver exited; see {self.workdir / 'kube-apiserver.log'}"
                )
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=context, timeout=5
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kube-apiserver not ready in {timeout} s; "
                    f"see {self.workdir / 'kube-apiserver.log'}"
                )
            time.sleep(0.2)


def main() -> None:
    """Run a control plane until interrupted, for the demo or by hand."""
    workdir = ROOT / ".demo" / "controlplane"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ControlPlane(ensure_binary(), workdir) as plane:
        print(f"export KUBECONFIG={plane.admin_kubeconfig} PATH={plane.bin}:$PATH", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
