"""Raw ThingSpace HTTP calls: request shapes in, typed results or typed errors out.

Stateless apart from the shared aiohttp session. Token and session lifecycles live in
``client.py``; this module only knows paths, headers, bodies and the error envelopes.
"""

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from .errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    ThingSpaceError,
    Unavailable,
)
from .models import Callback, url_passwords

TOKEN_PATH = "/api/ts/v1/oauth2/token"
LOGIN_PATH = "/api/m2m/v1/session/login"
LOGOUT_PATH = "/api/m2m/v1/session/logout"
CALLBACKS_PATH = "/api/m2m/v1/callbacks/{account}"
CALLBACK_PATH = "/api/m2m/v1/callbacks/{account}/name/{service}"

#: WSO2 gateway fault codes for a missing (900902) or bad/expired (900901) bearer token.
BEARER_FAULT_CODES = frozenset({"900901", "900902"})
#: errorCode endings that mean "log in again" (ThingSpace: match on the code, not the text).
SESSION_ERROR_SUFFIXES = ("SessionToken.Expired", "SessionToken.Invalid", "SessionToken.Format")
MAX_MESSAGE_LENGTH = 300


class BearerRejected(ThingSpaceError):
    """The gateway refused the OAuth bearer token (401 900901/900902): fetch a new one."""


class SessionRejected(ThingSpaceError):
    """ThingSpace refused the VZ-M2M session token: log in again."""


@dataclass(frozen=True)
class OAuthToken:
    access_token: str = field(repr=False)
    expires_in: float  # seconds, from the moment it was requested


@dataclass(frozen=True)
class SessionHeaders:
    """The two tokens every M2M call carries."""

    bearer: str = field(repr=False)
    session_token: str = field(repr=False)

    def as_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.bearer}",
            "VZ-M2M-Token": self.session_token,
            "Accept": "application/json",
        }


#: Told about every call: endpoint name, the error it ended with (or None), duration.
CallObserver = Callable[[str, BaseException | None, float], None]


def _ignore(endpoint: str, error: BaseException | None, seconds: float) -> None:
    return None


class ThingSpaceHTTP:
    """Sends one ThingSpace request per method call and classifies the answer."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout_seconds: float,
        observer: CallObserver = _ignore,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._observer = observer
        self._on_the_wire: set[asyncio.Future[Any]] = set()

    async def fetch_token(self, app_key: str, app_secret: str) -> OAuthToken:
        body = await self._send(
            "POST",
            TOKEN_PATH,
            endpoint="token",
            secrets=(app_secret,),
            data={"grant_type": "client_credentials"},
            headers={
                "Accept": "application/json",
                "Authorization": aiohttp.encode_basic_auth(app_key, app_secret),
            },
        )
        if not isinstance(body, dict) or not body.get("access_token"):
            raise Unavailable("ThingSpace token endpoint answered without an access_token")
        return OAuthToken(str(body["access_token"]), float(body.get("expires_in") or 3600))

    async def login(self, bearer: str, username: str, password: str) -> str:
        body = await self._send(
            "POST",
            LOGIN_PATH,
            endpoint="login",
            secrets=(password,),
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            json={"username": username, "password": password},
        )
        if not isinstance(body, dict) or not body.get("sessionToken"):
            raise Unavailable("ThingSpace login answered without a sessionToken")
        return str(body["sessionToken"])

    async def logout(self, headers: SessionHeaders) -> None:
        await self._send("POST", LOGOUT_PATH, endpoint="logout", headers=headers.as_headers())

    async def list_callbacks(self, headers: SessionHeaders, account: str) -> list[Callback]:
        body = await self._send(
            "GET",
            CALLBACKS_PATH.format(account=quote(account, safe="")),
            endpoint="list",
            headers=headers.as_headers(),
        )
        return parse_callback_list(account, body)

    async def register(
        self, headers: SessionHeaders, callback: Callback, secrets: Iterable[str] = ()
    ) -> None:
        payload = {"name": callback.service_name, "url": callback.url}
        if callback.username:
            payload["username"] = callback.username
        if callback.password:
            payload["password"] = callback.password
        await self._send(
            "POST",
            CALLBACKS_PATH.format(account=quote(callback.account_name, safe="")),
            endpoint="register",
            secrets=(callback.password, *url_passwords(callback.url), *secrets),
            headers=headers.as_headers(),
            json=payload,
        )

    async def deregister(self, headers: SessionHeaders, account: str, service: str) -> None:
        await self._send(
            "DELETE",
            CALLBACK_PATH.format(account=quote(account, safe=""), service=quote(service, safe="")),
            endpoint="deregister",
            headers=headers.as_headers(),
        )

    async def _send(self, method: str, path: str, *, endpoint: str, **kwargs: Any) -> Any:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            # A request once sent is never cut halfway: a caller cancelled at shutdown stops
            # waiting, but the exchange completes, and ``drain`` waits for it. So when the
            # Lease is released, every call this process made has had its effect, and the
            # next leader's first list sees it.
            exchange = asyncio.ensure_future(
                self._exchange(method, path, endpoint=endpoint, **kwargs)
            )
            self._on_the_wire.add(exchange)
            exchange.add_done_callback(self._landed)
            return await asyncio.shield(exchange)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._observer(endpoint, error, time.monotonic() - started)

    def _landed(self, exchange: "asyncio.Future[Any]") -> None:
        self._on_the_wire.discard(exchange)
        if not exchange.cancelled():
            exchange.exception()  # retrieved: its caller may be gone

    async def drain(self) -> None:
        """Wait for the requests on the wire (each ends within the request timeout)."""
        await asyncio.gather(*self._on_the_wire, return_exceptions=True)

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        secrets: Iterable[str] = (),
        **kwargs: Any,
    ) -> Any:
        try:
            async with self._session.request(
                method, self.base_url + path, timeout=self._timeout, **kwargs
            ) as response:
                text = await response.text()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise Unavailable(f"ThingSpace {endpoint} call timed out") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"ThingSpace {endpoint} call failed: {type(exc).__name__}") from exc
        body = _decode(text)
        if status >= 400:
            raise classify_failure(endpoint, status, body, text, retry_after, tuple(secrets))
        return body


def _decode(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_callback_list(account: str, body: Any) -> list[Callback]:
    """Read the list answer: a JSON array, or an empty body when nothing is registered."""
    if body is None or body == "":
        return []
    if not isinstance(body, list):
        raise Unavailable("ThingSpace list answer is not a JSON array")
    return [
        Callback(
            account_name=str(item.get("accountName") or account),
            service_name=str(item["serviceName"]),
            url=str(item.get("url") or ""),
            username=str(item.get("username") or ""),
            password=str(item.get("password") or ""),
        )
        for item in body
        if isinstance(item, dict) and item.get("serviceName")
    ]


def classify_failure(
    endpoint: str,
    status: int,
    body: Any,
    text: str,
    retry_after: str | None,
    secrets: tuple[str, ...] = (),
) -> ThingSpaceError:
    """Turn a failed answer into the one error type that says what to do about it."""
    fault = body.get("fault") if isinstance(body, dict) else None
    fault_code = str(fault.get("code", "")) if isinstance(fault, dict) else ""
    error_code = str(body.get("errorCode", "")) if isinstance(body, dict) else ""
    detail = scrub(_describe(body, text), secrets)

    if status == 429 or fault_code == "900800":
        return RateLimited(
            f"ThingSpace throttled the {endpoint} call", parse_retry_after(retry_after)
        )
    if status >= 500:
        return Unavailable(f"ThingSpace {endpoint} call failed with HTTP {status}")
    if endpoint == "token" and status in (400, 401):
        return AuthenticationFailed("oauth", f"ThingSpace rejected the app key/secret: {detail}")
    if status == 401 and fault_code in BEARER_FAULT_CODES:
        return BearerRejected(f"ThingSpace rejected the access token: {detail}")
    if error_code.endswith(SESSION_ERROR_SUFFIXES):
        return SessionRejected(f"ThingSpace rejected the session token: {error_code}")
    if endpoint == "login" and status in (400, 401, 403):
        message = f"ThingSpace rejected the UWS login: {detail}"
        return AuthenticationFailed("login", message, by_gateway=bool(fault_code))
    if error_code:
        message = scrub(str(body.get("errorMessage", "")), secrets)
        return RequestRejected(error_code, message, status)
    return RequestRejected(f"HTTP{status}", detail, status)


def _describe(body: Any, text: str) -> str:
    if isinstance(body, dict):
        fault = body.get("fault")
        if isinstance(fault, dict):
            return f"{fault.get('code', '')} {fault.get('message', '')}".strip()
        if "errorCode" in body:
            return f"{body['errorCode']}: {body.get('errorMessage', '')}"
        if "error" in body:
            return f"{body['error']}: {body.get('error_description', '')}"
    return text.strip() or "no details"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in ``text``, then cut it to the message limit;
    ThingSpace may echo input back. Cut first, a secret across the limit would survive
    in part."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:MAX_MESSAGE_LENGTH]


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = [
    "BearerRejected",
    "OAuthToken",
    "SessionHeaders",
    "SessionRejected",
    "ThingSpaceHTTP",
]
