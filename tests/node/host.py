"""What a one-node cluster changes on the host, saved before it starts and put back after
it stops: the sysctls the kubelet and the forwarding rewrite, the nftables ruleset
(kube-proxy's chains and the node's own guard), the hard-coded host paths the kubelet and
containerd create, the pod cgroups, the mounts under the node's directory and the bridge.
"""

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: The kubelet sets the first six (setupKernelTunables); pods on the bridge need forwarding.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
)
#: Paths outside the node's directory that the kubelet, containerd and CNI hard-code.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/etc/cni",
    "/opt/cni",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The kubelet's cgroup tree (cgroupfs driver): every pod's cgroup is below it.
POD_CGROUPS = "kubepods"
IPTABLES = ("iptables", "ip6tables")


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a node: empty when it can."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        missing.append("cgroups")
    for tool in ("ip", "nft", "iptables", "runc", "openssl", "mount", "umount", "podman"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            missing.append(tool)
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("CNI plugins (/usr/lib/cni/bridge)")
    if not missing:
        probe = "tsoprobe0"
        added = subprocess.run(
            ["ip", "link", "add", probe, "type", "bridge"], capture_output=True, check=False
        )
        if added.returncode != 0:
            missing.append("bridge interfaces")
        else:
            run("ip", "link", "del", probe, check=False)
    return missing


@dataclass
class HostState:
    """A snapshot of what the node will change; ``restore`` puts it back."""

    sysctls: dict[str, str] = field(default_factory=dict)
    #: iptables-save's view of each family (iptables' own format: nft cannot read back
    #: the xtables matches iptables-nft writes).
    iptables: dict[str, str] = field(default_factory=dict)
    nft_tables: set[str] = field(default_factory=set)
    existing_paths: set[str] = field(default_factory=set)
    cgroups: dict[Path, set[str]] = field(default_factory=dict)

    @classmethod
    def save(cls) -> "HostState":
        state = cls()
        for name in SYSCTLS:
            path = Path("/proc/sys") / name
            if path.exists():
                state.sysctls[name] = path.read_text().strip()
        for family in IPTABLES:
            state.iptables[family] = run(f"{family}-save")
        state.nft_tables = nft_tables()
        state.existing_paths = {path for path in HOST_PATHS if os.path.lexists(path)}
        for hierarchy in cgroup_hierarchies():
            state.cgroups[hierarchy] = {child.name for child in hierarchy.iterdir()}
        return state

    def restore(self, node_dir: Path, bridge: str) -> list[str]:
        """Put everything back; returns what could not be (each step runs regardless)."""
        problems: list[str] = []
        steps = (
            lambda: kill_in_cgroups(self.new_cgroups()),
            lambda: unmount_below(node_dir),
            lambda: unmount_below(Path("/run/containerd")),
            lambda: run("ip", "link", "del", bridge, check=False),
            lambda: remove_cgroups(self.new_cgroups()),
            self._restore_ruleset,
            self._restore_sysctls,
            self._remove_new_paths,
        )
        for step in steps:
            try:
                step()
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
        return problems

    def new_cgroups(self) -> list[Path]:
        """The kubelet's pod cgroups that were not there before (only those: a build that
        runs meanwhile has top-level cgroups of its own)."""
        found = []
        for hierarchy, before in self.cgroups.items():
            if hierarchy.is_dir():
                found += [
                    path
                    for path in hierarchy.glob(f"{POD_CGROUPS}*")
                    if path.is_dir() and path.name not in before
                ]
        return found

    def _restore_ruleset(self) -> None:
        """Tables the node added (kube-proxy's, the guard) go; the others get back what
        they held (iptables-restore replaces each table it is given)."""
        for table in nft_tables() - self.nft_tables:
            run("nft", "delete", "table", *table.split(), check=False)
        for family, saved in self.iptables.items():
            run(f"{family}-restore", input=saved)

    def _restore_sysctls(self) -> None:
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            if path.read_text().strip() != value:
                path.write_text(value + "\n")

    def _remove_new_paths(self) -> None:
        for path in HOST_PATHS:
            if path not in self.existing_paths and os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)


def nft_tables() -> set[str]:
    """'family name' of every nftables table."""
    return {line.split(None, 1)[1] for line in run("nft", "list", "tables").splitlines() if line}


def cgroup_hierarchies() -> list[Path]:
    """cgroup v1 controllers (each its own tree), or the v2 root."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return [
        path
        for path in CGROUP_ROOT.iterdir()
        if path.is_dir() and not path.is_symlink() and (path / "cgroup.procs").exists()
    ]


def walk_bottom_up(root: Path) -> list[Path]:
    found = [Path(d) for d, _, _ in os.walk(root)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_in_cgroups(roots: list[Path]) -> None:
    """SIGKILL whatever a pod left running (a shim's children, a stuck container)."""
    for root in roots:
        for group in walk_bottom_up(root):
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def remove_cgroups(roots: list[Path]) -> None:
    for root in roots:
        for group in walk_bottom_up(root):
            with contextlib.suppress(OSError):
                group.rmdir()


def mounts_below(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(directory) or point.startswith(prefix):
            points.append(point)
    return points


def unmount_below(directory: Path) -> None:
    """Deepest first; lazily where still busy (a process not yet reaped)."""
    for point in sorted(mounts_below(directory), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            run("umount", "-l", point, check=False)
