"""The operator's own maps of the objects it watches: who claims which registration, which
callbacks use which Secret or ThingSpaceAccount, and the accounts themselves.

kopf indexes kept these before. At start-up kopf makes every object's worker wait until
every object is indexed, and each newly seen object wakes every waiting worker: about N²/2
wake-ups, 272 s to resume 5000 resources (docs/performance.md). The maps are now fed by
the event handlers the operator has anyway, and filled at start-up from the operator's own
listing of every watched object, so they are complete as soon as that listing is: no
handler waits for kopf's pass over every object.

An object deleted between that listing and kopf's own one is never shown by an event:
until each listed object has been seen by an event or found gone by a later listing, the
maps may hold such a phantom. The one decision a phantom could make wrong for good, a
deletion judging that an older phantom owns its registration (which would then stay in
ThingSpace), waits until the listing is *confirmed*. Until it is let go, a phantom
callback may keep a younger claimant in Conflict, delay an Authoritative prune, or be
checked by the first sweep; a phantom ThingSpaceAccount may serve its callbacks. Whoever
it may have misled is asked to reconcile when it goes.
"""

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
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

    def entries_of(self, obj: ObjectKey) -> dict[K, V]:
        """What ``obj`` files, by key."""
        entries: dict[K, V] = {}
        for key in self._keys_of.get(obj, ()):
            found = self._by_key[key]
            entries[key] = found[1] if isinstance(found, tuple) else found[obj]
        return entries

    def __getitem__(self, key: K) -> Collection[V]:
        found = self._by_key[key]
        return (found[1],) if isinstance(found, tuple) else found.values()

    def __iter__(self) -> Iterator[K]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)


class Inventory:
    """The maps, and whether they are complete (filled from the start-up listing) and
    confirmed (no phantom left) yet."""

    def __init__(self) -> None:
        self.claims: Index[tuple[str, str], Claim] = Index()
        self.secret_users: Index[ObjectKey, str] = Index()  # (namespace, Secret) -> names
        self.account_users: Index[str, ObjectKey] = Index()  # account -> callbacks
        self.accounts: dict[str, AccountSpec] = {}  # by object name; invalid: absent
        self._complete = asyncio.Event()
        self._confirmed = asyncio.Event()
        self._seen: set[Listed] | None = set()  # until complete: what the events showed
        self._awaited: dict[Listed, str] = {}  # listed, no event showed it yet: its version

    # Fed by the event handlers.

    def callback_seen(self, body: Mapping[str, Any]) -> Claim:
        """File the callback; its claim (the drift sweep keeps the same one)."""
        claim, obj = self._file_callback(body)
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
        parsed = self._file_account(name, spec)
        self._saw(ACCOUNT, ("", name))
        return parsed

    def account_gone(self, name: str) -> None:
        self.accounts.pop(name, None)
        self._saw(ACCOUNT, ("", name))

    def first_event(self, kind: str, obj: ObjectKey) -> str | None:
        """An event shows this object. The resourceVersion at which the start-up listing
        filed it, if that listing did and no event had shown it yet: the same version
        needs no filing again."""
        version = self._awaited.pop((kind, obj), None)
        self._settle()
        return version

    def _file_callback(self, body: Mapping[str, Any]) -> tuple[Claim, ObjectKey]:
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
        return claim, obj

    def _file_account(self, name: str, spec: Mapping[str, Any]) -> AccountSpec | None:
        try:
            parsed: AccountSpec | None = AccountSpec.parse(name, spec)
        except InvalidSpec:
            parsed = None
        if parsed is None:
            self.accounts.pop(name, None)
        else:
            self.accounts[name] = parsed
        return parsed

    # Filled from the start-up listing.

    def listed_callback(self, body: Mapping[str, Any]) -> Claim | None:
        """File a callback as the start-up listing shows it; its claim, or None when an
        event has shown it already (as new as the listing, or newer)."""
        obj = _key(body)
        if not self._may_file(CALLBACK, obj, body):
            return None
        return self._file_callback(body)[0]

    def listed_account(self, body: Mapping[str, Any]) -> None:
        obj = _key(body)
        if self._may_file(ACCOUNT, obj, body):
            self._file_account(obj[1], body.get("spec") or {})

    def _may_file(self, kind: str, obj: ObjectKey, body: Mapping[str, Any]) -> bool:
        if self._seen is None or (kind, obj) in self._seen:
            return False
        self._awaited[(kind, obj)] = str((body.get("metadata") or {}).get("resourceVersion"))
        return True

    def listing_filed(self) -> None:
        """Every page of the start-up listing is filed: the maps are complete."""
        self._seen = None
        self._complete.set()
        self._settle()

    # Completeness.

    @property
    def complete(self) -> bool:
        """Every object that existed at start-up is filed (some may be phantoms)."""
        return self._complete.is_set()

    async def wait_complete(self) -> None:
        await self._complete.wait()

    @property
    def confirmed(self) -> bool:
        """Complete, and every object filed from the listing was shown by an event or
        found gone since: no phantom is left."""
        return self._confirmed.is_set()

    async def wait_confirmed(self) -> None:
        await self._confirmed.wait()

    def awaited(self) -> set[Listed]:
        """The listed objects no event has shown yet."""
        return set(self._awaited)

    def awaits(self, obj: Listed) -> bool:
        return obj in self._awaited

    def _saw(self, kind: str, obj: ObjectKey) -> None:
        if self._seen is not None:
            self._seen.add((kind, obj))
        if self._awaited.pop((kind, obj), None) is not None:
            self._settle()

    def _settle(self) -> None:
        if self.complete and not self._awaited and not self.confirmed:
            self._confirmed.set()


def _key(body: Mapping[str, Any]) -> ObjectKey:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name"))


Lister = Callable[[], Awaitable[list[Listed]]]
LONGEST_POLL = 30.0


async def fill(
    inventory: Inventory,
    load: Callable[[], Awaitable[None]],
    list_names: Lister,
    let_go: Callable[[Listed], Awaitable[None]],
    poll: float = 2.0,
) -> None:
    """File every watched object from one listing (``load``), then wait until the events
    have shown each. While the events make no progress, the names are listed again: an
    object no longer there was deleted before kopf listed it, and ``let_go`` forgets it
    (through ``callback_gone`` or ``account_gone``). The wait between listings doubles
    while nothing changes."""
    await _retrying(load, "list the watched objects")
    inventory.listing_filed()
    left, wait = len(inventory.awaited()), poll
    while not inventory.confirmed:
        try:
            await asyncio.wait_for(inventory.wait_confirmed(), wait)
            return
        except TimeoutError:
            pass
        if len(inventory.awaited()) < left:  # still arriving
            left, wait = len(inventory.awaited()), poll
            continue
        listed = set(await _retrying(list_names, "list the watched objects again"))
        for obj in inventory.awaited() - listed:
            if inventory.awaits(obj):  # no event has shown it since (re-created?)
                await let_go(obj)
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
