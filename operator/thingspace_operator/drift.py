"""Drift checks: one sweep per period over every resource, one list per account.

A kopf timer per resource cost two asyncio tasks and a copy of the body each (about 14 KB
per resource, 70 MB at 5000) and fired on each resource's own clock, so lists bunched
unevenly across periods. The sweep instead wakes at the start of each period, lists every
account at most once, and only *observes*: a resource whose live registration or status
is not what it should be gets a reconcile request, and the kopf handler for that request
corrects it and writes status and Events. A check that finds nothing writes nothing.
"""

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .kube.claims import ACCOUNT_REF, Claim, claim_key, claim_of
from .model import KOPF_ANNOTATION_PREFIX, KOPF_EARLIER_DIFFBASE_KEY

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a drift check needs of one resource: its latest spec, status and claim.

    Spec and status are kept as JSON text: parsed dicts would cost about three times the
    memory, held for every resource, and a check parses them once per period.
    """

    namespace: str
    name: str
    generation: int | None
    claim: Claim
    registration: tuple[str, str] | None  # (account, service), as the claims index keys it
    spec_json: str
    status_json: str
    uid: str = ""
    credentials_failed: bool = False
    """Its last reconcile failed on its Secret: checked every period, so a Secret that is
    created or fixed heals it within one period even when no watch reports it."""
    current: bool = False
    """Its status reports its current generation: a handler has finished with it. kopf
    runs no handler for such a resource after a restart, so the first sweep checks it."""

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def account(self) -> str:
        return self.registration[0] if self.registration else ""

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.spec_json))

    @property
    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.status_json))

    @classmethod
    def of(cls, body: Mapping[str, Any], claim: Claim | None = None) -> "Tracked":
        meta = body.get("metadata") or {}
        namespace = sys.intern(str(meta.get("namespace") or ""))
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        return cls(
            namespace=namespace,
            name=str(meta.get("name")),
            generation=meta.get("generation"),
            claim=claim or claim_of(meta, namespace),
            registration=claim_key(spec),
            spec_json=_json(spec),
            status_json=_json(_checked_status(status)),
            uid=str(meta.get("uid") or ""),
            credentials_failed=_synced_reason(status) in CREDENTIAL_FAILURES,
            current=_settled(meta, status),
        )


CREDENTIAL_FAILURES = frozenset(
    {"CredentialsNotFound", "CredentialsInvalid", "AuthenticationFailed"}
)


def _settled(meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """A handler has finished with this generation: the status reports it, and kopf
    holds no progress of a handler it still retries."""
    generation = meta.get("generation")
    if generation is None or status.get("observedGeneration") != generation:
        return False
    return not any(_is_progress(key) for key in meta.get("annotations") or ())


def _is_progress(annotation: str) -> bool:
    prefix, _, key = annotation.partition("/")
    return prefix == KOPF_ANNOTATION_PREFIX and key != KOPF_EARLIER_DIFFBASE_KEY


def _synced_reason(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Synced" and condition.get("status") == "False":
            return str(condition.get("reason"))
    return ""


# Status fields kopf and the reconcile-now handler keep for themselves. A drift check never
# reads them, and the handled configuration repeats the whole spec: not kept per resource.
UNCHECKED_STATUS = frozenset({"lastHandledConfiguration", "lastHandledReconcileAt", "kopf"})


def _checked_status(status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key not in UNCHECKED_STATUS}


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), default=dict)


def window_start(period: float, now: float | None = None) -> float:
    """Start of the current drift period on the monotonic clock: periods are shared, so
    every check in one period can reuse one list per account."""
    moment = time.monotonic() if now is None else now
    return moment - (moment % period)


Check = Callable[[Tracked, float, bool], Awaitable[None]]
"""A check of one resource: (resource, start of the period, whether the sweep resumes)."""


class DriftSweep:
    """The resources to check, and the loop that checks them once per period."""

    def __init__(self, period: float, concurrency: int = 16) -> None:
        self.period = period
        self.concurrency = concurrency
        self._tracked: dict[Key, Tracked] = {}
        self._handled_at: dict[Key, float] = {}
        self._requested: dict[Key, float] = {}
        self._secrets_read: dict[Key, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._before_each: Callable[[], Awaitable[None]] | None = None
        self._after_each: Callable[[float], Awaitable[None]] | None = None
        self.sweeps = 0
        self.account_names: Callable[[], Mapping[str, str]] = dict
        """ThingSpaceAccount name -> billing account, for log lines (set by the runtime)."""

    def start(
        self,
        check: Check,
        before_each: Callable[[], Awaitable[None]] | None = None,
        after_each: Callable[[float], Awaitable[None]] | None = None,
        first: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``after_each`` gets the period's start: lists made by the checks serve it.
        No sweep starts before ``first`` has returned."""
        self._before_each = before_each
        self._after_each = after_each
        self._task = asyncio.create_task(self.run(check, first), name="drift sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def track(self, body: Mapping[str, Any], claim: Claim | None = None) -> None:
        """``claim``: the resource's claim, if made of this body already (one is kept)."""
        tracked = Tracked.of(body, claim)
        self._tracked[tracked.key] = tracked

    def forget(self, namespace: str, name: str) -> None:
        for bookkeeping in (self._tracked, self._handled_at, self._requested, self._secrets_read):
            bookkeeping.pop((namespace, name), None)

    def handled(self, namespace: str, name: str, at: float | None = None) -> None:
        """A handler has just reconciled this resource against a fresh list."""
        self._handled_at[(namespace, name)] = time.monotonic() if at is None else at

    def request(self, key: Key, listed_since: float) -> None:
        """A check found work for the handler; its list (fetched after ``listed_since``)
        is fresh enough for the correction, so the handler need not list again."""
        self._requested[key] = listed_since

    def take_request(self, key: Key) -> float | None:
        return self._requested.pop(key, None)

    def secrets_read(self, key: Key, at: float) -> None:
        """The operator read this resource's changed Secret at ``at`` and asks it to
        reconcile: that read will do, so a thousand users of one Secret cost no more GETs."""
        self._secrets_read[key] = at

    def take_secrets_read(self, key: Key) -> float | None:
        return self._secrets_read.pop(key, None)

    def tracked(self, key: Key) -> Tracked | None:
        return self._tracked.get(key)

    def registration_of(self, key: Key) -> tuple[str, str] | None:
        """(account, service) of a known resource, for log lines. The account of a callback
        by ``accountRef`` is the billing account it registers in (as its status records
        it), else the one its ThingSpaceAccount holds, else ``ThingSpaceAccount/<name>``."""
        tracked = self._tracked.get(key)
        if tracked is None or tracked.registration is None:
            return None
        account, service = tracked.registration
        if account.startswith(ACCOUNT_REF):
            # The status's, once recorded: the map of every account only until then.
            recorded = tracked.status.get("accountName")
            held = recorded or self.account_names().get(account.removeprefix(ACCOUNT_REF))
            account = str(held or account)
        return account, service

    def __len__(self) -> int:
        return len(self._tracked)

    def due(self, now: float, resuming: bool = False) -> list[Tracked]:
        """Resources to check now: not being deleted, and last reconciled or checked at
        least a period ago.

        A new or changed resource goes to kopf's create or update handler first; until
        that has run, it is the handler's, not the sweep's. Skipping the recently
        reconciled keeps a burst of new resources from paying for a second list per
        account, and a reconcile request each, while they converge. After a restart kopf
        runs no handler for an unchanged resource: the first sweep (``resuming``) checks it.
        """
        return [
            tracked
            for key, tracked in self._tracked.items()
            if not tracked.claim.deleting and self._is_due(key, tracked, now, resuming)
        ]

    def _is_due(self, key: Key, tracked: Tracked, now: float, resuming: bool) -> bool:
        if tracked.credentials_failed:
            return True
        handled = self._handled_at.get(key)
        if handled is None:
            return resuming and tracked.current
        return now - handled >= self.period

    async def run(self, check: Check, first: Callable[[], Awaitable[None]] | None = None) -> None:
        """Resume every unchanged resource once ``first`` has returned, then sweep at the
        start of every period until cancelled."""
        if first is not None:
            await first()
        await self.sweep(check, time.monotonic(), resuming=True)
        while True:
            now = time.monotonic()
            await asyncio.sleep(window_start(self.period, now) + self.period - now)
            await self.sweep(check, window_start(self.period))

    async def sweep(self, check: Check, since: float, resuming: bool = False) -> None:
        """Check every due resource, accounts side by side, each account's in turn: the
        first check of an account lists it, the rest reuse that list."""
        if self._before_each is not None:
            try:
                await self._before_each()
            except Exception:
                log.exception("Preparing the drift sweep failed")
        by_account = _group(self.due(since, resuming), lambda t: t.account)
        gate = asyncio.Semaphore(self.concurrency)

        async def one_account(resources: list[Tracked]) -> None:
            async with gate:
                for tracked in resources:
                    try:
                        await check(tracked, since, resuming)
                    except Exception:  # one bad resource must not stop the sweep
                        log.exception("Drift check of %s/%s failed", *tracked.key)

        await asyncio.gather(*(one_account(group) for group in by_account.values()))
        if resuming:
            # Whatever a handler has not reconciled by now is checked from the next period
            # on, as if this sweep had: none is left to a handler that never runs.
            for key in self._tracked:
                self._handled_at.setdefault(key, since)
        if self._after_each is not None:
            try:
                await self._after_each(since)
            except Exception:
                log.exception("Finishing the drift sweep failed")
        self.sweeps += 1


def _group(items: Iterable[Tracked], key: Callable[[Tracked], str]) -> dict[str, list[Tracked]]:
    groups: dict[str, list[Tracked]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups
