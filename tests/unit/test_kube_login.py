"""Finding the cluster without the ``kubernetes`` client: the in-cluster service account
first, then the kubeconfig, through kopf's own logins; the client only for kubeconfig users
kopf cannot log in (exec and auth-provider plugins). And ``thingspace-operator run`` never
imports the ``kubernetes`` package unless it must."""

import dataclasses
import datetime
import json
import os
import ssl
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import yaml
from kopf._core.intents import piggybacking

from thingspace_operator.kube import login as login_module
from thingspace_operator.kube.login import Login, client_only_settings, connect

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT = Path(__file__).resolve().parents[2]


def write_kubeconfig(path: Path, user: dict[str, Any], server: str = "https://k8s:6443") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}, {"name": "other", "user": {"token": "no"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def exec_user(token: str) -> dict[str, Any]:
    """An exec credential plugin (as cloud CLIs provide) that prints ``token``."""
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": token},
    }
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
            "interactiveMode": "Never",
        }
    }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No service account, no kubeconfig: each test adds what it needs."""
    service_account = tmp_path / "serviceaccount"
    service_account.mkdir()

    def moved(path: str) -> str:
        return str(path).replace(SERVICE_ACCOUNT_DIR, str(service_account))

    # kopf's login reads fixed paths: point them at the test's directory.
    fake_os = types.SimpleNamespace(
        path=types.SimpleNamespace(
            exists=lambda path: os.path.exists(moved(path)), expanduser=os.path.expanduser
        ),
        environ=os.environ,
        pathsep=os.pathsep,
    )

    def moved_open(path: str, *args: Any, **kwargs: Any) -> Any:
        return open(moved(path), *args, **kwargs)

    monkeypatch.setattr(piggybacking, "os", fake_os)
    monkeypatch.setattr(piggybacking, "open", moved_open, raising=False)
    monkeypatch.setattr(login_module, "SERVICE_ACCOUNT_TOKEN", service_account / "token")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return {"service_account": str(service_account)}


def test_the_service_account_comes_before_the_kubeconfig(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(env["service_account"], "token").write_text("sa-token\n")
    Path(env["service_account"], "namespace").write_text("ops\n")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"token": "kubeconfig-token"})
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    pod_env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    login = connect(pod_env)
    assert login.connection.headers()["Authorization"] == "Bearer sa-token"
    assert login.connection.url("/api") == "https://10.96.0.1:443/api"  # as the kubelet says
    assert login.connection._token_file == Path(env["service_account"], "token")
    assert login.connection.info.default_namespace == "ops"
    # kopf re-logs in (after a 401): the token is read again, for both.
    Path(env["service_account"], "token").write_text("rotated\n")
    assert login().token == "rotated"
    assert login.connection.headers()["Authorization"] == "Bearer rotated"


def test_without_the_service_address_kopf_s_service_name_is_used(env: dict[str, str]) -> None:
    Path(env["service_account"], "token").write_text("sa-token")
    assert connect({}).connection.url("/api") == "https://kubernetes.default.svc/api"


def test_the_kubeconfig_s_current_context_without_the_client(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"token": "one"})
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(login_module, "connection_via_client", pytest.fail)
    login = connect()
    assert login.connection.headers()["Authorization"] == "Bearer one"
    assert login.connection.url("/api") == "https://k8s:6443/api"
    write_kubeconfig(kubeconfig, {"username": "admin", "password": "pw"})  # edited meanwhile
    info = login()
    assert (info.username, info.password) == ("admin", "pw")
    assert login.connection.headers()["Authorization"].startswith("Basic ")


def test_an_exec_plugin_falls_back_to_the_kubernetes_client(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", exec_user("from-plugin"))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # kopf's kubeconfig login ignores ``exec``: it would connect with no credentials at all.
    ignored = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert ignored is not None
    assert ignored.as_http_headers() == {}
    login = connect()
    assert login.connection.headers()["authorization"] == "Bearer from-plugin"
    assert login().token == "from-plugin"  # what kopf uses
    assert login.connection.url("/api") == "https://k8s:6443/api"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"token": "t"}, []),
        ({"exec": {"command": "aws"}}, ["exec"]),
        ({"auth-provider": {"name": "oidc", "config": {"access-token": "old"}}}, ["auth-provider"]),
        ({"tokenFile": "/tmp/token"}, ["tokenFile"]),
    ],
)
def test_users_only_the_client_can_log_in(user: dict[str, Any], expected: list[str]) -> None:
    info = kopf.ConnectionInfo(server="https://k8s")
    assert client_only_settings(info, user) == expected


def test_files_named_relative_to_the_kubeconfig_need_the_client() -> None:
    info = kopf.ConnectionInfo(server="https://k8s", ca_path="certs/ca.crt")
    assert client_only_settings(info, {}) == ["a file path relative to the kubeconfig"]


def test_a_login_handler_of_the_client_keeps_the_client_s_credentials() -> None:
    connection = login_module.KubeConnection(
        kopf.ConnectionInfo(server="https://k8s"),
        authorization=lambda: {"authorization": "Bearer fresh"},
    )
    assert Login(connection)().token == "fresh"


RUN_UNTIL_KOPF_STARTS = textwrap.dedent(
    """
    import asyncio, json, sys
    from thingspace_operator import cli

    def stop_before_running(coroutine):  # the operator would start running here
        coroutine.close()

    asyncio.run = stop_before_running
    cli.operator_main(["run"])
    loaded = [name for name, module in sys.modules.items()
              if name.split(".")[0] == "kubernetes" and module is not None]
    print(json.dumps({"kopf": "kopf" in sys.modules, "kubernetes": len(loaded)}))
    """
)


def run_command_imports(kubeconfig: Path, tmp_path: Path) -> dict[str, Any]:
    """What ``thingspace-operator run`` has imported when the operator would start."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
        "THINGSPACE_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_UNTIL_KOPF_STARTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_run_command_never_imports_the_kubernetes_package(tmp_path: Path) -> None:
    if Path(SERVICE_ACCOUNT_DIR, "token").exists():
        pytest.skip("runs in a pod: the service account would be used")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"token": "t"})
    assert run_command_imports(kubeconfig, tmp_path) == {"kopf": True, "kubernetes": 0}


def test_the_run_command_imports_it_when_only_the_client_can_log_in(tmp_path: Path) -> None:
    if Path(SERVICE_ACCOUNT_DIR, "token").exists():
        pytest.skip("runs in a pod: the service account would be used")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", exec_user("t"))
    imported = run_command_imports(kubeconfig, tmp_path)
    assert imported["kopf"]
    assert imported["kubernetes"] > 0


async def test_kopf_logs_in_with_a_bounded_pool_and_the_same_credentials() -> None:
    """kopf's own pool has no limit; a burst of new resources opened hundreds of
    connections to the API server at once."""
    expires = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    info = kopf.ConnectionInfo(
        server="https://k8s:6443",
        scheme="Bearer",
        token="t0ken",
        default_namespace="ops",
        insecure=True,
        trust_env=True,
        priority=7,
        expiration=expires,
    )
    login = Login(login_module.KubeConnection(info))
    context = await login.kopf_session(watch_streams=3)
    session = context.aiohttp_session
    try:
        assert isinstance(session.connector, aiohttp.TCPConnector)
        assert session.connector.limit == login_module.KOPF_CONNECTIONS + 3
        assert session.connector._ssl.verify_mode == ssl.CERT_NONE  # insecure, as asked
        assert session.headers["Authorization"] == "Bearer t0ken"
        assert session.trust_env
        assert (context.server, context.default_namespace) == ("https://k8s:6443", "ops")
        assert (context.priority, context.expiration) == (7, expires)
    finally:
        await login.close()  # kopf closes only the sessions it used
    assert session.closed


async def test_a_login_with_unchanged_credentials_waits_longer_each_time() -> None:
    """kopf refuses credentials equal to those it gave up after a 401, but a session never
    equals another: without a wait, a revoked token would be tried again in a hot loop."""
    info = kopf.ConnectionInfo(server="https://k8s", token="revoked")
    login = Login(login_module.KubeConnection(info))
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    login._sleep = record
    for _ in range(8):
        await login.kopf_session(watch_streams=1)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    login.connection.update(dataclasses.replace(info, token="rotated"))
    await login.kopf_session(watch_streams=1)
    await login.close()  # and a new leadership term logs in afresh
    await login.kopf_session(watch_streams=1)
    assert len(waits) == 7  # neither new credentials nor a new term waited
    login._same_logins = 10_000  # a token revoked for days: still 30 s, no overflow
    await login.kopf_session(watch_streams=1)
    await login.close()
    assert waits[7:] == [30]
