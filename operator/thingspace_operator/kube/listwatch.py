"""A list, then a watch from the listed resourceVersion, of one kind of object: what
client-go calls a reflector, for the operator's own maps.

List a page at a time, then watch with bookmarks from the version the list was taken at;
a 410 Gone (that version was compacted away) or any failure starts over with a fresh list,
and objects that vanished meanwhile are reported deleted. Since the watch continues from
the listing, no change between the two is missed: the maps built from it are exact.

Used for the labelled credential Secrets (kube/secretwatch.py), and for the
ThingSpaceCallbacks and ThingSpaceAccounts the inventory keeps (docs/performance.md: an
event through kopf's handler machinery costs several times as much).
"""

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .connection import KubeConnection

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
#: Seconds a watch stream must last before it is re-opened at once (else: a pause).
SHORTEST_STREAM = 1.0


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED or DELETED
    object: Mapping[str, Any] = field(repr=False)
    """The object as the API server sent it; of a deletion found by a listing, only its
    namespace and name."""
    initial: bool = False
    """Part of the first listing: what was already there when the watch started."""

    @functools.cached_property
    def key(self) -> ObjectKey:  # read several times per event: parsed once
        return _key(self.object)

    @property
    def version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


Listener = Callable[[WatchEvent], Awaitable[None]]
Scope = str | None  # a namespace, or None: every namespace (or a cluster-scoped kind)


class WatchFailed(Exception):
    """The API server refused or broke the list or watch (message: status, never data)."""


class _Expired(Exception):
    """The resourceVersion is too old (410 Gone): list again."""


class ListWatch:
    """Keeps ``listener`` informed of every object of the collection ``path(scope)`` in
    each scope, until stopped. ``what`` names the objects in log lines."""

    def __init__(
        self,
        connection: KubeConnection,
        path: Callable[[Scope], str],
        listener: Listener,
        scopes: tuple[str, ...] = (),
        *,
        what: str,
        label_selector: str | None = None,
        page_size: int = 500,
        server_timeout: float = 300.0,
        retry_max_seconds: float = 30.0,
        may_be_absent: bool = False,
    ) -> None:
        """``may_be_absent``: a 404 on the list means the resource is not served (its CRD
        not installed yet), which lists as empty; otherwise it is a failure like any
        other, and what is known is kept."""
        self._connection = connection
        self._path = path
        self._listener = listener
        self._scopes: tuple[Scope, ...] = scopes or (None,)
        self._what = what
        self._selector = {"labelSelector": label_selector} if label_selector else {}
        self._page_size = page_size
        self._server_timeout = server_timeout
        self._retry_max = retry_max_seconds
        self._may_be_absent = may_be_absent
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._known: dict[Scope, dict[ObjectKey, str]] = {s: {} for s in self._scopes}
        self._going: set[ObjectKey] = set()  # deletions being delivered
        self._broken: set[Scope] = set(self._scopes)  # scopes not listed since a failure
        self._listed = asyncio.Event()
        self.on_gap: Callable[[], None] | None = None
        """Called when a scope's watch fails: its objects may change unseen meanwhile."""

    @property
    def healthy(self) -> bool:
        """Every scope is listed, and no watch has failed since."""
        return not self._broken

    def tracks(self, key: ObjectKey, version: str | None = None) -> bool:
        """Whether changes of this object reach the listener right now (``version``: and
        the last one that reached it is this one, so nothing newer is already past)."""
        if self._broken or key in self._going:
            return False
        return any(key in known and version in (None, known[key]) for known in self._known.values())

    async def wait_listed(self) -> None:
        """Until every scope's first listing has reached the listener."""
        await self._listed.wait()

    def start(self) -> None:
        self._session = self._connection.session()
        self._tasks = [
            asyncio.create_task(self._keep_watching(scope), name=f"watch {self._what} {scope}")
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

    async def _keep_watching(self, scope: Scope) -> None:
        """List and watch until cancelled. Nothing but cancellation ends it: a failure of
        the API server or of the listener means a pause and a fresh list."""
        first = True
        failures = 0  # in a row: only a stream that lasted resets it
        while True:
            try:
                version = await self._relist(scope, first)
                first = False
                self._listed_once(scope)
                if version is None:  # not served (yet): nothing to watch, look again later
                    await asyncio.sleep(self._retry_max)
                    continue
                while True:
                    started = time.monotonic()
                    version = await self._watch(scope, version)
                    if time.monotonic() - started >= SHORTEST_STREAM:
                        failures = 0
                    else:
                        await asyncio.sleep(SHORTEST_STREAM)  # no hot loop on empty streams
            except _Expired:
                # Normal once in a while (compaction); over and over, a fault like any other.
                failures += 1
                if failures < 3:
                    where = scope or "all namespaces"
                    log.debug("Watch of %s in %s expired; listing again", self._what, where)
                    self._gap(scope)  # events were missed: nothing vouched for until relisted
                    continue
                await self._pause(scope, failures, "410 Gone again and again")
            except Exception as exc:  # never ends the watch; says what, never any data
                failures += 1
                reason = str(exc) if isinstance(exc, WatchFailed) else type(exc).__name__
                await self._pause(scope, failures, reason)

    def _listed_once(self, scope: Scope) -> None:
        self._broken.discard(scope)
        if not self._broken:
            self._listed.set()

    def _gap(self, scope: Scope) -> None:
        """Until this scope is listed again, the watch is not healthy and tracks nothing."""
        if scope not in self._broken:
            self._broken.add(scope)
            if self.on_gap is not None:
                self.on_gap()

    async def _pause(self, scope: Scope, failures: int, reason: str) -> None:
        """Report the gap, then back off exponentially before listing again."""
        self._gap(scope)
        delay = min(self._retry_max, 0.5 * 2 ** min(failures, 10))
        log.warning(
            "Watch of %s in %s failed (%s); retrying in %.1f s",
            self._what,
            scope or "all namespaces",
            reason,
            delay,
        )
        await asyncio.sleep(delay)

    async def _relist(self, scope: Scope, first: bool) -> str | None:
        """Deliver the objects listed now that are new or changed, then the deletions
        missed; the version the listing was taken at. None: the resource is not served
        (its CRD is not installed), which lists as empty."""
        known = self._known[scope]
        listed: dict[ObjectKey, str] = {}
        params = {**self._selector, "limit": str(self._page_size)}
        version: str | None = None
        # A page at a time: a large fleet is never all in memory at once.
        while (page := await self._get_json(scope, params)) is not None:
            for obj in page.get("items") or ():
                event = WatchEvent("MODIFIED" if _key(obj) in known else "ADDED", obj, first)
                listed[event.key] = event.version
                if known.get(event.key) != event.version:
                    await self._listener(event)
                    # Known from now on: if a later page fails, the next listing must
                    # still report it gone.
                    known[event.key] = event.version
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                version = str(meta.get("resourceVersion") or "")
                break
            params["continue"] = str(meta["continue"])
        vanished = set(known) - set(listed)
        self._going.update(vanished)  # first: a read meanwhile is untracked
        try:
            for namespace, name in sorted(vanished):
                await self._listener(_deleted(namespace, name))
        finally:
            self._going.difference_update(vanished)
        known.clear()
        known.update(listed)
        return version

    async def _get_json(self, scope: Scope, params: dict[str, str]) -> Mapping[str, Any] | None:
        """A page of the list; None when the resource is not served."""
        async with self._get(scope, params, aiohttp.ClientTimeout(total=60), "listing") as got:
            if got.status == 404:  # only if it may be absent: see _get
                return None
            body: Mapping[str, Any] = await got.json()
            return body

    @contextlib.asynccontextmanager
    async def _get(
        self, scope: Scope, params: dict[str, str], limits: aiohttp.ClientTimeout, what: str
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
            absent = response.status == 404 and what == "listing" and self._may_be_absent
            if response.status != 200 and not absent:
                raise WatchFailed(f"HTTP {response.status} {what} {self._what}")
            yield response

    async def _watch(self, scope: Scope, version: str) -> str:
        """Deliver events from ``version`` on until the server ends the stream; the version
        to watch from next."""
        params = {
            **self._selector,
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
                version = await self._deliver(scope, event) or version
        return version

    async def _deliver(self, scope: Scope, event: Mapping[str, Any]) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise WatchFailed(f"watch error {obj.get('code')} {obj.get('reason')}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            watched = WatchEvent(str(kind), obj)
            known = self._known[scope]
            if kind == "DELETED":
                self._going.add(watched.key)  # first: a read meanwhile is not tracked
                try:
                    await self._listener(watched)
                finally:
                    self._going.discard(watched.key)
                # Only once the listener has it: if it failed, the next list delivers it again.
                known.pop(watched.key, None)
            else:
                await self._listener(watched)
                known[watched.key] = watched.version
            return watched.version
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")  # BOOKMARK


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _deleted(namespace: str, name: str) -> WatchEvent:
    return WatchEvent("DELETED", {"metadata": {"namespace": namespace, "name": name}})


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
