"""The watch of credential Secrets, filtered by the API server to the labelled ones.

A cluster holds thousands of Secrets the operator has no business with (Helm releases,
TLS certificates, tokens), often hundreds of KiB each. kopf cannot filter a watch on the
server, so watching Secrets through kopf received every byte of them. This watch asks the
API server for Secrets labelled ``thingspace.io/credentials=true`` only; an unlabelled
Secret never reaches the operator unless a ThingSpaceCallback references it, and then only
by a GET of that one Secret (kube/secrets.py).

List, then watch from the listed resourceVersion with bookmarks; a 410 Gone (the version
was compacted away) or any failure starts over with a fresh list, and Secrets that
vanished meanwhile are reported deleted.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .connection import KubeConnection

log = logging.getLogger(__name__)

CREDENTIALS_LABEL = "thingspace.io/credentials"
CREDENTIALS_SELECTOR = f"{CREDENTIALS_LABEL}=true"
PAGE_SIZE = 250


@dataclass(frozen=True)
class SecretEvent:
    namespace: str
    name: str
    version: str
    data: Mapping[str, str] | None = field(repr=False)
    """Base64-encoded data; None: deleted, or no longer labelled."""
    initial: bool = False
    """Part of the first listing: what was already there when the operator started."""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @classmethod
    def of(cls, obj: Mapping[str, Any], deleted: bool, initial: bool) -> "SecretEvent":
        meta = obj.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            version=str(meta.get("resourceVersion") or ""),
            data=None if deleted else dict(obj.get("data") or {}),
            initial=initial,
        )


Listener = Callable[[SecretEvent], Awaitable[None]]
#: Seconds a watch stream must last before it is re-opened at once (else: a pause).
SHORTEST_STREAM = 1.0


class WatchFailed(Exception):
    """The API server refused or broke the list or watch (message: status, never data)."""


class _Expired(Exception):
    """The resourceVersion is too old (410 Gone): list again."""


class LabelledSecretWatch:
    """Keeps ``listener`` informed of every labelled Secret in scope, until stopped."""

    def __init__(
        self,
        connection: KubeConnection,
        listener: Listener,
        namespaces: tuple[str, ...] = (),
        server_timeout: float = 300.0,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self._connection = connection
        self._listener = listener
        self._scopes: tuple[str | None, ...] = namespaces or (None,)
        self._server_timeout = server_timeout
        self._retry_max = retry_max_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._tracked: dict[tuple[str, str], str] = {}  # every scope's, while healthy
        self._broken: set[str | None] = set(self._scopes)  # scopes not listed since a failure
        self.on_gap: Callable[[], None] | None = None
        """Called when a scope's watch fails: its Secrets may change unseen meanwhile."""

    def tracks(self, key: tuple[str, str]) -> bool:
        """Whether changes of this Secret reach the operator right now."""
        return key in self._tracked and not self._broken

    def start(self) -> None:
        self._session = self._connection.session()
        self._tasks = [
            asyncio.create_task(self._keep_watching(scope), name=f"secret watch {scope or '*'}")
            for scope in self._scopes
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def _path(self, scope: str | None) -> str:
        return f"/api/v1/namespaces/{scope}/secrets" if scope else "/api/v1/secrets"

    async def _keep_watching(self, scope: str | None) -> None:
        """List and watch until cancelled. Nothing but cancellation ends it: a failure of
        the API server or of the listener means a pause and a fresh list."""
        known: dict[tuple[str, str], str] = {}  # key -> resourceVersion, to spot deletions
        first = True
        failures = 0  # in a row: only a stream that lasted resets it
        while True:
            try:
                version = await self._relist(scope, known, first)
                first = False
                self._broken.discard(scope)
                while True:
                    started = time.monotonic()
                    version = await self._watch(scope, version, known)
                    if time.monotonic() - started >= SHORTEST_STREAM:
                        failures = 0
                    else:
                        await asyncio.sleep(SHORTEST_STREAM)  # no hot loop on empty streams
            except _Expired:
                # Normal once in a while (compaction); over and over, a fault like any other.
                failures += 1
                if failures < 3:
                    log.debug("Secret watch %s expired; listing again", scope or "(all)")
                    continue
                await self._pause(scope, failures, "410 Gone again and again")
            except Exception as exc:  # never ends the watch; says what, never any data
                failures += 1
                reason = str(exc) if isinstance(exc, WatchFailed) else type(exc).__name__
                await self._pause(scope, failures, reason)

    async def _pause(self, scope: str | None, failures: int, reason: str) -> None:
        """Report the gap, then back off exponentially before listing again."""
        self._mark_broken(scope)
        delay = min(self._retry_max, 0.5 * 2 ** min(failures, 10))
        log.warning(
            "Watch of labelled Secrets in %s failed (%s); retrying in %.1f s",
            scope or "all namespaces",
            reason,
            delay,
        )
        await asyncio.sleep(delay)

    def _mark_broken(self, scope: str | None) -> None:
        if scope not in self._broken:
            self._broken.add(scope)
            if self.on_gap is not None:
                self.on_gap()

    async def _relist(
        self, scope: str | None, known: dict[tuple[str, str], str], first: bool
    ) -> str:
        """Deliver the current labelled Secrets (and the deletions missed); their version."""
        version, items = await self._list(scope)
        listed: dict[tuple[str, str], str] = {}
        for obj in items:
            event = SecretEvent.of(obj, deleted=False, initial=first)
            listed[event.key] = event.version
            if known.get(event.key) != event.version:
                await self._listener(event)
        for namespace, name in set(known) - set(listed):
            self._tracked.pop((namespace, name), None)  # first: a read meanwhile is untracked
            await self._listener(SecretEvent(namespace, name, "", None))
        known.clear()
        known.update(listed)
        self._tracked.update(listed)
        return version

    async def _list(self, scope: str | None) -> tuple[str, list[Mapping[str, Any]]]:
        params = {"labelSelector": CREDENTIALS_SELECTOR, "limit": str(PAGE_SIZE)}
        items: list[Mapping[str, Any]] = []
        while True:
            page = await self._get_json(scope, params)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return str(meta.get("resourceVersion") or ""), items
            params["continue"] = str(meta["continue"])

    async def _get_json(self, scope: str | None, params: dict[str, str]) -> Mapping[str, Any]:
        async with self._get(scope, params, aiohttp.ClientTimeout(total=60), "listing") as got:
            body: Mapping[str, Any] = await got.json()
            return body

    @contextlib.asynccontextmanager
    async def _get(
        self, scope: str | None, params: dict[str, str], limits: aiohttp.ClientTimeout, what: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request of the list or watch; 410 Gone and other refusals raise."""
        assert self._session is not None
        async with self._session.get(
            self._connection.url(self._path(scope)),
            params=params,
            headers=self._connection.headers(),
            timeout=limits,
        ) as response:
            if response.status == 410:
                raise _Expired()
            if response.status != 200:
                raise WatchFailed(f"HTTP {response.status} {what} Secrets")
            yield response

    async def _watch(
        self, scope: str | None, version: str, known: dict[tuple[str, str], str]
    ) -> str:
        """Deliver events from ``version`` on until the server ends the stream; the version
        to watch from next."""
        params = {
            "labelSelector": CREDENTIALS_SELECTOR,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(int(self._server_timeout)),
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=self._server_timeout + 30
        )
        async with self._get(scope, params, timeout, "watching") as response:
            async for event in _json_lines(response.content):
                version = await self._deliver(event, known) or version
        return version

    async def _deliver(self, event: Mapping[str, Any], known: dict[tuple[str, str], str]) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise WatchFailed(f"watch error {obj.get('code')} {obj.get('reason')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            secret_event = SecretEvent.of(obj, deleted=kind == "DELETED", initial=False)
            if kind == "DELETED":  # before the listener: a read meanwhile is not tracked
                self._tracked.pop(secret_event.key, None)
            await self._listener(secret_event)
            # Only once the listener has it: if it failed, the next list delivers it again.
            if kind == "DELETED":
                known.pop(secret_event.key, None)
            else:
                known[secret_event.key] = self._tracked[secret_event.key] = secret_event.version
        return version  # BOOKMARK events only move the version


async def _json_lines(stream: aiohttp.StreamReader) -> AsyncIterator[Mapping[str, Any]]:
    """Watch events, one JSON document per line. Lines can exceed aiohttp's line limit
    (a Secret may hold up to 1 MiB), so split the chunks here."""
    buffer = bytearray()
    async for chunk in stream.iter_any():
        buffer.extend(chunk)
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                yield json.loads(line)
