"""The operator's own maps of the objects it watches: who claims which registration, which
callbacks use which Secret or ThingSpaceAccount, and the accounts themselves.

kopf indexes kept these before. At start-up kopf makes every object's worker wait until
every object is indexed, and each newly seen object wakes every waiting worker: about N²/2
wake-ups, 272 s to resume 5000 resources (docs/performance.md). The maps are fed by the
operator's own list and watch of ThingSpaceCallbacks and ThingSpaceAccounts
(kube/listwatch.py), and are complete as soon as the first listing of both is filed: no
handler waits for kopf's pass over every object. The watch continues from that listing, so
no object deleted between the two lingers in them; a handler that decides ownership waits
until that watch has shown its own resource (reconciler.Runtime.wait_shown).
"""

import asyncio
import sys
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .account import AccountSpec
from .kube.claims import Claim, claim_key, claim_of, in_conflict, registered_key
from .kube.listwatch import ObjectKey
from .kube.secrets import referenced_secrets
from .model import InvalidSpec

K = TypeVar("K")
V = TypeVar("V")


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
    """The maps, and whether they are complete (the first listing is filed) yet."""

    def __init__(self) -> None:
        self.claims: Index[tuple[str, str], Claim] = Index()
        self.secret_users: Index[ObjectKey, str] = Index()  # (namespace, Secret) -> names
        self.account_users: Index[str, ObjectKey] = Index()  # account -> callbacks
        self.accounts: dict[str, AccountSpec] = {}  # by object name; invalid: absent
        self._complete = asyncio.Event()

    def callback_seen(self, body: Mapping[str, Any]) -> Claim:
        """File the callback; its claim (the drift sweep keeps the same one)."""
        meta = body.get("metadata") or {}
        namespace, name = sys.intern(str(meta.get("namespace") or "")), str(meta.get("name"))
        spec = body.get("spec") or {}
        obj = (namespace, name)
        key = claim_key(spec)
        claim = claim_of(meta, namespace)
        claims = {key: claim} if key else {}
        # A callback by reference also claims the registration its status says it made:
        # while its ThingSpaceAccount is deleted, invalid or re-created, a younger one
        # naming that account inline must still see the owner. Not one in Conflict: it
        # made none, and must not become the heir of a registration it cannot reach.
        status = body.get("status")
        recorded = registered_key(key, status)
        if recorded and not in_conflict(status):
            claims[recorded] = claim
        self.claims.put(obj, claims)
        self.secret_users.put(
            obj, {(namespace, secret): name for secret in referenced_secrets(spec)}
        )
        ref = spec.get("accountRef")
        account = ref.get("name") if isinstance(ref, Mapping) else None
        self.account_users.put(obj, {account: obj} if isinstance(account, str) else {})
        return claim

    def callback_gone(self, namespace: str, name: str) -> None:
        obj = (namespace, name)
        for index in (self.claims, self.secret_users, self.account_users):
            index.drop(obj)

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
        return parsed

    def account_gone(self, name: str) -> None:
        self.accounts.pop(name, None)

    def mark_complete(self) -> None:
        """The first listing of every watched object is filed."""
        self._complete.set()

    @property
    def complete(self) -> bool:
        """Every object that existed at start-up is filed."""
        return self._complete.is_set()

    async def wait_complete(self) -> None:
        await self._complete.wait()
