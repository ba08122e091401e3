"""A ThingSpace client for one credential set: OAuth token, M2M session, retry-once rules.

One instance serves every resource that uses the same credentials, so there is one token
and one session per credential set however many resources share it. Concurrent callers
wait on a single login instead of starting their own.

Lockout safety: ThingSpace locks a UWS user after five failed logins. Once a login (or
the app key/secret) is rejected, the pool remembers the rejected values and every client
raises that failure again without calling ThingSpace, for as long as the pool lives: a
UWS user and password shared by credential sets with different app keys make one failed
login, not one per set. New values are what allow the next attempt, so fixing the Secret
is what clears the failure.

The values' digest dies with the process; a new leader must not try them again either. So
a rejection is also kept by where the values came from (``CredentialsSource``: a Secret's
name and version, nothing derived from a value), which the operator stores outside the
process (kube/rejections.py) and hands to the next one.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import aiohttp

from .errors import AuthenticationFailed, Unavailable
from .http import (
    BearerRejected,
    CallObserver,
    OAuthToken,
    SessionHeaders,
    SessionRejected,
    ThingSpaceHTTP,
)
from .models import AppCredentials, Callback, CredentialsSource

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Fetch a new OAuth token this long before the current one expires.
TOKEN_REFRESH_MARGIN_SECONDS = 120.0


class RejectedValues:
    """App keys and UWS logins ThingSpace rejected: by a digest of their values (this
    process), and by their source (any process, see ``by_origin``)."""

    def __init__(self) -> None:
        self._failures: dict[str, AuthenticationFailed] = {}
        #: origin -> (version, failure): the values of that version of that origin failed.
        self.by_origin: dict[str, tuple[str, AuthenticationFailed]] = {}
        #: Called after ``by_origin`` changed (to store it for the next process).
        self.on_change: Callable[[], None] = lambda: None

    def check(self, *values: str) -> None:
        """Raise the failure these values met before, if any."""
        failure = self._failures.get(_digest(values))
        if failure is not None:
            raise failure.with_traceback(None)

    def check_sources(self, sources: Iterable[CredentialsSource]) -> None:
        """Raise the failure recorded for this very version of one of these sources."""
        for source in sources:
            found = self.by_origin.get(source.origin)
            if found is not None and found[0] == source.version:
                raise found[1].with_traceback(None)

    def record(
        self, failure: AuthenticationFailed, sources: Iterable[CredentialsSource], *values: str
    ) -> None:
        if values:
            self._failures[_digest(values)] = failure
        for source in sources:
            self.by_origin[source.origin] = (source.version, failure)
        self.on_change()

    def accepted(self, sources: Iterable[CredentialsSource]) -> None:
        """A login with values from ``sources`` succeeded: what failed there is history."""
        forgotten = [self.by_origin.pop(source.origin, None) for source in sources]
        if any(forgotten):
            self.on_change()


def _digest(values: tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join(values).encode()).hexdigest()


class ThingSpaceClient:
    """list / register / deregister for one credential set, with tokens handled inside."""

    def __init__(
        self,
        http: ThingSpaceHTTP,
        credentials: AppCredentials,
        clock: Callable[[], float] = time.monotonic,
        rejected: RejectedValues | None = None,
    ) -> None:
        self._http = http
        self.credentials = credentials
        self._clock = clock
        self._rejected = rejected or RejectedValues()
        #: Everywhere these values were read (two Secrets may hold the same ones).
        self.sources = {credentials.source} if credentials.source is not None else set()
        self._auth_lock = asyncio.Lock()
        self._token: OAuthToken | None = None
        self._token_expires_at = 0.0
        self._session_token: str | None = None
        self.auth_failure: AuthenticationFailed | None = None
        self._recorded: AuthenticationFailed | None = None  # what ``_rejected`` holds of us

    def add_source(self, source: CredentialsSource) -> None:
        """These values were read from ``source`` too; it replaces an older version of
        itself, and shares a rejection already recorded."""
        if source in self.sources:
            return
        self.sources = {s for s in self.sources if s.origin != source.origin} | {source}
        if self._recorded is not None:
            self._rejected.record(self._recorded, [source])

    async def list_callbacks(self, account: str) -> list[Callback]:
        return await self._call(lambda headers: self._http.list_callbacks(headers, account))

    async def register(self, callback: Callback) -> None:
        await self._call(
            lambda headers: self._http.register(
                headers, callback, secrets=self.credentials.secret_values
            )
        )

    async def deregister(self, account: str, service: str) -> None:
        await self._call(lambda headers: self._http.deregister(headers, account, service))

    async def close(self) -> None:
        """Let calls on the wire finish, then end the session politely; ThingSpace keeps
        sending callbacks after a logout."""
        await self._http.drain()
        if self._token is None or self._session_token is None:
            return
        headers = SessionHeaders(self._token.access_token, self._session_token)
        self._session_token = None
        try:
            await self._http.logout(headers)
        except Exception as exc:  # best effort on shutdown
            log.debug("ThingSpace logout failed: %s", type(exc).__name__)

    async def _call(self, operation: Callable[[SessionHeaders], Awaitable[T]]) -> T:
        """Run ``operation``; on an expired session or token, renew it once and retry once."""
        headers = await self._authorize()
        try:
            return await operation(headers)
        except SessionRejected:
            self._forget_session(headers)
        except BearerRejected:
            self._forget_token(headers)
        headers = await self._authorize()
        try:
            return await operation(headers)
        except (SessionRejected, BearerRejected) as exc:
            raise Unavailable(f"ThingSpace refused freshly issued tokens: {exc}") from exc

    async def _authorize(self) -> SessionHeaders:
        async with self._auth_lock:
            if self.auth_failure is not None:
                # A fresh traceback each time: re-raising one object would grow its own.
                raise self.auth_failure.with_traceback(None)
            if self._session_token is None:
                # Before any call: the token request proves nothing a new leader needs.
                self._rejected.check_sources(self.sources)
            token = await self._valid_token()
            if self._session_token is None:
                self._session_token = await self._login(token)
            return SessionHeaders(token.access_token, self._session_token)

    async def _valid_token(self) -> OAuthToken:
        token = self._token
        if token is None or self._clock() >= self._token_expires_at - TOKEN_REFRESH_MARGIN_SECONDS:
            creds = self.credentials
            requested_at = self._clock()
            try:
                self._rejected.check("oauth", creds.app_key, creds.app_secret)
                token = await self._http.fetch_token(creds.app_key, creds.app_secret)
            except AuthenticationFailed as exc:
                self.auth_failure = exc
                self._record(exc, "oauth", creds.app_key, creds.app_secret)
                raise
            self._token, self._token_expires_at = token, requested_at + token.expires_in
        return token

    async def _login(self, token: OAuthToken) -> str:
        try:
            return await self._login_once(token)
        except BearerRejected:
            # The token died between issue and use: one new token, one more login.
            self._token = None
            token = await self._valid_token()
        try:
            return await self._login_once(token)
        except BearerRejected as exc:
            raise Unavailable("ThingSpace refused a freshly issued access token") from exc

    async def _login_once(self, token: OAuthToken) -> str:
        creds = self.credentials
        try:
            self._rejected.check("login", creds.username, creds.password)
            session = await self._http.login(token.access_token, creds.username, creds.password)
        except AuthenticationFailed as exc:
            self.auth_failure = exc
            if not exc.by_gateway:  # the gateway judged the app, not the UWS user
                self._record(exc, "login", creds.username, creds.password)
            raise
        self._rejected.accepted(self.sources)
        return session

    def _record(self, failure: AuthenticationFailed, *values: str) -> None:
        self._recorded = failure
        self._rejected.record(failure, self.sources, *values)

    def _forget_session(self, used: SessionHeaders) -> None:
        # Only the first caller to see the expiry drops the session; later ones already
        # see the replacement and must not throw it away.
        if self._session_token == used.session_token:
            self._session_token = None

    def _forget_token(self, used: SessionHeaders) -> None:
        if self._token is not None and self._token.access_token == used.bearer:
            self._token = None


class ClientPool:
    """One ``ThingSpaceClient`` per credential set, sharing one HTTP connection pool."""

    def __init__(
        self, base_url: str, timeout_seconds: float, observer: CallObserver | None = None
    ) -> None:
        self._base_url = base_url
        self._timeout_seconds = timeout_seconds
        self._observer = observer
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[AppCredentials, ThingSpaceClient] = {}
        self.rejected = RejectedValues()

    def client_for(self, credentials: AppCredentials) -> ThingSpaceClient:
        client = self._clients.get(credentials)
        if client is None:
            client = ThingSpaceClient(self._http(), credentials, rejected=self.rejected)
            self._clients[credentials] = client
        elif credentials.source is not None:
            client.add_source(credentials.source)
        return client

    def _http(self) -> ThingSpaceHTTP:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._observer is None:
            return ThingSpaceHTTP(self._base_url, self._session, self._timeout_seconds)
        return ThingSpaceHTTP(self._base_url, self._session, self._timeout_seconds, self._observer)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
