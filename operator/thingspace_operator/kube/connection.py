"""Raw aiohttp access to the Kubernetes API: server, TLS settings and credentials.

Every request the operator makes itself (Secrets, namespaces, discovery, the Secret watch,
the Lease, annotations, Events) goes through aiohttp with the ``kopf.ConnectionInfo`` that
kube/login.py resolved, the same kopf's own requests use. The ``kubernetes`` client is not
imported here: its ~770 model modules would cost ~28 MB of resident memory for a handful
of GETs.
"""

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:  # kopf stays unimported for the gitops commands, which use this package
    from kopf import ConnectionInfo

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
READ_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
# Projected service-account tokens are replaced about every hour, well before they expire.
TOKEN_REREAD_SECONDS = 60.0

Authorization = Callable[[], Mapping[str, str]]
"""The Authorization header as it stands now (the ``kubernetes`` client's, when used)."""


class KubeApiError(Exception):
    """The API server answered with an error status. The message holds the status and its
    reason, never a response body (one could carry Secret data)."""

    def __init__(self, status: int, reason: str | None = None) -> None:
        super().__init__(f"HTTP {status} {reason or ''}".rstrip())
        self.status = status
        self.reason = reason


class KubeConnection:
    """Base URL, TLS settings and current credentials of one API server."""

    def __init__(
        self,
        info: "ConnectionInfo",
        token_file: Path | None = None,
        authorization: Authorization | None = None,
    ) -> None:
        """``token_file``: where a rotating token is (the service account's), read again
        at most once a minute. ``authorization``: credentials only the ``kubernetes``
        client can produce (exec and auth-provider plugins), asked for at each request."""
        self._token_file = token_file
        self._authorization = authorization
        self._reads: aiohttp.ClientSession | None = None
        self.update(info)

    def update(self, info: "ConnectionInfo") -> None:
        """Use what a new login found (kopf logs in again after a 401)."""
        self.info = info
        self.base_url = str(info.server).rstrip("/")
        self._ssl = info.as_ssl_context() if self.base_url.startswith("https") else None
        self._token_read_at = time.monotonic()

    def headers(self) -> dict[str, str]:
        """JSON, with the credentials valid now."""
        return {"Accept": "application/json", **self._authorization_header()}

    def connection_info(self) -> "ConnectionInfo":
        """The connection as kopf takes it, with the credentials valid now."""
        if self._authorization is None:
            self._reread_token()
            return self.info
        header = next(
            (
                value
                for key, value in self._authorization().items()
                if key.lower() == "authorization"
            ),
            "",
        )
        scheme, _, token = header.partition(" ")
        return dataclasses.replace(self.info, scheme=scheme or None, token=token or None)

    def url(self, path: str) -> str:
        """The full URL of an API path (the server may itself sit under a path prefix)."""
        return self.base_url + path

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
        return aiohttp.ClientSession(connector=connector, **kwargs)

    async def get_json(self, path: str) -> Any:
        """One object (or list) as JSON; ``KubeApiError`` for an error status."""
        if self._reads is None:
            self._reads = self.session()  # shared by the occasional reads of Secrets and the like
        async with self._reads.get(
            self.url(path), headers=self.headers(), timeout=READ_TIMEOUT
        ) as response:
            if response.status >= 300:
                raise KubeApiError(response.status, response.reason)
            return await response.json()

    async def close(self) -> None:
        if self._reads is not None:
            await self._reads.close()
            self._reads = None

    def _authorization_header(self) -> Mapping[str, str]:
        if self._authorization is not None:
            return self._authorization()
        self._reread_token()
        return self.info.as_http_headers()

    def _reread_token(self) -> None:
        if (
            self._token_file is None
            or time.monotonic() - self._token_read_at < TOKEN_REREAD_SECONDS
        ):
            return
        self._token_read_at = time.monotonic()
        try:
            token = self._token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return  # mid-rotation, say: the token read last is still valid for a while
        if token and token != self.info.token:
            self.info = dataclasses.replace(self.info, token=token)
