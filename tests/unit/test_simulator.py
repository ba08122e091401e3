"""thingspace-sim over real HTTP: documented shapes, auth rules, validation, /_sim/."""

import base64
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.controlplane import free_port
from tests.simctl import SimControl
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer, cli
from thingspace_operator.simulator.state import DEMO_APPS, DEMO_USERS, LIVE_SETTINGS

ACCOUNT = "0000123456-00001"
BASIC = "Basic " + base64.b64encode(b"demo-app-key:demo-app-secret").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(), clock=clock) as server:
        yield server


class Api:
    """A raw HTTP caller that keeps the tokens it was given."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.bearer = self.session = ""

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as r:
            text = await r.text()
            return r.status, (await r.json() if text else None), r

    async def token(self, auth: str = BASIC, grant: str = "client_credentials") -> Any:
        return await self.call(
            "POST",
            "/api/ts/v1/oauth2/token",
            headers={"Authorization": auth},
            data={"grant_type": grant},
        )

    async def login(self, username: str = "demo-user", password: str = "demo-password") -> Any:
        if not self.bearer:
            self.bearer = (await self.token())[1]["access_token"]
        return await self.call(
            "POST",
            "/api/m2m/v1/session/login",
            headers={"Authorization": f"Bearer {self.bearer}"},
            json={"username": username, "password": password},
        )

    async def m2m(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.session:
            self.session = (await self.login())[1]["sessionToken"]
        headers = {"Authorization": f"Bearer {self.bearer}", "VZ-M2M-Token": self.session}
        return await self.call(method, "/api/m2m/v1" + path, headers=headers, **kwargs)


@pytest.fixture
async def api(sim: SimulatorServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, sim.url)


def code(body: Any) -> str:
    return body.get("errorCode") or body.get("fault", {}).get("code") or body.get("error")


# --- OAuth -------------------------------------------------------------------------------


async def test_token_is_reissued_within_the_hour_and_renewed_after(api: Api, clock: Clock) -> None:
    status, first, _ = await api.token()
    assert status == 200
    assert (first["token_type"], first["expires_in"]) == ("Bearer", 3600)
    clock.now += 1800
    second = (await api.token())[1]
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 1800
    clock.now += 1801
    assert (await api.token())[1]["access_token"] != first["access_token"]


@pytest.mark.parametrize(
    ("auth", "grant", "status", "error"),
    [
        ("", "client_credentials", 401, "900902"),
        (
            "Basic " + base64.b64encode(b"demo-app-key:nope").decode(),
            "client_credentials",
            401,
            "invalid_client",
        ),
        (BASIC, "password", 400, "invalid_request"),
    ],
)
async def test_token_errors(api: Api, auth: str, grant: str, status: int, error: str) -> None:
    got_status, body, _ = await api.token(auth, grant)
    assert (got_status, code(body)) == (status, error)


async def test_bearer_missing_invalid_and_expired(api: Api, clock: Clock) -> None:
    path = "/api/m2m/v1/session/login"
    assert code((await api.call("POST", path, json={}))[1]) == "900902"
    bad = {"Authorization": "Bearer nope"}
    assert (await api.call("POST", path, headers=bad, json={}))[:2][0] == 401
    await api.login()
    clock.now += 3601
    status, body, _ = await api.login()
    assert (status, code(body)) == (401, "900901")


# --- sessions ----------------------------------------------------------------------------


async def test_login_lockout_after_five_failures(api: Api, sim: SimulatorServer) -> None:
    for _ in range(5):
        status, body, _ = await api.login(password="wrong")
        assert (status, code(body)) == (400, "UnifiedWebService.INPUT_INVALID.Password.Invalid")
        assert "wrong" not in str(body)
    status, body, _ = await api.login()
    assert code(body) == "UnifiedWebService.REQUEST_FAILED.User.Locked"
    assert (await SimControl(sim.url).request("GET", "logins"))["locked"] == ["demo-user"]


async def test_success_resets_the_failure_count(api: Api, sim: SimulatorServer) -> None:
    for _ in range(4):
        await api.login(password="wrong")
    assert (await api.login())[0] == 200
    assert (await SimControl(sim.url).request("GET", "logins"))["failed"] == {}


async def test_session_token_errors(api: Api, clock: Clock) -> None:
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    auth = {"Authorization": f"Bearer {api.bearer}"}
    path = f"/api/m2m/v1/callbacks/{ACCOUNT}"
    missing = (await api.call("GET", path, headers=auth))[1]
    assert code(missing).endswith("SessionToken.Format")
    invalid = (await api.call("GET", path, headers={**auth, "VZ-M2M-Token": "x"}))[1]
    assert code(invalid).endswith("SessionToken.Invalid")
    clock.now += 1199  # used within 20 minutes: still alive, and the idle timer restarts
    assert (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[0] == 200
    clock.now += 1201
    status, body, _ = await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    assert (status, code(body)) == (400, "UnifiedWebService.REQUEST_FAILED.SessionToken.Expired")


async def test_logout_echoes_and_ends_the_session(api: Api) -> None:
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    status, body, _ = await api.m2m("POST", "/session/logout")
    assert (status, body) == (200, {"sessionToken": api.session})
    assert code((await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]).endswith("Expired")


# --- callbacks ---------------------------------------------------------------------------


async def test_register_list_deregister_shapes(api: Api) -> None:
    assert (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1] == []
    body = {"name": "DeviceUsage", "url": "https://l.example/u", "username": "u", "password": "p"}
    status, result, _ = await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=body)
    assert (status, result) == (200, {"accountName": ACCOUNT, "serviceName": "DeviceUsage"})
    await api.m2m("POST", f"/callbacks/{ACCOUNT}", json={"name": "QoS", "url": "https://l/q"})
    listed = (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]
    assert listed == [
        {
            "accountName": ACCOUNT,
            "serviceName": "DeviceUsage",
            "url": "https://l.example/u",
            "username": "u",
            "password": "p",
        },
        {"accountName": ACCOUNT, "serviceName": "QoS", "url": "https://l/q"},
    ]
    status, result, _ = await api.m2m("DELETE", f"/callbacks/{ACCOUNT}/name/QoS")
    assert (status, result) == (200, {"accountName": ACCOUNT, "serviceName": "QoS"})
    again = await api.m2m("DELETE", f"/callbacks/{ACCOUNT}/name/QoS")
    assert (again[0], code(again[1])) == (
        400,
        "UnifiedWebService.REQUEST_FAILED.Callback.NotRegistered",
    )


async def test_registering_again_replaces(api: Api) -> None:
    for url in ("https://a/1", "https://b/2"):
        await api.m2m("POST", f"/callbacks/{ACCOUNT}", json={"name": "QoS", "url": url})
    assert [c["url"] for c in (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]] == ["https://b/2"]


LONG = "x" * 41


@pytest.mark.parametrize(
    ("account", "body", "error"),
    [
        ("12 34", {"name": "QoS", "url": "https://l/q"}, "INPUT_INVALID.Account.NotDefined"),
        (ACCOUNT, {"url": "https://l/q"}, "INPUT_INVALID.RequestUndefined"),
        (ACCOUNT, {"name": "QoS"}, "INPUT_INVALID.RequestUndefined"),
        (ACCOUNT, {"name": "Nope", "url": "https://l/q"}, "INPUT_INVALID.ServiceName.Invalid"),
        (ACCOUNT, {"name": "QoS", "url": "ftp://l/q"}, "INPUT_INVALID.Url.Invalid"),
        (ACCOUNT, {"name": "QoS", "url": "https://"}, "INPUT_INVALID.Url.Invalid"),
        (ACCOUNT, {"name": "QoS", "url": "https://l:8443/q"}, "INPUT_INVALID.Url.PortNotAllowed"),
        (
            ACCOUNT,
            {"name": "QoS", "url": "https://l/q", "username": LONG},
            "INPUT_INVALID.Username.TooLong",
        ),
        (
            ACCOUNT,
            {"name": "QoS", "url": "https://l/q", "password": LONG},
            "INPUT_INVALID.Password.TooLong",
        ),
    ],
)
async def test_register_validation(
    api: Api, account: str, body: dict[str, str], error: str
) -> None:
    status, result, _ = await api.m2m(
        "POST", f"/callbacks/{account.replace(' ', '%20')}", json=body
    )
    assert (status, code(result)) == (400, f"UnifiedWebService.{error}")
    assert LONG not in str(result)


async def test_allowed_ports_are_accepted(api: Api) -> None:
    for port in (80, 443, 9001, 50559, 28220):
        body = {"name": "QoS", "url": f"http://l:{port}/q"}
        assert (await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=body))[0] == 200


async def test_listener_port_rule_follows_thingspace_unless_turned_off(
    api: Api, sim: SimulatorServer
) -> None:
    body = {"name": "QoS", "url": "http://127.0.0.1:38123/hook"}
    status, result, _ = await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=body)
    assert (status, code(result)) == (400, "UnifiedWebService.INPUT_INVALID.Url.PortNotAllowed")
    assert "80, 443, 9001-9006" in result["errorMessage"]
    assert "--allow-any-listener-port" in result["errorMessage"]
    await SimControl(sim.url).request("PUT", "config", {"enforce_listener_ports": False})
    assert (await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=body))[0] == 200
    listed = (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]
    assert [item["url"] for item in listed] == ["http://127.0.0.1:38123/hook"]


async def test_restricted_accounts_reject_unknown_ones(clock: Clock) -> None:
    config = SimulatorConfig(accounts=frozenset({"TestAccount-2"}))
    async with SimulatorServer(config, clock=clock) as server, aiohttp.ClientSession() as http:
        api = Api(http, server.url)
        assert (await api.m2m("GET", "/callbacks/TestAccount-2"))[0] == 200
        status, body, _ = await api.m2m("GET", f"/callbacks/{ACCOUNT}")
        assert (status, code(body)) == (400, "UnifiedWebService.REQUEST_FAILED.AccountNotFound")


async def test_reject_duplicates_and_empty_body_modes(api: Api, sim: SimulatorServer) -> None:
    ctl = SimControl(sim.url)
    await ctl.request("PUT", "config", {"duplicate_register": "reject", "empty_list_body": "empty"})
    status, body, response = await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    assert (status, body, response.content_length) == (200, None, 0)
    qos = {"name": "QoS", "url": "https://l/q"}
    await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=qos)
    status, body, _ = await api.m2m("POST", f"/callbacks/{ACCOUNT}", json=qos)
    assert code(body).endswith("Callback.AlreadyRegistered")


async def test_unknown_api_path_is_a_gateway_fault(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/m2m/v1/nothing")
    assert (status, code(body)) == (400, "900906")


# --- /_sim/ ------------------------------------------------------------------------------


async def test_out_of_band_registrations(api: Api, sim: SimulatorServer) -> None:
    ctl = SimControl(sim.url)
    await ctl.set_registration(ACCOUNT, "QoS", url="https://oob/q", password="secret")
    assert await ctl.registrations() == {
        ACCOUNT: [{"serviceName": "QoS", "url": "https://oob/q", "password": "secret"}]
    }
    assert (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1][0]["url"] == "https://oob/q"
    await ctl.delete_registration(ACCOUNT, "QoS")
    assert await ctl.registrations() == {}


async def test_faults_are_consumed_in_order_and_filtered_by_account(
    api: Api, sim: SimulatorServer
) -> None:
    ctl = SimControl(sim.url)
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")  # token and session first
    await ctl.fault("list", "status", status=502, count=2, account=ACCOUNT)
    await ctl.fault("*", "rate_limit", retry_after=3, count=1)
    assert (await api.m2m("GET", "/callbacks/0000999999-00001"))[0] == 429
    statuses = [(await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[0] for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert await ctl.request("GET", "faults") == []


async def test_rate_limit_fault_has_retry_after_and_wso2_body(
    api: Api, sim: SimulatorServer
) -> None:
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    await SimControl(sim.url).fault("register", "rate_limit", retry_after=7)
    status, body, response = await api.m2m(
        "POST", f"/callbacks/{ACCOUNT}", json={"name": "QoS", "url": "https://l/q"}
    )
    assert (status, code(body), response.headers["Retry-After"]) == (429, "900800", "7")


async def test_fault_until_cleared(api: Api, sim: SimulatorServer) -> None:
    ctl = SimControl(sim.url)
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    await ctl.fault("list", "status", status=503, count=None)
    assert [(await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[0] for _ in range(3)] == [503] * 3
    await ctl.request("DELETE", "faults")
    assert (await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[0] == 200


async def test_request_counts_and_reset(api: Api, sim: SimulatorServer) -> None:
    ctl = SimControl(sim.url)
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    await api.login(password="wrong")
    assert await ctl.counts() == {
        ("token", 200): 1,
        ("login", 200): 1,
        ("login", 400): 1,
        ("list", 200): 1,
    }
    rows = (await ctl.request("GET", "requests"))["counts"]
    assert {"endpoint": "list", "account": ACCOUNT, "status": 200, "count": 1} in rows
    await ctl.request("DELETE", "requests")
    assert await ctl.counts() == {}
    await ctl.set_registration(ACCOUNT, "QoS", url="https://x/")
    await ctl.request("POST", "reset")
    assert await ctl.registrations() == {}


async def test_expire_sessions_and_revoke_tokens(api: Api, sim: SimulatorServer) -> None:
    ctl = SimControl(sim.url)
    await api.m2m("GET", f"/callbacks/{ACCOUNT}")
    await ctl.request("POST", "sessions/expire")
    assert code((await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]).endswith("Expired")
    await ctl.request("POST", "tokens/revoke")
    assert code((await api.m2m("GET", f"/callbacks/{ACCOUNT}"))[1]) == "900901"


async def test_bad_control_requests_are_refused(sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, body in [
            ("POST", "faults", {"endpoint": "nope", "kind": "status"}),
            ("PUT", "config", {"apps": {}}),
            ("PUT", "config", ["latency_seconds"]),
            ("PUT", "config", {"enforce_listener_ports": "false"}),
            ("PUT", "config", {"duplicate_register": "maybe"}),
            ("PUT", "config", {"empty_list_body": None}),
            ("PUT", "config", {"delivery_retry_seconds": -1}),
            ("PUT", "config", {"delivery_timeout_seconds": True}),
            ("PUT", "config", {"latency_seconds": float("inf")}),
            ("PUT", f"registrations/{ACCOUNT}/QoS", {"no": "url"}),
        ]:
            async with http.request(method, f"{sim.url}/_sim/{path}", json=body) as response:
                assert response.status == 400, body
                assert (await response.json())["error"]
    assert sim.state.config == SimulatorConfig()


async def test_simulator_logs_carry_no_passwords(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await api.login(password="wrong-pass-123")
    await api.m2m(
        "POST",
        f"/callbacks/{ACCOUNT}",
        json={"name": "QoS", "url": "https://l/q", "password": "cb-pass-456"},
    )
    text = caplog.text
    assert "POST /api/m2m/v1/session/login -> 400" in text
    assert "wrong-pass-123" not in text
    assert "cb-pass-456" not in text


# --- thingspace-sim serve: accepted credentials ------------------------------------------


def serve_config(*argv: str, **environ: str) -> SimulatorConfig:
    return cli.config_from_args(cli.serve_parser().parse_args(argv), environ)


def test_credentials_come_from_the_environment_and_the_flags() -> None:
    """The environment keeps secrets out of argv (/proc/*/cmdline, ps): the chart uses it."""
    assert (serve_config().apps, serve_config().users) == (DEMO_APPS, DEMO_USERS)
    assert serve_config(THINGSPACE_SIM_APPS="", THINGSPACE_SIM_USERS=" ").apps == DEMO_APPS
    config = serve_config(THINGSPACE_SIM_APPS="k1:s1, k2:s:2,", THINGSPACE_SIM_USERS="alice:pw")
    assert (config.apps, config.users) == ({"k1": "s1", "k2": "s:2"}, {"alice": "pw"})
    both = serve_config("--app", "k2:flag", "--app", "k3:s3", THINGSPACE_SIM_APPS="k1:s1,k2:env")
    assert (both.apps, both.users) == ({"k1": "s1", "k2": "flag", "k3": "s3"}, DEMO_USERS)
    assert serve_config("--user", "bob:pw2").users == {"bob": "pw2"}


@pytest.mark.parametrize(
    ("variable", "value", "form"),
    [
        ("THINGSPACE_SIM_APPS", "k1:s1,secret-7", "KEY:SECRET"),
        ("THINGSPACE_SIM_USERS", "alice:pw,:secret-7", "NAME:PASSWORD"),
        ("THINGSPACE_SIM_USERS", "alice:pw,secret-7:", "NAME:PASSWORD"),
    ],
)
def test_malformed_credentials_in_the_environment_exit_2_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    form: str,
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(cli, "run_simulator", pytest.fail)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--port", "0"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"{variable}: entry 2 must look like {form}" in error
    assert "secret-7" not in error


def test_the_simulator_listens_before_it_loads_its_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The port accepts connections (probes) before the full parser, whose defaults load
    aiohttp, is built; the server is handed that very socket."""
    port = free_port()
    full_parser = cli.serve_parser
    handed: list[Any] = []

    def parser_once_listening() -> Any:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # not refused
        return full_parser()

    monkeypatch.setattr(cli, "serve_parser", parser_once_listening)
    monkeypatch.setattr(cli, "run_simulator", lambda *args: handed.append(args[3]))
    cli.main(["--port", str(port)])
    assert handed[0] is not None
    assert handed[0].getsockname()[1] == port
    handed[0].close()


# --- thingspace-sim serve: settings ------------------------------------------------------

#: A flag for every live setting, with a value other than the default.
SETTING_FLAGS = {
    "enforce_listener_ports": (["--allow-any-listener-port"], False),
    "delivery_retry_seconds": (["--delivery-retry-seconds", "2"], 2.0),
    "delivery_timeout_seconds": (["--delivery-timeout-seconds", "3.5"], 3.5),
    "latency_seconds": (["--latency-seconds", "0.25"], 0.25),
    "session_idle_seconds": (["--session-idle-seconds", "60"], 60.0),
    "duplicate_register": (["--duplicate-register", "reject"], "reject"),
    "empty_list_body": (["--empty-list-body", "empty"], "empty"),
}


def test_every_live_setting_has_a_flag_with_the_default_of_the_config() -> None:
    assert set(SETTING_FLAGS) == set(LIVE_SETTINGS) == set(cli.setting_help())
    assert serve_config() == SimulatorConfig()


@pytest.mark.parametrize("setting", sorted(SETTING_FLAGS))
def test_each_setting_flag_reaches_the_config(setting: str) -> None:
    argv, value = SETTING_FLAGS[setting]
    config = serve_config(*argv)
    assert getattr(config, setting) == value
    others = {name: getattr(config, name) for name in LIVE_SETTINGS if name != setting}
    assert others == {name: getattr(SimulatorConfig(), name) for name in others}


@pytest.mark.parametrize(
    "argv",
    [
        ["--delivery-retry-seconds", "-1"],
        ["--delivery-timeout-seconds", "inf"],
        ["--latency-seconds", "nan"],
        ["--session-idle-seconds", "soon"],
        ["--duplicate-register", "maybe"],
        ["--empty-list-body", "null"],
        ["--allow-any-listener-port=yes"],
    ],
)
def test_bad_setting_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.serve_parser().parse_args(argv)
    assert exited.value.code == 2
    assert argv[0].split("=")[0] in capsys.readouterr().err


async def test_get_config_shows_the_flags_and_put_config_changes_them(clock: Clock) -> None:
    argv = [arg for flag, _ in SETTING_FLAGS.values() for arg in flag]
    flagged = {name: value for name, (_, value) in SETTING_FLAGS.items()}
    async with SimulatorServer(serve_config(*argv), clock=clock) as server:
        ctl = SimControl(server.url)
        assert await ctl.request("GET", "config") == flagged
        defaults = {name: getattr(SimulatorConfig(), name) for name in LIVE_SETTINGS}
        assert await ctl.request("PUT", "config", defaults) == defaults
        assert await ctl.request("GET", "config") == defaults
        assert server.state.config == SimulatorConfig()
