"""Error classification, secret parsing and settings: the pure parts around the edges."""

import asyncio
import base64
import re
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import eventually
from thingspace_operator.cli import build_parser, run_config
from thingspace_operator.config import OperatorConfig
from thingspace_operator.kube.connection import KubeApiError
from thingspace_operator.kube.secrets import (
    CredentialsInvalid,
    CredentialsNotFound,
    SecretReader,
    app_credentials_from,
    callback_credentials_from,
    decode_secret_data,
)
from thingspace_operator.reconciler import failure_outcome
from thingspace_operator.thingspace.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    ThingSpaceError,
    Unavailable,
)
from thingspace_operator.thingspace.http import (
    MAX_MESSAGE_LENGTH,
    BearerRejected,
    SessionHeaders,
    SessionRejected,
    ThingSpaceHTTP,
    classify_failure,
    parse_retry_after,
)
from thingspace_operator.thingspace.models import Callback, display_url

FAULT_901 = {"fault": {"code": "900901", "message": "Invalid Credentials"}}
THROTTLED = {"fault": {"code": "900800", "message": "Message throttled out"}}


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "kind"),
    [
        ("token", 401, {"error": "invalid_client"}, AuthenticationFailed),
        ("token", 400, {"error": "invalid_request"}, AuthenticationFailed),
        (
            "login",
            400,
            {"errorCode": "UnifiedWebService.INPUT_INVALID.Password.Invalid"},
            AuthenticationFailed,
        ),
        ("login", 401, FAULT_901, BearerRejected),
        ("list", 401, FAULT_901, BearerRejected),
        (
            "list",
            400,
            {"errorCode": "UnifiedWebService.REQUEST_FAILED.SessionToken.Expired"},
            SessionRejected,
        ),
        (
            "list",
            400,
            {"errorCode": "UnifiedWebService.INPUT_INVALID.SessionToken.Invalid"},
            SessionRejected,
        ),
        (
            "register",
            400,
            {"errorCode": "UnifiedWebService.REQUEST_FAILED.SessionToken.Format"},
            SessionRejected,
        ),
        (
            "register",
            400,
            {"errorCode": "X.INPUT_INVALID.Url.Invalid", "errorMessage": "bad"},
            RequestRejected,
        ),
        ("register", 429, THROTTLED, RateLimited),
        ("register", 503, THROTTLED, RateLimited),
        ("register", 503, None, Unavailable),
        ("list", 504, "<html>gateway timeout</html>", Unavailable),
        ("deregister", 404, "not found", RequestRejected),
    ],
)
def test_classify_failure(endpoint: str, status: int, body: object, kind: type) -> None:
    assert type(classify_failure(endpoint, status, body, str(body), None)) is kind


def test_error_messages_are_scrubbed() -> None:
    body = {"errorCode": "X.INPUT_INVALID.Password", "errorMessage": "password hunter2 is bad"}
    error = classify_failure("register", 400, body, "", None, ("hunter2",))
    assert "hunter2" not in str(error)
    assert isinstance(error, RequestRejected)
    assert error.error_code == "X.INPUT_INVALID.Password"


@pytest.mark.parametrize("endpoint", ["login", "register"])
@pytest.mark.parametrize("cut", [3, 5, 8])
def test_a_secret_across_the_message_length_limit_is_not_leaked_in_part(
    endpoint: str, cut: int
) -> None:
    """A plain-text answer is cut to the message limit: scrubbing after the cut would miss
    a secret that straddles it, and leave its first characters in the message."""
    secret = "Zq9-hunter2-pa55"
    text = "x" * (MAX_MESSAGE_LENGTH - cut) + secret + " echoed back"
    error = classify_failure(endpoint, 400, None, text, None, (secret,))
    assert secret[:cut] not in str(error)


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None)]
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_http_date_is_in_the_future() -> None:
    assert parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") > 0  # type: ignore[operator]


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_secret_values_are_decoded_and_trailing_newlines_dropped() -> None:
    data = decode_secret_data(
        {
            "appKey": _b64("k"),
            "appSecret": _b64("sekrit\n"),
            "username": _b64("u"),
            "password": _b64(" pw "),
        },
        "ns/s",
    )
    creds = app_credentials_from(data, "ns/s")
    assert (creds.app_key, creds.app_secret, creds.username, creds.password) == (
        "k",
        "sekrit",
        "u",
        " pw ",
    )
    assert "sekrit" not in repr(creds)
    assert " pw " not in repr(creds)


def test_undecodable_secret_value_names_the_key_only() -> None:
    with pytest.raises(CredentialsInvalid, match="'password'"):
        decode_secret_data({"password": "%%%not-base64"}, "ns/s")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": "u"}, "lacks key(s) password"),
        ({"username": "u", "password": "  "}, "empty key(s) password"),
        ({"username": "u" * 41, "password": "p"}, "username exceed"),
    ],
)
def test_callback_credentials_rules(data: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsInvalid, match=re.escape(message)):
        callback_credentials_from(data, "ns/cb")


def test_callback_credentials_at_the_limit_are_fine() -> None:
    assert callback_credentials_from({"username": "u" * 40, "password": "p" * 40}, "ns/cb")


def test_display_url_drops_userinfo() -> None:
    assert display_url("https://user:pw@host.example/x?y=1") == "https://host.example/x?y=1"
    assert display_url("https://host.example/x") == "https://host.example/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://a]b/x", "https://a]b/x"),
        ("https://[::1/x", "https://[::1/x"),
        ("https://user:pw@[::1/x?y#z", "https://[::1/x?y#z"),
        ("https://user:pw@a]b", "https://a]b"),
    ],
)
def test_display_url_of_a_url_python_cannot_split_still_drops_userinfo(
    url: str, shown: str
) -> None:
    """The CRD's pattern admits them; one such URL must not break status, export or
    `kubectl thingspace status` for everyone."""
    assert display_url(url) == shown


async def echo_everything(request: web.Request) -> web.Response:
    """A server that quotes back all it was sent, credentials included, in a 400."""
    authorization = request.headers.get("Authorization", "")
    basic = authorization.startswith("Basic ")
    sent = base64.b64decode(authorization[6:]).decode() if basic else authorization
    text = await request.text()
    echoed = f"bad request: {sent} {text}"
    return web.json_response({"error": "invalid", "error_description": echoed}, status=400)


async def test_no_credential_is_echoed_back_from_any_call_that_sends_one() -> None:
    """The token call's app secret, the login's password, a register's callback password:
    a ThingSpace error that quotes its input must not carry them into messages."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", echo_everything)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        http = ThingSpaceHTTP(str(server.make_url("")), session, timeout_seconds=2.0)
        failures = []
        for call in (
            http.fetch_token("app-key", "Zq9-app-secret"),
            http.login("bearer", "user", "Zq9-uws-password"),
            http.register(
                SessionHeaders("t", "s"),
                Callback("1-2", "QoS", "https://l.example/q", "cb-user", "Zq9-cb-password"),
            ),
        ):
            with pytest.raises(ThingSpaceError) as caught:
                await call
            failures.append(str(caught.value))
    assert all("bad request" in text for text in failures)  # the server did quote its input
    assert not [text for text in failures if "Zq9" in text]


async def test_a_password_in_the_listener_url_is_scrubbed_from_register_errors() -> None:
    """ThingSpace may quote the URL it refused; its user:password@ stays out of the
    condition, as written and percent-decoded."""

    async def refuse(request: web.Request) -> web.Response:
        echoed = (await request.json())["url"]
        return web.json_response({"error": "bad url", "error_description": echoed}, status=400)

    app = web.Application()
    app.router.add_post("/api/m2m/v1/callbacks/{account}", refuse)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        http = ThingSpaceHTTP(str(server.make_url("")), session, timeout_seconds=2.0)
        url = "https://listener:p%40ss-Zq9@host.example/q"
        with pytest.raises(RequestRejected) as caught:
            await http.register(SessionHeaders("t", "s"), Callback("1-2", "QoS", url))
    assert "Zq9" not in str(caught.value)
    assert "host.example/q" in str(caught.value)


def test_unexpected_errors_do_not_echo_their_text() -> None:
    outcome = failure_outcome(RuntimeError("boom with s3cret inside"))
    assert "s3cret" not in outcome.synced.message
    assert outcome.transient


def test_settings_from_environment_and_flags() -> None:
    config = OperatorConfig.from_env(
        {
            "THINGSPACE_RESYNC_SECONDS": "42",
            "THINGSPACE_NAMESPACES": "a, b",
            "THINGSPACE_API_URL": "http://sim:8088",
        },
        resync_seconds=7.0,
    )
    assert (config.resync_seconds, config.namespaces, config.api_url) == (
        7.0,
        ("a", "b"),
        "http://sim:8088",
    )


@pytest.mark.parametrize(
    ("flags", "namespaces"),
    [
        ([], ("iot", "billing")),
        (["--all-namespaces"], ()),
        (["-A"], ()),
        (["--namespace", "edge", "-n", "lab"], ("edge", "lab")),
    ],
)
def test_namespace_flags_override_the_environment(
    flags: list[str], namespaces: tuple[str, ...]
) -> None:
    args = build_parser().parse_args(["run", *flags])
    config = run_config(args, {"THINGSPACE_NAMESPACES": "iot,billing"})
    assert config.namespaces == namespaces


@pytest.mark.parametrize(
    "env",
    [
        {"THINGSPACE_RESYNC_SECONDS": "soon"},
        {"THINGSPACE_RESYNC_SECONDS": "0"},
        {"THINGSPACE_API_URL": "ftp://x"},
        {"THINGSPACE_LOG_FORMAT": "xml"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"THINGSPACE|must"):
        OperatorConfig.from_env(env)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    from thingspace_operator.handlers import backoff

    config = OperatorConfig(retry_base_seconds=1.0, retry_max_seconds=30.0)
    for retry in range(12):
        ceiling = min(30.0, 2.0**retry)
        delays = [backoff(retry, config) for _ in range(50)]
        assert all(0.5 <= d <= max(ceiling, 0.5) for d in delays)
    assert len({round(backoff(6, config), 3) for _ in range(20)}) > 1  # jittered


async def test_secret_reader_serves_known_secrets_and_keeps_the_newest() -> None:
    from thingspace_operator.kube.secrets import SecretReader

    reader = SecretReader(connection=None)  # type: ignore[arg-type]  # never called here
    reader.remember("ns", "s", "7", {"password": _b64("new")})
    reader.remember("ns", "s", "5", {"password": _b64("old")})  # an older read arriving late
    assert await reader.read("ns", "s") == {"password": "new"}
    reader.remember("ns", "s", "9", {"password": _b64("newer")})
    assert await reader.read("ns", "s") == {"password": "newer"}
    reader.forget("ns", "s")
    assert not reader.knows("ns", "s")


class _StubConnection:
    """The API server's answer to a GET of one Secret, given by the test, counting reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()
        self.status: int | None = None

    async def get_json(self, path: str) -> Any:
        assert path == "/api/v1/namespaces/ns/secrets/s"
        self.reads += 1
        number = self.reads
        await self.release.wait()
        if self.status is not None:
            raise KubeApiError(self.status)
        return {
            "metadata": {"name": "s", "resourceVersion": str(number)},
            "data": {"password": _b64(f"read-{number}")},
        }


async def test_secret_reads_are_shared_only_when_fresh_enough() -> None:
    core = _StubConnection()
    reader = SecretReader(core)  # type: ignore[arg-type]
    first = asyncio.ensure_future(reader.read("ns", "s"))
    await eventually(lambda: core.reads == 1, what="the first read in flight")
    joined = asyncio.ensure_future(reader.read("ns", "s"))
    newer = asyncio.ensure_future(reader.read("ns", "s", fresh_after=time.monotonic()))
    await eventually(lambda: core.reads == 2, what="the newer read in flight")
    core.release.set()
    results = await asyncio.gather(first, joined, newer)
    assert core.reads == 2  # the newer read did not settle for the one already in flight
    assert results[2] == {"password": "read-2"}
    # The first two shared one read; it answers with the newest data known when it ends
    # (read-2 when the newer GET happened to finish first).
    assert results[0] == results[1]


async def test_a_secret_the_operator_may_no_longer_read_is_forgotten() -> None:
    core = _StubConnection()
    reader = SecretReader(core)  # type: ignore[arg-type]
    core.release.set()
    await reader.read("ns", "s")
    core.status = 403
    with pytest.raises(CredentialsNotFound, match="403"):
        await reader.read("ns", "s", fresh_after=time.monotonic())
    assert not reader.knows("ns", "s")


async def test_a_missing_secret_costs_one_read_per_period_however_many_wait() -> None:
    """A drift period's checks of many resources waiting on one missing Secret share the
    read that found it missing; a later period reads again."""
    core = _StubConnection()
    reader = SecretReader(core)  # type: ignore[arg-type]
    core.release.set()
    core.status = 404
    period_start = time.monotonic()
    for _ in range(5):
        with pytest.raises(CredentialsNotFound, match="not found"):
            await reader.read("ns", "s", fresh_after=period_start)
    assert core.reads == 1
    with pytest.raises(CredentialsNotFound):
        await reader.read("ns", "s", fresh_after=time.monotonic())  # the next period
    assert core.reads == 2
    core.status = None
    assert await reader.read("ns", "s")  # a handler always reads: it is there now
