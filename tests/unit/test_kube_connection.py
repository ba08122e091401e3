"""The operator's own requests to the Kubernetes API, without the ``kubernetes`` client:
credentials and TLS from a ``kopf.ConnectionInfo``, a rotated service-account token, and
how each reader maps the API server's error statuses."""

import base64
import shutil
import ssl
import subprocess
import time
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web

from thingspace_operator.kube import connection as connection_module
from thingspace_operator.kube.connection import KubeApiError, KubeConnection
from thingspace_operator.kube.namespaces import NamespaceLabels
from thingspace_operator.kube.resources import CallbackResources
from thingspace_operator.kube.secrets import CredentialsNotFound, SecretReader

SECRET_VALUE = "hunter2-never-shown"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_token_is_sent_as_a_bearer_token() -> None:
    connection = KubeConnection(kopf.ConnectionInfo(server="https://k8s:6443/", token="t0k"))
    assert connection.headers()["Authorization"] == "Bearer t0k"
    assert connection.url("/api/v1/secrets") == "https://k8s:6443/api/v1/secrets"


def test_a_user_and_password_are_sent_as_basic_auth() -> None:
    info = kopf.ConnectionInfo(server="http://k8s", username="admin", password="pw")
    headers = KubeConnection(info).headers()
    assert headers["Authorization"] == "Basic " + _b64("admin:pw")
    assert headers["Accept"] == "application/json"


def test_no_credentials_no_authorization() -> None:
    assert "Authorization" not in KubeConnection(kopf.ConnectionInfo(server="http://k8s")).headers()


def test_a_rotated_service_account_token_is_read_again_within_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(
        connection_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0])
    )
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    info = kopf.ConnectionInfo(server="https://k8s", token="first")
    connection = KubeConnection(info, token_file=token_file)
    token_file.write_text("second\n")  # the kubelet rotated it
    clock[0] += 30
    assert connection.headers()["Authorization"] == "Bearer first"  # not read on every request
    clock[0] += 31
    assert connection.headers()["Authorization"] == "Bearer second"
    assert connection.connection_info().token == "second"  # kopf gets it too when it logs in
    token_file.unlink()  # mid-rotation: the token read last stays in use
    clock[0] += 61
    assert connection.headers()["Authorization"] == "Bearer second"


def test_credentials_only_the_client_produces_are_asked_for_at_each_request() -> None:
    tokens = iter(["one", "two"])
    connection = KubeConnection(
        kopf.ConnectionInfo(server="https://k8s"),
        authorization=lambda: {"authorization": f"Bearer {next(tokens)}"},
    )
    assert connection.headers()["authorization"] == "Bearer one"
    info = connection.connection_info()
    assert (info.scheme, info.token) == ("Bearer", "two")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: the server's, its CA, and (for
    brevity) the client's too."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@asynccontextmanager
async def api_server(
    routes: dict[str, Callable[[web.Request], Any]], tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_tls_with_the_kubeconfig_s_ca_and_client_certificate_data(
    certificate: tuple[Path, Path],
) -> None:
    """kubeconfigs carry certificates base64-encoded in ``*-data`` fields."""
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert))
    tls.load_cert_chain(cert, key)
    tls.verify_mode = ssl.CERT_REQUIRED  # the client must show its certificate

    async def namespace(_: web.Request) -> web.Response:
        return web.json_response({"metadata": {"name": "iot", "labels": {"team": "a"}}})

    async with api_server({"/api/v1/namespaces/iot": namespace}, tls) as url:
        data = {
            "ca_data": base64.b64encode(cert.read_bytes()).decode(),
            "certificate_data": base64.b64encode(cert.read_bytes()).decode(),
            "private_key_data": base64.b64encode(key.read_bytes()).decode(),
        }
        connection = KubeConnection(kopf.ConnectionInfo(server=url, **data))
        try:
            assert await NamespaceLabels(connection).labels("iot") == {"team": "a"}
        finally:
            await connection.close()

        untrusting = KubeConnection(kopf.ConnectionInfo(server=url))
        try:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await untrusting.get_json("/api/v1/namespaces/iot")
        finally:
            await untrusting.close()


def _answer(status: int, body: dict[str, Any] | None = None) -> Callable[[web.Request], Any]:
    async def handler(_: web.Request) -> web.Response:
        # An error body that quotes a value must never reach a message.
        return web.json_response(body or {"message": SECRET_VALUE}, status=status)

    return handler


SECRET = {
    "metadata": {
        "name": "creds",
        "resourceVersion": "42",
        "labels": {"thingspace.io/credentials": "true"},
    },
    "data": {"username": _b64("u"), "password": _b64(SECRET_VALUE)},
}


async def test_secret_reads_map_the_api_server_s_answers() -> None:
    routes = {
        "/api/v1/namespaces/iot/secrets/creds": _answer(200, SECRET),
        "/api/v1/namespaces/iot/secrets/gone": _answer(404),
        "/api/v1/namespaces/iot/secrets/forbidden": _answer(403),
        "/api/v1/namespaces/iot/secrets/broken": _answer(500),
    }
    async with api_server(routes) as url:
        connection = KubeConnection(kopf.ConnectionInfo(server=url, token="t"))
        reader = SecretReader(connection)
        watch_at = "43"  # the watch delivered a newer version while the read was on the way
        reader.tracked = lambda key, version: key == ("iot", "creds") and version == watch_at
        try:
            assert await reader.read("iot", "creds") == {"username": "u", "password": SECRET_VALUE}
            assert reader.unwatched() == [("iot", "creds")]  # read again, not kept as watched
            watch_at = "42"
            assert await reader.read("iot", "creds", fresh_after=time.monotonic())
            assert reader.unwatched() == []  # labelled and followed by the watch
            with pytest.raises(CredentialsNotFound, match="Secret iot/gone not found"):
                await reader.read("iot", "gone")
            with pytest.raises(CredentialsNotFound, match="may not read Secret iot/forbidden"):
                await reader.read("iot", "forbidden")
            with pytest.raises(KubeApiError) as raised:
                await reader.read("iot", "broken")
        finally:
            await connection.close()
    assert raised.value.status == 500
    assert SECRET_VALUE not in str(raised.value)


async def test_namespace_labels_and_discovery_map_the_api_server_s_answers() -> None:
    discovery = {"resources": [{"name": "thingspacecallbacks"}, {"name": "other"}]}
    routes = {
        "/api/v1/namespaces/labelled": _answer(200, {"metadata": {"labels": {"env": "prod"}}}),
        "/api/v1/namespaces/bare": _answer(200, {"metadata": {"name": "bare"}}),
        "/api/v1/namespaces/gone": _answer(404),
        "/api/v1/namespaces/forbidden": _answer(403),
        "/apis/thingspace.io/v1alpha1": _answer(200, discovery),
    }
    async with api_server(routes) as url:
        connection = KubeConnection(kopf.ConnectionInfo(server=url))
        labels = NamespaceLabels(connection)
        resources = CallbackResources(connection)
        try:
            assert await labels.labels("labelled") == {"env": "prod"}
            assert await labels.labels("bare") == {}
            assert await labels.labels("gone") == {}
            with pytest.raises(KubeApiError, match="HTTP 403"):
                await labels.labels("forbidden")
            assert await resources.served()
        finally:
            await resources.close()
            await connection.close()


async def test_an_unserved_group_means_the_crd_is_not_installed() -> None:
    async with api_server({"/apis/other/v1": _answer(200, {"resources": []})}) as url:
        connection = KubeConnection(kopf.ConnectionInfo(server=url))
        try:
            assert not await CallbackResources(connection).served()
        finally:
            await connection.close()
