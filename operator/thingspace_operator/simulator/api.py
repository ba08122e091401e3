"""The ThingSpace API routes and their auth rules: OAuth tokens, UWS sessions, callbacks.

Real paths, JSON shapes, error envelopes and token lifetimes (see
../shared/reference/thingspace-api.md, sections 2 and 3).
"""

import asyncio
import base64
import binascii
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..thingspace.services import (
    ACCOUNT_NAME_MAX_LENGTH,
    ACCOUNT_NAME_RE,
    ALLOWED_LISTENER_PORTS,
    CALLBACK_CREDENTIAL_MAX_LENGTH,
    CALLBACK_SERVICE_NAMES,
)
from .errors import (
    INVALID_CREDENTIALS,
    MISSING_BEARER,
    MISSING_CREDENTIALS,
    UWS,
    ApiError,
    error,
)
from .faults import inject
from .state import STATE, Registration, SimulatorConfig, SimulatorState

log = logging.getLogger(__name__)

Handler = Callable[[web.Request, SimulatorState], Awaitable[Any]]


def port_ranges(ports: frozenset[int]) -> str:
    """``80, 443, 9001-9006, ...``: ``ports`` as ascending ranges."""
    ranges: list[list[int]] = []
    for port in sorted(ports):
        if ranges and port == ranges[-1][1] + 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


#: The listener ports ThingSpace accepts, as people read them.
ALLOWED_PORTS_TEXT = port_ranges(ALLOWED_LISTENER_PORTS)


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
            await inject(injected)
        body = await handler(request, state)
    except ApiError as exc:
        return web.json_response(exc.body, status=exc.status, headers=exc.headers)
    if isinstance(body, web.Response):
        return body
    if body == "":
        return web.Response(status=200, content_type="application/json")
    return web.json_response(body)


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
    if len(account) > ACCOUNT_NAME_MAX_LENGTH or not ACCOUNT_NAME_RE.fullmatch(account):
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
        raise error(
            f"{UWS}.INPUT_INVALID.Url.PortNotAllowed",
            f"Port {port} is not allowed: ThingSpace accepts {ALLOWED_PORTS_TEXT} "
            "(simulator: thingspace-sim --allow-any-listener-port accepts any port)",
        )


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


CALLBACKS = "/api/m2m/v1/callbacks/{account}"

ROUTES = [
    web.post("/api/ts/v1/oauth2/token", issue_token),
    web.post("/api/ts/v1/oauth2/revoke", revoke_token),
    web.post("/api/m2m/v1/session/login", login),
    web.post("/api/m2m/v1/session/logout", logout),
    web.get(CALLBACKS, list_callbacks),
    web.post(CALLBACKS, register),
    web.delete(CALLBACKS + "/name/{service}", deregister),
    web.route("*", "/api/{tail:.*}", unknown_api),
]
