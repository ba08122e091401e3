"""The operator process: health endpoints, leader election, then kopf.

With leader election, a standby serves /healthz, /readyz and /metrics and reads the Lease;
nothing else. kopf (every watch, handler, ThingSpace call and status write) starts only
once the Lease is held, and the Lease is released only after kopf has stopped.
"""

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

import kopf
from aiohttp import web

from . import logs, sigterm
from .account_handlers import namespace_notice
from .config import OperatorConfig
from .handlers import build_registry
from .kube import rejections
from .kube.leader import Fence, LeaderElector, LeaseConfig
from .kube.login import Login
from .kube.login import own_namespace as find_own_namespace
from .reconciler import Runtime

log = logging.getLogger(__name__)
#: Below the chart's readinessProbe timeoutSeconds (5): a busy node may take seconds to the
#: first Lease read.
READYZ_WAIT_SECONDS = 4.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


async def run(
    config: OperatorConfig, login: Login, health_socket: socket.socket | None = None
) -> None:
    """``login``: the cluster, found before kopf starts; kopf logs in through it too.
    ``health_socket``: the health port, bound early by the command (``cli.bind_health``).

    SIGTERM and SIGINT stop it from its first step (kopf takes them over once it runs),
    replacing the command's early exit (sigterm.py) and restoring it at the end."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(config, login, health_socket, stop)
    finally:
        sigterm.hand_back(loop)


async def serve(
    config: OperatorConfig, login: Login, health_socket: socket.socket | None, stop: asyncio.Event
) -> None:
    runtime = Runtime.create(config, login.connection)
    found = find_own_namespace(os.environ, SERVICE_ACCOUNT_NAMESPACE)
    runtime.own_namespace = found.name
    log.info("%s", namespace_notice(found))
    logs.install(runtime.sweep.registration_of, text=config.log_format == "text")
    runtime.metrics_port = runtime.metrics.serve(config.metrics_port)
    elector = None
    if config.leader_elect:
        elector = LeaderElector(
            runtime.connection,
            lease_config(config),
            on_change=lambda: runtime.metrics.leader.set(elector is not None and elector.leading),
        )
    runtime.metrics.leader.set(elector is None or elector.leading)
    health = await serve_health(config.health_port, elector, health_socket)
    try:
        if elector is None:
            await run_kopf(config, runtime, login, stop, own_identity(os.environ))
        else:
            await lead(config, runtime, login, elector, stop)
    finally:
        await health.cleanup()
        runtime.metrics.stop()


async def lead(
    config: OperatorConfig,
    runtime: Runtime,
    login: Login,
    elector: LeaderElector,
    stop: asyncio.Event,
) -> None:
    """Wait for the Lease, act while it is held, release it after acting stopped."""
    log.info("Waiting to lead: lease %s/%s, identity %s", *elector.names, elector.config.identity)
    try:
        if await stand_by(elector, stop):
            await act(config, runtime, login, elector, stop)
    finally:
        await elector.close()


async def stand_by(elector: LeaderElector, stop: asyncio.Event) -> bool:
    """True once this process holds the Lease; False if stopped first."""
    acquiring = asyncio.create_task(elector.acquire(), name="lease acquisition")
    stopping = asyncio.create_task(stop.wait(), name="stop signal")
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await cancel(stopping)
    if acquiring.done() and not stop.is_set():
        acquiring.result()  # an unexpected failure surfaces here
        return True
    await cancel(acquiring)
    await elector.release()  # its last write may have taken the Lease as it was stopped
    log.info("Stopped while standing by")
    return False


async def act(
    config: OperatorConfig,
    runtime: Runtime,
    login: Login,
    elector: LeaderElector,
    stop: asyncio.Event,
) -> None:
    """Run kopf while the Lease is renewed. Renewal lost: end now. kopf stopped (SIGTERM):
    let calls on the wire land, then hand the Lease over."""
    identity = elector.config.identity
    log.info("Became leader: lease %s/%s, identity %s", *elector.names, identity)
    fence = Fence(lambda: elector.deadline)
    fence.start()
    rejections.carry_over(elector, runtime.clients.rejected)
    keeper = asyncio.create_task(elector.keep(), name="lease renewal")
    await elector.announce(f"{identity} became leader")
    operator = asyncio.create_task(
        run_kopf(config, runtime, login, stop, identity), name="operator"
    )
    await asyncio.wait({keeper, operator}, return_when=asyncio.FIRST_COMPLETED)
    if not operator.done():
        fence.trip()  # renewal failed: act no more, now
    try:
        await operator
    finally:
        await runtime.close()  # again if kopf did: a stop during startup skips its cleanup
        elector.stop_renewing()
        await keeper
        if elector.leading:
            await elector.announce(f"{identity} stopped leading")
        await elector.release()
        fence.stop()


async def cancel(task: "asyncio.Task[object]") -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_kopf(
    config: OperatorConfig, runtime: Runtime, login: Login, stop: asyncio.Event, identity: str
) -> None:
    try:
        await kopf.operator(
            registry=build_registry(config, login),
            memo=kopf.Memo(runtime=runtime, stop_flag=stop),
            # Without one, kopf derives it from getpass.getuser(), which raises for a uid
            # that has no passwd entry (the image's 10001). kopf's Identity is an unexported
            # NewType of str.
            identity=identity,  # type: ignore[arg-type]
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            stop_flag=stop,
        )
    finally:
        await login.close()


Env = Mapping[str, str]


def lease_config(config: OperatorConfig, env: Env = os.environ) -> LeaseConfig:
    return LeaseConfig(
        namespace=config.leader_election_namespace or own_namespace(env),
        name=config.leader_election_id,
        identity=own_identity(env),
        lease_duration=config.lease_duration_seconds,
        renew_deadline=config.renew_deadline_seconds,
        retry_period=config.retry_period_seconds,
    )


def own_identity(env: Env) -> str:
    """The pod name (the chart passes it); outside a pod, the host name plus a random
    suffix, so two local processes never share an identity."""
    return env.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def own_namespace(env: Env) -> str:
    """POD_NAMESPACE, the service account's, the kubeconfig context's, else default."""
    return find_own_namespace(env, SERVICE_ACCOUNT_NAMESPACE).name


async def serve_health(
    port: int, elector: LeaderElector | None, sock: socket.socket | None = None
) -> web.AppRunner:
    """/healthz: the process is alive (leader or standby). /readyz: who leads; 503 until
    the Lease has been read once (a probe waits up to READYZ_WAIT_SECONDS for that).
    ``sock``: the port, already bound and listening."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if elector is None:
            return web.json_response({"leaderElection": False, "leading": True})
        # A probe in the first instants waits for the first Lease read rather than fail
        # (every failed probe is a Warning Event); still unknown then, it is not ready.
        known = await elector.wait_known(READYZ_WAIT_SECONDS)
        body = {
            "leaderElection": True,
            "identity": elector.config.identity,
            "leader": elector.leader,
            "leading": elector.leading,
            "lease": f"{elector.config.namespace}/{elector.config.name}",
        }
        return web.json_response(body, status=200 if known else 503)

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if sock is not None:
        await web.SockSite(runner, sock).start()
    else:
        await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (probes come from the kubelet)
    return runner
