"""The real commands as a pod runs them: a uid with no passwd entry, no HOME, a read-only
filesystem; PID 1 of its PID namespace (the kernel drops a signal PID 1 has no handler
for); probes arriving before the operator is up.

Processes are started with ``setpriv`` and ``unshare`` (root only; skipped otherwise)
against the emulated API server and the simulator of the other integration tests.
"""

import asyncio
import datetime
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import DEMO_CREDENTIALS, NAMESPACE, Cluster
from tests.harness.demo import free_port, write_kubeconfig_to

BIN = Path(sysconfig.get_path("scripts"))
OPERATOR, SIMULATOR = BIN / "thingspace-operator", BIN / "thingspace-sim"
POD_UID = 10001  # the image's user
#: What getpass.getuser() would read before asking the passwd database.
USER_VARIABLES = ("HOME", "USER", "LOGNAME", "USERNAME", "LNAME")
SIGTERM_EXIT = 128 + signal.SIGTERM
EXEC_API = "client.authentication.k8s.io/v1beta1"


def _works(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _is_root() -> bool:
    return os.geteuid() == 0


needs_pid_namespace = pytest.mark.skipif(
    not _is_root()
    or shutil.which("unshare") is None
    or not _works("unshare", "--pid", "--fork", "--kill-child", "--", "true"),
    reason="needs unshare --pid --fork --kill-child (root, util-linux)",
)


# --- processes -----------------------------------------------------------------------------


class Command:
    """A command started in the background, its stdout and stderr in one file."""

    def __init__(self, process: asyncio.subprocess.Process, output: Path) -> None:
        self.process, self.output = process, output

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str], output: Path) -> "Command":
        with output.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd="/", stdout=sink, stderr=sink, start_new_session=True
            )
        return cls(process, output)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"still running {timeout} s after SIGTERM; output:\n{self.text()[-3000:]}"
            ) from None

    def kill(self) -> None:
        if self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # unshare, and with it its PID 1


async def until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)
    return result


async def until_async(
    predicate: Callable[[], Awaitable[Any]], timeout: float, what: str, command: Command
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert command.process.returncode is None, f"{what}: exited\n{command.text()[-3000:]}"
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s\n{command.text()[-3000:]}")
        await asyncio.sleep(0.05)


async def http_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


def _proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def pid_one(unshare: asyncio.subprocess.Process, program: Path) -> int | None:
    """The host pid of ``program`` once unshare's child has become it (PID 1 inside)."""
    for child in _proc(unshare.pid, f"task/{unshare.pid}/children").split():
        argv = _proc(int(child), "cmdline").split("\0")
        if str(program) in argv and Path(argv[0]).name != "unshare":
            status = _status(int(child))
            assert status.get("NSpid", "").split()[-1:] == ["1"], status.get("NSpid")
            return int(child)
    return None


def _status(pid: int) -> dict[str, str]:
    lines = (line.partition(":") for line in _proc(pid, "status").splitlines())
    return {key: value.strip() for key, _, value in lines}


def catches_sigterm(pid: int) -> bool:
    caught = _status(pid).get("SigCgt")
    return caught is not None and bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


async def start_as_pid_one(program: Path, args: list[str], env: dict[str, str], output: Path):
    command = await Command.start(
        ["unshare", "--pid", "--fork", "--kill-child", "--", str(program), *args], env, output
    )
    pid = await until(lambda: pid_one(command.process, program), 20, f"{program.name} started")
    return command, pid


async def sigterm_at_once(command: Command, pid: int) -> int:
    """SIGTERM as soon as the process can honour it: when it catches SIGTERM, which it must
    before it prints anything. The output's size when sent."""

    def handler_or_output() -> str:
        if catches_sigterm(pid):
            return "handler"
        if command.output.stat().st_size or command.process.returncode is not None:
            return "output"
        return ""

    first = await until(handler_or_output, 20, "a SIGTERM handler or output", interval=0.001)
    assert first == "handler", f"no SIGTERM handler before the first output:\n{command.text()}"
    os.kill(pid, signal.SIGTERM)
    return command.output.stat().st_size


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory anyone may read (pytest's own is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="pod-runtime-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def commands() -> AsyncIterator[list[Command]]:
    started: list[Command] = []
    try:
        yield started
    finally:
        for command in started:
            command.kill()
            await command.process.wait()


def token_kubeconfig(k8s: Any, directory: Path) -> Path:
    path = write_kubeconfig_to(directory / "kubeconfig", str(k8s.url).rstrip("/"))
    path.chmod(0o644)
    return path


class BlockingLogin:
    """A kubeconfig whose user logs in through an exec plugin (so through the
    ``kubernetes`` client, before the asyncio loop runs) that waits, on its first call,
    until ``release``: the operator is held in its login."""

    def __init__(self, k8s: Any, directory: Path) -> None:
        self.started, self.go = directory / "login-started", directory / "login-go"
        os.mkfifo(self.go)
        plugin = directory / "login-plugin"
        plugin.write_text(
            textwrap.dedent(
                f"""\
                #!/bin/sh
                if mkdir "{self.started}" 2>/dev/null; then read -r _ < "{self.go}"; fi
                echo '{{"apiVersion": "{EXEC_API}", "kind": "ExecCredential",
                  "status": {{"token": "demo"}}}}'
                """
            )
        )
        plugin.chmod(0o755)
        self.kubeconfig = directory / "kubeconfig"
        plugin_user = {"apiVersion": EXEC_API, "command": str(plugin), "interactiveMode": "Never"}
        user = {"exec": plugin_user}
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": str(k8s.url).rstrip("/")}}],
                    "users": [{"name": "test", "user": user}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                }
            )
        )

    async def wait_started(self, command: Command) -> None:
        await until(
            lambda: self.started.exists() or command.process.returncode is not None,
            30,
            "the login to start",
        )
        assert self.started.exists(), command.text()[-3000:]

    async def release(self) -> None:
        def opened() -> int | None:
            try:  # non-blocking: succeeds once the plugin waits on the other end
                return os.open(self.go, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return None

        fd = await until(opened, 10, "the login plugin to wait")
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)


def operator_env(kubeconfig: Path, sim_url: str, **more: str) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "KUBECONFIG": str(kubeconfig),
        "THINGSPACE_API_URL": sim_url,
        "THINGSPACE_HEALTH_PORT": str(free_port()),
        "THINGSPACE_METRICS_PORT": str(free_port()),
        **more,
    }


# --- a uid without passwd entry, HOME or writable filesystem --------------------------------

#: Every mount read-only in a mount namespace of its own, /tmp included (a pod may have
#: none writable), then the command as the image's uid with no supplementary group.
AS_POD_USER = """\
for mount in / /tmp /var/tmp /dev/shm /run; do
    if mountpoint -q "$mount"; then mount -o remount,bind,ro "$mount" || exit 97; fi
done
exec "$@"
"""


def as_pod_user(*argv: str) -> list[str]:
    setpriv = ["setpriv", f"--reuid={POD_UID}", f"--regid={POD_UID}", "--clear-groups", "--"]
    return ["unshare", "--mount", "--", "sh", "-c", AS_POD_USER, "sh", *setpriv, *argv]


def pod_user_problem() -> str | None:
    """Why the commands cannot run as the pod's uid here, if they cannot."""
    if not _is_root():
        return "setpriv and unshare need root"
    for tool in ("setpriv", "unshare", "mountpoint"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    try:
        pwd.getpwuid(POD_UID)
        return f"uid {POD_UID} has a passwd entry on this host"
    except KeyError:
        pass
    for path in (OPERATOR, *OPERATOR.parents):
        if path.is_dir() and not path.stat().st_mode & stat.S_IXOTH:
            return f"uid {POD_UID} cannot reach the virtualenv: {path} is not searchable"
    probe = as_pod_user(str(BIN / "python"), "-c", "import kopf, aiohttp, thingspace_operator")
    done = subprocess.run(
        probe, env={"PATH": "/usr/bin:/bin"}, cwd="/", capture_output=True, timeout=60, check=False
    )
    if done.returncode:
        return f"uid {POD_UID} cannot run the virtualenv's Python: {done.stderr.decode()[-300:]}"
    return None


async def test_operator_and_simulator_run_as_a_uid_without_passwd_entry_or_home(
    k8s, cluster: Cluster, shared_dir: Path, commands: list[Command]
) -> None:
    problem = pod_user_problem()
    if problem:
        pytest.skip(problem)
    sim_port = free_port()
    sim_env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    sim = await Command.start(
        as_pod_user(str(SIMULATOR), "--port", str(sim_port)), sim_env, shared_dir / "sim.log"
    )
    commands.append(sim)
    sim_url = f"http://127.0.0.1:{sim_port}"
    await until_async(
        lambda: _answers(f"{sim_url}/_sim/registrations"), 30, "the simulator serving", sim
    )

    env = operator_env(token_kubeconfig(k8s, shared_dir), sim_url)
    assert not set(USER_VARIABLES) & set(env)
    operator = await Command.start(
        as_pod_user(str(OPERATOR), "run"), env, shared_dir / "operator.log"
    )
    commands.append(operator)
    # kopf starts, watches and reconciles: past its peering identity, which asked the
    # passwd database for the user's name and crashed without an entry.
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await cluster.create_callback("qos")

    async def ready() -> bool:
        return cluster.condition("qos", "Ready").get("status") == "True"

    await until_async(ready, 40, "the callback Ready", operator)
    health = f"http://127.0.0.1:{env['THINGSPACE_HEALTH_PORT']}/healthz"
    assert await http_status(health) == 200

    for command in (operator, sim):
        command.process.send_signal(signal.SIGTERM)
        assert await command.wait(20) == 0, command.text()[-3000:]
        assert "Traceback" not in command.text(), command.text()[-3000:]


async def _answers(url: str) -> bool:
    return await http_status(url) == 200


# --- SIGTERM as PID 1 ----------------------------------------------------------------------


@needs_pid_namespace
@pytest.mark.parametrize("when", ["at once", "during login"])
async def test_operator_as_pid_1_ends_at_a_sigterm_before_its_loop_runs(
    k8s, sim, shared_dir: Path, commands: list[Command], when: str
) -> None:
    """Before the asyncio loop handles SIGTERM (imports, login) it ends the process at once:
    nothing is held yet. The login waits on its plugin, so the loop cannot have started."""
    login = BlockingLogin(k8s, shared_dir)
    env = operator_env(login.kubeconfig, sim.url)
    command, pid = await start_as_pid_one(OPERATOR, ["run"], env, shared_dir / "operator.log")
    commands.append(command)
    if when == "at once":
        await sigterm_at_once(command, pid)
    else:
        await login.wait_started(command)
        os.kill(pid, signal.SIGTERM)
    assert await command.wait(5) == SIGTERM_EXIT, command.text()[-3000:]


@needs_pid_namespace
async def test_operator_as_pid_1_standing_by_stops_at_sigterm_and_leaves_the_lease(
    k8s, sim, cluster: Cluster, shared_dir: Path, commands: list[Command]
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "thingspace-operator"},
        "spec": {
            "holderIdentity": "the-leader",
            "leaseDurationSeconds": 3600,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    await cluster._request("POST", leases, json=lease)
    before = await cluster._request("GET", f"{leases}/thingspace-operator")
    env = operator_env(
        token_kubeconfig(k8s, shared_dir),
        sim.url,
        POD_NAME="standby",
        POD_NAMESPACE=NAMESPACE,
        THINGSPACE_LEADER_ELECT="true",
    )
    command, pid = await start_as_pid_one(OPERATOR, ["run"], env, shared_dir / "operator.log")
    commands.append(command)
    await until(lambda: "Waiting to lead" in command.text(), 30, "standing by", interval=0.05)
    os.kill(pid, signal.SIGTERM)
    assert await command.wait(5) == 0, command.text()[-3000:]
    assert "Stopped while standing by" in command.text()
    after = await cluster._request("GET", f"{leases}/thingspace-operator")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["holderIdentity"] == "the-leader"


@needs_pid_namespace
async def test_simulator_as_pid_1_ends_at_sigterm_from_the_start(
    shared_dir: Path, commands: list[Command]
) -> None:
    env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    args = ["--port", str(free_port())]
    command, pid = await start_as_pid_one(SIMULATOR, args, env, shared_dir / "sim.log")
    commands.append(command)
    printed = await sigterm_at_once(command, pid)
    # Nothing printed when it was sent: aiohttp had not taken SIGTERM over yet.
    expected = {SIGTERM_EXIT} if not printed else {SIGTERM_EXIT, 0}
    assert await command.wait(5) in expected, command.text()


@needs_pid_namespace
async def test_simulator_as_pid_1_stops_cleanly_at_sigterm_while_serving(
    shared_dir: Path, commands: list[Command]
) -> None:
    port = free_port()
    env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    command, pid = await start_as_pid_one(
        SIMULATOR, ["--port", str(port)], env, shared_dir / "sim.log"
    )
    commands.append(command)
    await until_async(
        lambda: _answers(f"http://127.0.0.1:{port}/_sim/registrations"), 30, "serving", command
    )
    os.kill(pid, signal.SIGTERM)
    assert await command.wait(5) == 0, command.text()


# --- probes before the operator is up ------------------------------------------------------


async def test_health_port_accepts_probes_from_the_start_and_answers_once_up(
    k8s, sim, shared_dir: Path, commands: list[Command]
) -> None:
    """A probe sent while the operator still logs in waits instead of being refused (a
    refused one is a Warning Event on the pod)."""
    login = BlockingLogin(k8s, shared_dir)
    env = operator_env(login.kubeconfig, sim.url)
    command = await Command.start([str(OPERATOR), "run"], env, shared_dir / "operator.log")
    commands.append(command)
    await login.wait_started(command)
    port = int(env["THINGSPACE_HEALTH_PORT"])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        pytest.fail(f"the health port refused a probe during the login:\n{command.text()}")
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await login.release()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    command.process.send_signal(signal.SIGTERM)
    assert await command.wait(20) == 0, command.text()[-3000:]


def test_the_health_port_is_bound_early_only_when_the_environment_names_it() -> None:
    from thingspace_operator.cli import bind_health, names_health

    assert not names_health(["run", "--metrics-port", "9"])
    for flag in (["--health-port", "9"], ["--health-port=9"], ["--health", "9"], ["--he=9"]):
        assert names_health(["run", *flag])

    port = free_port()
    sock = bind_health({"THINGSPACE_HEALTH_PORT": str(port)})
    assert sock is not None
    try:
        assert sock.getsockname()[1] == port
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert bind_health({"THINGSPACE_HEALTH_PORT": str(port)}) is None  # taken
    finally:
        sock.close()
    assert bind_health({"THINGSPACE_HEALTH_PORT": "0"}) is None
    assert bind_health({"THINGSPACE_RESYNC_SECONDS": "-1"}) is None  # reported when parsed
