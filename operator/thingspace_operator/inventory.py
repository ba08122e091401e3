"""The operator's own maps of the objects it watches: who claims which registration, which
callbacks use which Secret or ThingSpaceAccount, and the accounts themselves.

kopf indexes kept these before. At start-up kopf makes every object's worker wait until
every object is indexed, and each newly seen object wakes every waiting worker: about N²/2
wake-ups, 272 s to resume 5000 resources (docs/performance.md). The maps are now fed by
the event handlers the operator has anyway, and one ``asyncio.Event`` says when every
object that existed at start-up has been seen: handlers that decide ownership wait on it
once, so a resource never takes a registration that an older one, not yet seen, owns.
"""

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .account import AccountSpec
from .kube.claims import Claim, claim_key, claim_of
from .kube.connection import KubeApiError
from .kube.secrets import referenced_secrets
from .model import InvalidSpec

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")
ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for ThingSpaceAccounts
CALLBACK, ACCOUNT = "callback", "account"
Listed = tuple[str, ObjectKey]  # (kind, key) of an object the start-up listing found


class Index(Mapping[K, Collection[V]], Generic[K, V]):
    """key -> the values objects file under it. An object's entries replace the ones it
    filed before, and go when it goes. A key only one object files under (most claims)
    holds just that pair: a dict for each would cost about 170 bytes more per resource."""

    def __init__(self) -> None:
        self._by_key: dict[K, tuple[ObjectKey, V] | dict[ObjectKey, V]] = {}
        self._keys_of: dict[ObjectKey, tuple[K, ...]] = {}

    def put(self, obj: ObjectKey, entries: Mapping[K, V]) -> None:
        self.drop(obj)
        for key, value in entries.items():
            found = self._by_key.get(key)
            if found is None:
                self._by_key[key] = (obj, value)
            elif isinstance(found, tuple):
                self._by_key[key] = {found[0]: found[1], obj: value}
            else:
                found[obj] = value
        if entries:
            self._keys_of[obj] = tuple(entries)

    def drop(self, obj: ObjectKey) -> None:
        for key in self._keys_of.pop(obj, ()):
            found = self._by_key[key]
            if isinstance(found, tuple):
                del self._by_key[key]
                continue
            del found[obj]
            if len(found) == 1:
                self._by_key[key] = next(iter(found.items()))

    def __getitem__(self, key: K) -> Collection[V]:
        found = self._by_key[key]
        return (found[1],) if isinstance(found, tuple) else found.values()

    def __iter__(self) -> Iterator[K]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)


class Inventory:
    """The maps, and whether they are complete yet."""

    def __init__(self) -> None:
        self.claims: Index[tuple[str, str], Claim] = Index()
        self.secret_users: Index[ObjectKey, str] = Index()  # (namespace, Secret) -> names
        self.account_users: Index[str, ObjectKey] = Index()  # account -> callbacks
        self.accounts: dict[str, AccountSpec] = {}  # by object name; invalid: absent
        self._complete = asyncio.Event()
        self._seen: set[Listed] | None = set()  # until complete: what the events showed
        self._awaited: set[Listed] | None = None  # found by the listing, not seen yet

    # Fed by the event handlers.

    def callback_seen(self, body: Mapping[str, Any]) -> Claim:
        """File the callback; its claim (the drift sweep keeps the same one)."""
        meta = body.get("metadata") or {}
        namespace, name = sys.intern(str(meta.get("namespace") or "")), str(meta.get("name"))
        spec = body.get("spec") or {}
        obj = (namespace, name)
        key = claim_key(spec)
        claim = claim_of(meta, namespace)
        self.claims.put(obj, {key: claim} if key else {})
        self.secret_users.put(
            obj, {(namespace, secret): name for secret in referenced_secrets(spec)}
        )
        ref = spec.get("accountRef")
        account = ref.get("name") if isinstance(ref, Mapping) else None
        self.account_users.put(obj, {account: obj} if isinstance(account, str) else {})
        self._saw(CALLBACK, obj)
        return claim

    def callback_gone(self, namespace: str, name: str) -> None:
        obj = (namespace, name)
        for index in (self.claims, self.secret_users, self.account_users):
            index.drop(obj)
        self._saw(CALLBACK, obj)

    def account_seen(self, name: str, spec: Mapping[str, Any]) -> AccountSpec | None:
        """File the account; its parsed spec, or None when invalid (reported on the
        account; its callbacks see it as not found)."""
        try:
            parsed: AccountSpec | None = AccountSpec.parse(name, spec)
        except InvalidSpec:
            parsed = None
        if parsed is None:
            self.accounts.pop(name, None)
        else:
            self.accounts[name] = parsed
        self._saw(ACCOUNT, ("", name))
        return parsed

    def account_gone(self, name: str) -> None:
        self.accounts.pop(name, None)
        self._saw(ACCOUNT, ("", name))

    # Completeness.

    @property
    def complete(self) -> bool:
        """Every object that existed at start-up has been seen."""
        return self._complete.is_set()

    async def wait_complete(self) -> None:
        await self._complete.wait()

    def expect(self, listed: Iterable[Listed]) -> None:
        """The start-up listing found these: complete once each has been seen."""
        self._awaited = set(listed) - (self._seen or set())
        self._settle()

    def awaited(self) -> set[Listed]:
        return set(self._awaited or ())

    def confirm_gone(self, obj: Listed) -> None:
        """Deleted before kopf's own listing: no event will ever show it."""
        if self._awaited is not None:
            self._awaited.discard(obj)
            self._settle()

    def _saw(self, kind: str, obj: ObjectKey) -> None:
        if self._seen is not None:
            self._seen.add((kind, obj))
        if self._awaited is not None:
            self._awaited.discard((kind, obj))
            self._settle()

    def _settle(self) -> None:
        if self._awaited is not None and not self._awaited and not self.complete:
            self._seen = self._awaited = None  # kept no longer than needed
            self._complete.set()


Lister = Callable[[], Awaitable[list[Listed]]]
LONGEST_POLL = 30.0


async def fill(inventory: Inventory, list_all: Lister, poll: float = 2.0) -> None:
    """List every watched object once (names only), then wait until the events have shown
    each. While the events make no progress, the names are listed again: an object no
    longer there was deleted before kopf listed it, and is let go. The wait between
    listings doubles while nothing changes."""
    inventory.expect(await _retrying(list_all, "list the watched objects"))
    left, wait = len(inventory.awaited()), poll
    while not inventory.complete:
        try:
            await asyncio.wait_for(inventory.wait_complete(), wait)
            return
        except TimeoutError:
            pass
        if len(inventory.awaited()) < left:  # still arriving
            left, wait = len(inventory.awaited()), poll
            continue
        listed = set(await _retrying(list_all, "list the watched objects again"))
        for obj in inventory.awaited() - listed:
            inventory.confirm_gone(obj)
        left, wait = len(inventory.awaited()), min(wait * 2, LONGEST_POLL)
        if left:
            log.info("Waiting for %d objects listed at start-up to be seen", left)


async def _retrying(call: Callable[[], Awaitable[V]], what: str) -> V:
    """The API server may be briefly unavailable at start-up: retry with backoff."""
    delay = 1.0
    while True:
        try:
            return await call()
        except Exception as exc:
            log.warning("Could not %s (%s); again in %.0f s", what, _described(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


def _described(exc: Exception) -> str:
    """The API server's status and reason (a 403 needs RBAC fixed); of anything else, the
    type only: its message could quote a response."""
    return str(exc) if isinstance(exc, KubeApiError) else type(exc).__name__
