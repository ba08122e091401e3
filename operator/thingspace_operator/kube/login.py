"""Which cluster, as whom: resolved once before kopf starts, again whenever kopf logs in.

kopf's own minimal logins come first: the in-cluster service account, then the kubeconfig
(KUBECONFIG or ~/.kube/config, its current context). They cover tokens, basic auth and
client certificates without the ``kubernetes`` client, whose models cost ~28 MB of
resident memory. A kubeconfig user that only the ``kubernetes`` client can run (an
``exec`` or ``auth-provider`` plugin, a ``tokenFile``, or files named relative to the
kubeconfig) falls back to that client, imported only then.
"""

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from .connection import SERVICE_ACCOUNT_TOKEN, KubeConnection

log = logging.getLogger(__name__)
# What a kubeconfig user may hold that kopf's login ignores and only the client runs.
CLIENT_ONLY_USER_FIELDS = ("exec", "auth-provider", "tokenFile")
Env = Mapping[str, str]
# kopf's own connection pool has no limit: converging 10,000 new resources the process
# held up to 747 descriptors open, most of them kopf's connections to the API server.
# kopf gets a pool of this many connections plus one per watch stream it keeps open, in
# total and shared (a reconnecting watch queues behind patches, then resumes from its
# version). Measured: convergence time and CPU within the noise at N=10,000
# (docs/performance.md).
KOPF_CONNECTIONS = 100
# kopf logs in again when the API server rejects its credentials (401) or a connection
# breaks. kopf itself refuses credentials equal to those it gave up; a session is never
# equal to another, so a login that finds the same credentials waits, doubling up to the
# most: a revoked token costs a request every 30 s, not a hot loop.
RELOGIN_WAIT_FIRST, RELOGIN_WAIT_MOST = 1.0, 30.0


class Login:
    """kopf's login handler. It resolves the credentials again (a rotated token, an edited
    kubeconfig) and the operator's own requests use them too."""

    def __init__(
        self,
        connection: KubeConnection,
        relogin: Callable[[], kopf.ConnectionInfo | None] | None = None,
    ) -> None:
        """``relogin``: how the connection was found; None for the ``kubernetes`` client,
        which refreshes its own credentials."""
        self.connection = connection
        self._relogin = relogin
        self._kopf_sessions: list[aiohttp.ClientSession] = []
        self._last_info: kopf.ConnectionInfo | None = None
        self._same_logins = 0
        self._sleep = asyncio.sleep

    def __call__(self, **_: Any) -> kopf.ConnectionInfo:
        found = self._relogin() if self._relogin is not None else None
        if found is not None:
            self.connection.update(found)
        return self.connection.connection_info()

    async def kopf_session(self, watch_streams: int) -> kopf.AiohttpSession:
        """kopf's login: the credentials of ``self()``, in a session of a bounded pool.
        kopf closes it when it logs in again, if it has used it."""
        info = await asyncio.to_thread(self)  # files, YAML, maybe an exec plugin
        await self._wait_if_unchanged(info)
        context = bounded_session(info, KOPF_CONNECTIONS + watch_streams)
        self._kopf_sessions = [s for s in self._kopf_sessions if not s.closed]
        self._kopf_sessions.append(context.aiohttp_session)
        return context

    async def close(self) -> None:
        """Close what kopf left open: a session it never used (it closes only those it
        used), say when the operator stops right after logging in. The next run of kopf
        (a new leadership term) logs in afresh, without waiting."""
        for session in self._kopf_sessions:
            await session.close()
        self._kopf_sessions.clear()
        self._last_info, self._same_logins = None, 0

    async def _wait_if_unchanged(self, info: kopf.ConnectionInfo) -> None:
        if info != self._last_info:
            self._last_info, self._same_logins = info, 0
            return
        wait = min(RELOGIN_WAIT_FIRST * 2 ** min(self._same_logins, 16), RELOGIN_WAIT_MOST)
        self._same_logins += 1
        log.info("kopf logs in again with unchanged credentials: in %.0f s", wait)
        await self._sleep(wait)


def bounded_session(info: kopf.ConnectionInfo, connections: int) -> kopf.AiohttpSession:
    """What kopf makes of ``info`` (TLS, credentials, proxy), with at most ``connections``
    open at once."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def connect(env: Env = os.environ) -> Login:
    """In-cluster service account first, then KUBECONFIG or ~/.kube/config; through kopf's
    own logins if they can, else through the ``kubernetes`` client."""
    info = in_cluster(env)
    if info is not None:
        return Login(KubeConnection(info, SERVICE_ACCOUNT_TOKEN), lambda: in_cluster(env))
    info = from_kubeconfig(env)
    if info is not None:
        return Login(KubeConnection(info), lambda: from_kubeconfig(env))
    return Login(connection_via_client(env))


def in_cluster(env: Env) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(settings=kopf.OperatorSettings(), logger=log)
    return in_cluster_address(info, env) if info is not None else None


def from_kubeconfig(env: Env) -> kopf.ConnectionInfo | None:
    """The kubeconfig's current context; None if there is none or it needs the
    ``kubernetes`` client."""
    try:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings(), logger=log)
    except Exception as exc:  # what kopf's short parser cannot read, the client may
        # The type only: a YAML error would quote the file, tokens and all.
        log.info("kopf's login cannot read the kubeconfig (%s)", type(exc).__name__)
        return None
    if info is None:
        return None
    needs = client_only_settings(info, current_user(env))
    if needs:
        log.info("The kubeconfig's user needs the kubernetes client: %s", ", ".join(needs))
        return None
    return info


def in_cluster_address(info: kopf.ConnectionInfo, env: Env) -> kopf.ConnectionInfo:
    """The API server's service address as the kubelet passes it (what the ``kubernetes``
    client uses): no DNS lookup of kopf's kubernetes.default.svc needed."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return info
    host = f"[{host}]" if ":" in host else host  # IPv6
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def client_only_settings(info: kopf.ConnectionInfo, user: Mapping[str, Any]) -> list[str]:
    """What kopf's login would silently ignore or misread."""
    needs = [field for field in CLIENT_ONLY_USER_FIELDS if user.get(field)]
    files = (info.ca_path, info.certificate_path, info.private_key_path)
    if any(path and not os.path.isabs(os.fsdecode(path)) for path in files):
        needs.append("a file path relative to the kubeconfig")
    return needs


def current_user(env: Env) -> Mapping[str, Any]:
    """The user of the current context, the kubeconfig files merged as kopf merges them
    (the first file naming a setting wins)."""
    configs = _kubeconfigs(env)
    context = _current_context(configs)
    return _named(configs, "users", context.get("user")).get("user") or {}


@dataclasses.dataclass(frozen=True)
class OwnNamespace:
    """The operator's namespace, and where it was found (for the start-up log line)."""

    name: str
    source: str


def own_namespace(env: Env, service_account_namespace: Path) -> OwnNamespace:
    """The namespace the operator belongs to: ``POD_NAMESPACE`` (the chart sets it), the
    service account's namespace file (any pod), the namespace of the kubeconfig's current
    context (a process run by hand, as kubectl reads it), else ``default``."""
    if env.get("POD_NAMESPACE"):
        return OwnNamespace(env["POD_NAMESPACE"], "POD_NAMESPACE")
    try:
        found = service_account_namespace.read_text().strip()
    except OSError:
        found = ""
    if found:
        return OwnNamespace(found, f"the service account's {service_account_namespace}")
    try:
        context = _current_context(_kubeconfigs(env))
    except Exception as exc:  # an unreadable kubeconfig: the login says so
        log.debug("No namespace from the kubeconfig (%s)", type(exc).__name__)
        context = {}
    namespace = context.get("namespace")
    if isinstance(namespace, str) and namespace:
        return OwnNamespace(namespace, "the kubeconfig's current context")
    return OwnNamespace(
        "default",
        "the default: no POD_NAMESPACE, no service account, no namespace in the kubeconfig's "
        "current context",
    )


def _kubeconfigs(env: Env) -> list[Mapping[str, Any]]:
    paths = (env.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)
    # os.path.expanduser leaves "~" as it is without HOME and passwd entry (the image's uid);
    # Path.expanduser would raise.
    return [_load(Path(os.path.expanduser(path.strip()))) for path in paths if path.strip()]


def _current_context(configs: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    current = next((c["current-context"] for c in configs if c.get("current-context")), None)
    context = _named(configs, "contexts", current).get("context")
    return context if isinstance(context, Mapping) else {}


def _load(path: Path) -> Mapping[str, Any]:
    try:
        found = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        return {}
    return found if isinstance(found, Mapping) else {}


def _named(configs: list[Mapping[str, Any]], kind: str, name: object) -> Mapping[str, Any]:
    for config in configs:
        for item in config.get(kind) or ():
            if isinstance(item, Mapping) and item.get("name") == name:
                return item
    return {}


def connection_via_client(env: Env) -> KubeConnection:
    """The ``kubernetes`` client's own kubeconfig login, plugins included. Its credentials
    are asked for at each request, so the client refreshes them when they expire."""
    log.info(
        "kopf's own logins found no usable credentials: logging in through the kubernetes "
        "client, which costs about 28 MB of memory"
    )
    if "kubernetes" in sys.modules and sys.modules["kubernetes"] is None:
        del sys.modules["kubernetes"]  # the run command's block (cli.py)
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        # The client reads KUBECONFIG when imported: now, when needed, is what counts.
        config_file=env.get("KUBECONFIG") or None,
        client_configuration=configuration,
    )

    def authorization() -> dict[str, str]:
        settings = configuration.auth_settings().values()
        return {
            str(setting["key"]): str(setting["value"])
            for setting in settings
            if setting.get("in") == "header" and setting.get("value")
        }

    info = kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
    )
    return KubeConnection(info, authorization=authorization)
