"""A faithful simulator of the ThingSpace API parts the operator uses, plus ``/_sim/``.

Real paths, JSON shapes, error envelopes and token lifetimes (see
../shared/reference/thingspace-api.md). Codes that ThingSpace does not document are
invented here and listed as simulator-only in docs/simulator.md. No Kubernetes imports.
"""

import asyncio
import base64
import binascii
import itertools
import logging
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from .services import (
    ACCOUNT_NAME_MAX_LENGTH,
    ACCOUNT_NAME_RE,
    ALLOWED_LISTENER_PORTS,
    CALLBACK_CREDENTIAL_MAX_LENGTH,
    CALLBACK_SERVICE_NAMES,
)

log = logging.getLogger(__name__)

UWS = "UnifiedWebService"
DEMO_APPS = {"demo-app-key": "demo-app-secret"}
DEMO_USERS = {"demo-user": "demo-password"}
ENDPOINTS = ("token", "revoke", "login", "logout", "list", "register", "deregister")


@dataclass(frozen=True)
class SimulatorConfig:
    apps: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_APPS))
    users: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_USERS))
    accounts: frozenset[str] | None = None
    token_lifetime_seconds: float = 3600.0
    session_idle_seconds: float = 1200.0
    duplicate_register: Literal["upsert", "reject"] = "upsert"
    empty_list_body: Literal["array", "empty"] = "array"
    enforce_listener_ports: bool = True
    latency_seconds: float = 0.0
    lockout_after_failed_logins: int = 5


@dataclass
class Registration:
    url: str
    username: str = ""
    password: str = field(default="", repr=False)

    def as_json(self, account: str | None, service: str) -> dict[str, str]:
        item = {"serviceName": service, "url": self.url}
        if account is not None:
            item = {"accountName": account, **item}
        if self.username:
            item["username"] = self.username
        if self.password:
            item["password"] = self.password
        return item


@dataclass
class Fault:
    id: int
    endpoint: str
    kind: str
    status: int = 503
    retry_after: float = 1.0
    delay: float = 0.0
    count: int | None = 1
    account: str | None = None

    def matches(self, endpoint: str, account: str | None) -> bool:
        return self.endpoint in ("*", endpoint) and self.account in (None, account)


@dataclass
class SimulatorState:
    config: SimulatorConfig
    clock: Callable[[], float] = time.monotonic
    registrations: dict[str, dict[str, Registration]] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (app, expiry)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (user, seen)
    failed_logins: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    request_counts: Counter[tuple[str, str | None, int]] = field(default_factory=Counter)
    #: (clock time, endpoint, account) of recent requests, for rate assertions.
    request_log: deque[tuple[float, str, str | None]] = field(
        default_factory=lambda: deque(maxlen=100_000)
    )
    _fault_ids: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        for item in (self.registrations, self.tokens, self.sessions, self.failed_logins):
            item.clear()
        self.faults.clear()
        self.request_counts.clear()
        self.request_log.clear()

    def locked(self, user: str) -> bool:
        return self.failed_logins.get(user, 0) >= self.config.lockout_after_failed_logins

    def take_fault(self, endpoint: str, account: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(endpoint, account):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None


class ApiError(Exception):
    """An answer other than 200: status plus JSON body (and headers)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def error(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, {"errorCode": code, "errorMessage": message})


def fault(code: str, message: str, description: str, status: int = 401) -> ApiError:
    return ApiError(
        status, {"fault": {"code": code, "message": message, "description": description}}
    )


MISSING_CREDENTIALS = fault(
    "900902",
    "Missing Credentials",
    "Required OAuth credentials not provided. Make sure your API invocation call has a "
    'header: "Authorization: Basic ACCESS_TOKEN"',
)
MISSING_BEARER = fault(
    "900902",
    "Missing Credentials",
    "Required OAuth credentials not provided. Make sure your API invocation call has a "
    'header: "Authorization: Bearer ACCESS_TOKEN"',
)
INVALID_CREDENTIALS = fault(
    "900901",
    "Invalid Credentials",
    "Access failure for API: /m2m/v1, version: v1. Make sure you have given the correct "
    "access token",
)

STATE = web.AppKey("state", SimulatorState)
Handler = Callable[[web.Request, SimulatorState], Awaitable[Any]]


def api(endpoint: str, account_param: bool = False) -> Callable[[Handler], Callable[..., Any]]:
    """Wrap a route: latency, injected faults, error envelopes and request counting."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            state: SimulatorState = request.app[STATE]
            account = request.match_info.get("account") if account_param else None
            response = await _answer(request, state, endpoint, account, handler)
            state.request_counts[(endpoint, account, response.status)] += 1
            state.request_log.append((state.clock(), endpoint, account))
            log.info("%s %s -> %d", request.method, request.path, response.status)
            return response

        return route

    return decorate


async def _answer(
    request: web.Request,
    state: SimulatorState,
    endpoint: str,
    account: str | None,
    handler: Handler,
) -> web.Response:
    if state.config.latency_seconds:
        await asyncio.sleep(state.config.latency_seconds)
    try:
        injected = state.take_fault(endpoint, account)
        if injected is not None:
            await _inject(injected)
        body = await handler(request, state)
    except ApiError as exc:
        return web.json_response(exc.body, status=exc.status, headers=exc.headers)
    if isinstance(body, web.Response):
        return body
    if body == "":
        return web.Response(status=200, content_type="application/json")
    return web.json_response(body)


async def _inject(injected: Fault) -> None:
    if injected.kind in ("latency", "timeout"):
        await asyncio.sleep(injected.delay)
        if injected.kind == "latency":
            return
        raise ApiError(504, {"fault": {"code": "101504", "message": "Gateway Timeout"}})
    if injected.kind == "rate_limit":
        raise ApiError(
            429,
            {
                "fault": {
                    "code": "900800",
                    "message": "Message throttled out",
                    "description": "You have exceeded your quota",
                }
            },
            {"Retry-After": f"{injected.retry_after:g}"},
        )
    raise ApiError(
        injected.status, {"fault": {"code": str(injected.status), "message": "Injected failure"}}
    )


# --- auth ------------------------------------------------------------------------------


def _basic_app(request: web.Request, state: SimulatorState) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        raise MISSING_CREDENTIALS
    try:
        app_key, _, app_secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise MISSING_CREDENTIALS from None
    if state.config.apps.get(app_key) != app_secret or not app_secret:
        raise ApiError(
            401, {"error": "invalid_client", "error_description": "Client Authentication failed."}
        )
    return app_key


def _bearer(request: web.Request, state: SimulatorState) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise MISSING_BEARER
    token = header[7:].strip()
    issued = state.tokens.get(token)
    if issued is None or issued[1] <= state.clock():
        raise INVALID_CREDENTIALS
    return token


def _session(request: web.Request, state: SimulatorState) -> str:
    token = request.headers.get("VZ-M2M-Token")
    if not token:
        raise error(f"{UWS}.REQUEST_FAILED.SessionToken.Format", "VZ-M2M-Token header missing")
    try:
        uuid.UUID(token)
    except ValueError:
        raise error(
            f"{UWS}.INPUT_INVALID.SessionToken.Invalid", "Session token is invalid"
        ) from None
    session = state.sessions.get(token)
    now = state.clock()
    if session is None or now - session[1] > state.config.session_idle_seconds:
        state.sessions.pop(token, None)
        raise error(f"{UWS}.REQUEST_FAILED.SessionToken.Expired", "Session token expired")
    state.sessions[token] = (session[0], now)
    return token


def _authorized(request: web.Request, state: SimulatorState) -> None:
    _bearer(request, state)
    _session(request, state)


@api("token")
async def issue_token(request: web.Request, state: SimulatorState) -> Any:
    app_key = _basic_app(request, state)
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        raise ApiError(
            400,
            {"error": "invalid_request", "error_description": "Missing grant_type parameter value"},
        )
    now = state.clock()
    token, expiry = next(
        ((t, exp) for t, (app, exp) in state.tokens.items() if app == app_key and exp > now),
        (secrets.token_hex(16), now + state.config.token_lifetime_seconds),
    )
    state.tokens[token] = (app_key, expiry)
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": max(0, int(expiry - now)),
        "scope": "am_application_scope default",
    }


@api("revoke")
async def revoke_token(request: web.Request, state: SimulatorState) -> Any:
    app_key = _basic_app(request, state)
    form = await request.post()
    token = str(form.get("token", ""))
    if state.tokens.get(token, ("",))[0] == app_key:
        del state.tokens[token]
    return web.Response(status=200, headers={"Revoked-Token": token})


@api("login")
async def login(request: web.Request, state: SimulatorState) -> Any:
    _bearer(request, state)
    body = await _json_body(request)
    username, password = body.get("username"), body.get("password")
    if not username or not password:
        raise error(f"{UWS}.INPUT_INVALID.RequestUndefined", "username and password required")
    if state.locked(username):
        raise error(f"{UWS}.REQUEST_FAILED.User.Locked", "The user is locked; contact support")
    if state.config.users.get(username) != password:
        state.failed_logins[username] = state.failed_logins.get(username, 0) + 1
        raise error(f"{UWS}.INPUT_INVALID.Password.Invalid", "Invalid username or password")
    state.failed_logins.pop(username, None)
    token = str(uuid.uuid4())
    state.sessions[token] = (username, state.clock())
    return {"sessionToken": token}


@api("logout")
async def logout(request: web.Request, state: SimulatorState) -> Any:
    _bearer(request, state)
    token = _session(request, state)
    del state.sessions[token]
    return {"sessionToken": token}


# --- callbacks -------------------------------------------------------------------------


def _account(request: web.Request, state: SimulatorState) -> str:
    account = request.match_info["account"]
    if len(account) > ACCOUNT_NAME_MAX_LENGTH or not ACCOUNT_NAME_RE.match(account):
        raise error(f"{UWS}.INPUT_INVALID.Account.NotDefined", "Account name is not valid")
    if state.config.accounts is not None and account not in state.config.accounts:
        raise error(f"{UWS}.REQUEST_FAILED.AccountNotFound", "Account not found")
    return account


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise error(f"{UWS}.INPUT_INVALID.RequestUndefined", "Content-Type must be JSON")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise error(f"{UWS}.INPUT_INVALID.RequestUndefined", "Request body is not a JSON object")
    return body


@api("list", account_param=True)
async def list_callbacks(request: web.Request, state: SimulatorState) -> Any:
    _authorized(request, state)
    account = _account(request, state)
    items = [
        reg.as_json(account, service)
        for service, reg in sorted(state.registrations.get(account, {}).items())
    ]
    if not items and state.config.empty_list_body == "empty":
        return ""
    return items


@api("register", account_param=True)
async def register(request: web.Request, state: SimulatorState) -> Any:
    _authorized(request, state)
    account = _account(request, state)
    body = await _json_body(request)
    service, url = body.get("name"), body.get("url")
    if not isinstance(service, str) or not isinstance(url, str) or not service or not url:
        raise error(f"{UWS}.INPUT_INVALID.RequestUndefined", "name and url are required")
    if service not in CALLBACK_SERVICE_NAMES:
        raise error(f"{UWS}.INPUT_INVALID.ServiceName.Invalid", f"Unknown service {service}")
    _check_url(url, state.config)
    username = _credential(body, "username", "Username")
    password = _credential(body, "password", "Password")
    existing = state.registrations.setdefault(account, {})
    if service in existing and state.config.duplicate_register == "reject":
        raise error(f"{UWS}.REQUEST_FAILED.Callback.AlreadyRegistered", "Already registered")
    existing[service] = Registration(url, username, password)
    return {"accountName": account, "serviceName": service}


def _check_url(url: str, config: SimulatorConfig) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise error(f"{UWS}.INPUT_INVALID.Url.Invalid", "url is not valid") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"{UWS}.INPUT_INVALID.Url.Invalid", "url must be an http(s) URL")
    if config.enforce_listener_ports and port not in ALLOWED_LISTENER_PORTS:
        raise error(f"{UWS}.INPUT_INVALID.Url.PortNotAllowed", f"Port {port} is not allowed")


def _credential(body: Mapping[str, Any], key: str, label: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise error(f"{UWS}.INPUT_INVALID.RequestUndefined", f"{key} must be a string")
    if len(value) > CALLBACK_CREDENTIAL_MAX_LENGTH:
        raise error(
            f"{UWS}.INPUT_INVALID.{label}.TooLong",
            f"{key} must be {CALLBACK_CREDENTIAL_MAX_LENGTH} characters or fewer",
        )
    return value


@api("deregister", account_param=True)
async def deregister(request: web.Request, state: SimulatorState) -> Any:
    _authorized(request, state)
    account = _account(request, state)
    service = request.match_info["service"]
    if state.registrations.get(account, {}).pop(service, None) is None:
        raise error(f"{UWS}.REQUEST_FAILED.Callback.NotRegistered", f"{service} not registered")
    return {"accountName": account, "serviceName": service}


async def unknown_api(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "fault": {
                "code": "900906",
                "message": "No matching resource found in the API for the given request",
            }
        },
        status=400,
    )


# --- /_sim/ control surface ------------------------------------------------------------


def _state(request: web.Request) -> SimulatorState:
    state: SimulatorState = request.app[STATE]
    return state


async def sim_registrations(request: web.Request) -> web.Response:
    state = _state(request)
    account = request.match_info.get("account")
    if account is not None:
        items = state.registrations.get(account, {})
        return web.json_response([r.as_json(None, s) for s, r in sorted(items.items())])
    return web.json_response(
        {
            acct: [r.as_json(None, s) for s, r in sorted(items.items())]
            for acct, items in sorted(state.registrations.items())
            if items
        }
    )


async def sim_set_registration(request: web.Request) -> web.Response:
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return web.json_response({"error": "body must be {url, username?, password?}"}, status=400)
    account, service = request.match_info["account"], request.match_info["service"]
    registration = Registration(body["url"], body.get("username") or "", body.get("password") or "")
    _state(request).registrations.setdefault(account, {})[service] = registration
    return web.json_response(registration.as_json(account, service), status=200)


async def sim_delete_registration(request: web.Request) -> web.Response:
    account, service = request.match_info["account"], request.match_info["service"]
    if _state(request).registrations.get(account, {}).pop(service, None) is None:
        return web.json_response({"error": "not registered"}, status=404)
    return web.json_response({"accountName": account, "serviceName": service})


FAULT_KINDS = ("status", "rate_limit", "timeout", "latency")


async def sim_add_fault(request: web.Request) -> web.Response:
    state = _state(request)
    body = await request.json()
    endpoint, kind = body.get("endpoint", "*"), body.get("kind", "status")
    if endpoint not in (*ENDPOINTS, "*") or kind not in FAULT_KINDS:
        return web.json_response(
            {"error": f"endpoint must be one of {ENDPOINTS} or *; kind one of {FAULT_KINDS}"},
            status=400,
        )
    injected = Fault(
        id=next(state._fault_ids),
        endpoint=endpoint,
        kind=kind,
        status=int(body.get("status", 503)),
        retry_after=float(body.get("retry_after", 1)),
        delay=float(body.get("delay", 0)),
        count=body.get("count", 1),
        account=body.get("account"),
    )
    state.faults.append(injected)
    return web.json_response({"id": injected.id}, status=201)


async def sim_list_faults(request: web.Request) -> web.Response:
    return web.json_response([vars(f) for f in _state(request).faults])


async def sim_clear_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.json_response({})


async def sim_expire_sessions(request: web.Request) -> web.Response:
    _state(request).sessions.clear()
    return web.json_response({})


async def sim_revoke_tokens(request: web.Request) -> web.Response:
    _state(request).tokens.clear()
    return web.json_response({})


async def sim_requests(request: web.Request) -> web.Response:
    counts = _state(request).request_counts
    rows = [
        {"endpoint": endpoint, "account": account, "status": status, "count": count}
        for (endpoint, account, status), count in sorted(
            counts.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2])
        )
    ]
    return web.json_response({"total": sum(counts.values()), "counts": rows})


async def sim_reset_requests(request: web.Request) -> web.Response:
    _state(request).request_counts.clear()
    return web.json_response({})


async def sim_logins(request: web.Request) -> web.Response:
    state = _state(request)
    locked = sorted(user for user in state.failed_logins if state.locked(user))
    return web.json_response({"failed": dict(state.failed_logins), "locked": locked})


async def sim_reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return web.json_response({})


LIVE_SETTINGS = (
    "latency_seconds",
    "session_idle_seconds",
    "duplicate_register",
    "empty_list_body",
    "enforce_listener_ports",
)


async def sim_config(request: web.Request) -> web.Response:
    state = _state(request)
    body = await request.json()
    unknown = set(body) - set(LIVE_SETTINGS)
    if unknown:
        return web.json_response({"error": f"cannot change {sorted(unknown)}"}, status=400)
    state.config = replace(state.config, **body)
    return web.json_response({k: getattr(state.config, k) for k in LIVE_SETTINGS})


def create_app(
    config: SimulatorConfig | None = None, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    app = web.Application()
    app[STATE] = SimulatorState(config or SimulatorConfig(), clock)
    callbacks = "/api/m2m/v1/callbacks/{account}"
    app.router.add_routes(
        [
            web.post("/api/ts/v1/oauth2/token", issue_token),
            web.post("/api/ts/v1/oauth2/revoke", revoke_token),
            web.post("/api/m2m/v1/session/login", login),
            web.post("/api/m2m/v1/session/logout", logout),
            web.get(callbacks, list_callbacks),
            web.post(callbacks, register),
            web.delete(callbacks + "/name/{service}", deregister),
            web.route("*", "/api/{tail:.*}", unknown_api),
            web.get("/_sim/registrations", sim_registrations),
            web.get("/_sim/registrations/{account}", sim_registrations),
            web.put("/_sim/registrations/{account}/{service}", sim_set_registration),
            web.delete("/_sim/registrations/{account}/{service}", sim_delete_registration),
            web.post("/_sim/faults", sim_add_fault),
            web.get("/_sim/faults", sim_list_faults),
            web.delete("/_sim/faults", sim_clear_faults),
            web.post("/_sim/sessions/expire", sim_expire_sessions),
            web.post("/_sim/tokens/revoke", sim_revoke_tokens),
            web.get("/_sim/requests", sim_requests),
            web.delete("/_sim/requests", sim_reset_requests),
            web.get("/_sim/logins", sim_logins),
            web.post("/_sim/reset", sim_reset),
            web.put("/_sim/config", sim_config),
        ]
    )
    return app


class SimulatorServer:
    """The simulator on a local port, as an async context manager (tests and the demo)."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = create_app(config, clock)
        self._host, self._port = host, port
        self._runner = web.AppRunner(self.app, access_log=None)
        self.url = ""

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app[STATE]
        return state

    async def __aenter__(self) -> "SimulatorServer":
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    print(f"thingspace-sim listening on http://{host}:{port}", flush=True)
    web.run_app(create_app(config), host=host, port=port, print=None, access_log=log)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, secret = value.partition(":")
        if not sep or not name or not secret:
            raise ValueError(f"{what} must look like NAME:SECRET")
        pairs[name] = secret
    return pairs


def simulator_config_from_args(
    apps: list[str], users: list[str], accounts: list[str], session_idle_seconds: float | None
) -> SimulatorConfig:
    config = SimulatorConfig(
        apps=_pairs(apps, "--app") or dict(DEMO_APPS),
        users=_pairs(users, "--user") or dict(DEMO_USERS),
        accounts=frozenset(accounts) if accounts else None,
    )
    if session_idle_seconds is not None:
        config = replace(config, session_idle_seconds=session_idle_seconds)
    return config
