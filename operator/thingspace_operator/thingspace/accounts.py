"""One shared view of an account's live callback list.

Every resource of an account (under one credential set) reads ThingSpace through the same
``AccountView``, so ThingSpace sees calls per account, not per resource:

- a caller says how fresh the list must be (``not_before``: the fetch must have started at
  or after that moment); a cached list that is fresh enough is reused;
- concurrent callers join the fetch already in flight when it is fresh enough for them
  (single flight);
- a failed fetch answers, like a list, every caller it is fresh enough for, and a 429's
  Retry-After holds every caller off: an outage costs one list per account, not one per
  resource;
- a fetch waits until the account's writes in flight have finished, so one list after a
  burst of registrations verifies all of them;
- writes go through the view and update the cached list;
- every call of the account waits for a slot in its calls-per-second budget and for one of
  a few concurrent-call slots, so bursts stay polite.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import ThingSpaceClient
from .errors import RateLimited
from .models import AppCredentials, Callback
from .ratelimit import RateLimiter

LiveCallbacks = dict[str, Callback]
WRITE_SETTLE_SECONDS = 0.5
MAX_HOLD_OFF_SECONDS = 300.0
"""Longest Retry-After honoured for the whole account: a drift period by default."""


@dataclass(frozen=True)
class Observation:
    started_at: float
    callbacks: LiveCallbacks


@dataclass(frozen=True)
class FailedList:
    started_at: float
    error: Exception
    hold_off_until: float  # no list before this (a 429's Retry-After)

    def answers(self, not_before: float, now: float) -> bool:
        return self.started_at >= not_before or now < self.hold_off_until


class AccountView:
    def __init__(
        self,
        client: ThingSpaceClient,
        account: str,
        max_concurrent_calls: int,
        calls_per_second: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.account = account
        self.budget = (max_concurrent_calls, calls_per_second)
        self._clock = clock
        self._calls = asyncio.Semaphore(max_concurrent_calls)
        self._budget = RateLimiter(calls_per_second, clock=clock)
        self._cached: Observation | None = None
        self._failed: FailedList | None = None
        self._inflight: tuple[float, asyncio.Task[Observation | Exception]] | None = None
        self._writes_in_flight = 0
        self._writes_done = asyncio.Condition()

    def now(self) -> float:
        return self._clock()

    @property
    def cached(self) -> "Observation | None":
        """The newest list (updated by this view's own writes), without a call."""
        return self._cached

    async def observe(self, not_before: float) -> LiveCallbacks:
        """The live callbacks, from a list call that started at or after ``not_before``."""
        while True:
            if self._cached is not None and self._cached.started_at >= not_before:
                return self._cached.callbacks
            if self._failed is not None and self._failed.answers(not_before, self._clock()):
                # A fresh traceback each time: re-raising one object would grow its own.
                raise self._failed.error.with_traceback(None)
            if self._inflight is None:
                self._inflight = (self._clock(), asyncio.create_task(self._fetch()))
            started_at, task = self._inflight
            if started_at >= not_before:
                return _unwrap(await asyncio.shield(task)).callbacks
            # Too old for this caller: let it finish, then start (or join) a newer one.
            await asyncio.wait([task])

    async def register(self, callback: Callback) -> float:
        """Register (or replace) ``callback``; returns when the write finished."""
        async with self._writing():
            await self.client.register(callback)
            self._update_cache(callback.service_name, callback)
        return self._clock()

    async def deregister(self, service: str) -> float:
        async with self._writing():
            await self.client.deregister(self.account, service)
            self._update_cache(service, None)
        return self._clock()

    async def _fetch(self) -> "Observation | Exception":
        """One list call shared by every waiting caller.

        It runs as its own task, so a failure is returned, never raised: an exception
        nobody retrieved would otherwise surface when the operator shuts down.
        """
        started_at = self._clock()
        try:
            await self._writes_settled()
            await self._budget.acquire()
            started_at = self._clock()
            async with self._calls:
                listed = await self.client.list_callbacks(self.account)
        except Exception as exc:
            self._failed = FailedList(started_at, exc, started_at + _hold_off(exc))
            return exc
        finally:
            self._inflight = None
        if self._failed is not None and self._failed.started_at <= started_at:
            self._failed = None
        observation = Observation(started_at, {cb.service_name: cb for cb in listed})
        if self._cached is None or self._cached.started_at <= started_at:
            self._cached = observation
        return observation

    async def close(self) -> None:
        """Abandon a list in flight: on shutdown nobody waits for it, and no call may
        follow the operator's stop (a standby may be about to take over)."""
        if self._inflight is not None:
            task = self._inflight[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _writes_settled(self) -> None:
        """Wait until no write is in flight, but not longer than WRITE_SETTLE_SECONDS: a
        steady stream of writes must not starve the list that verifies them."""
        async with self._writes_done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._writes_done.wait_for(lambda: self._writes_in_flight == 0),
                    WRITE_SETTLE_SECONDS,
                )

    def _update_cache(self, service: str, callback: Callback | None) -> None:
        if self._cached is None:
            return
        callbacks = dict(self._cached.callbacks)
        if callback is None:
            callbacks.pop(service, None)
        else:
            callbacks[service] = callback
        self._cached = Observation(self._cached.started_at, callbacks)

    def _writing(self) -> "_WriteGuard":
        return _WriteGuard(self)


def _hold_off(error: Exception) -> float:
    if isinstance(error, RateLimited) and error.retry_after:
        return min(error.retry_after, MAX_HOLD_OFF_SECONDS)
    return 0.0


def _unwrap(result: "Observation | Exception") -> Observation:
    if isinstance(result, Exception):
        raise result
    return result


class _WriteGuard:
    """Counts a write in flight and holds a budget slot and a call slot for it."""

    def __init__(self, view: AccountView) -> None:
        self._view = view

    async def __aenter__(self) -> None:
        self._view._writes_in_flight += 1
        try:
            await self._view._budget.acquire()
            await self._view._calls.acquire()
        except BaseException:
            await self._done()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._view._calls.release()
        await self._done()

    async def _done(self) -> None:
        view = self._view
        view._writes_in_flight -= 1
        async with view._writes_done:
            view._writes_done.notify_all()


class AccountViews:
    """The ``AccountView`` of each (credential set, account) pair, created on first use."""

    def __init__(self, max_concurrent_calls: int, calls_per_second: float = 10.0) -> None:
        self._max_concurrent_calls = max_concurrent_calls
        self._calls_per_second = calls_per_second
        self._views: dict[tuple[AppCredentials, str], AccountView] = {}
        self._budgets: dict[str, tuple[int, float]] = {}

    def set_budget(
        self, account: str, max_concurrent_calls: int | None, calls_per_second: float | None
    ) -> None:
        """An account's own budget (its ThingSpaceAccount), for every view of it."""
        self._budgets[account] = (
            max_concurrent_calls or self._max_concurrent_calls,
            calls_per_second or self._calls_per_second,
        )

    def view(self, client: ThingSpaceClient, account: str) -> AccountView:
        key = (client.credentials, account)
        budget = self._budgets.get(account, (self._max_concurrent_calls, self._calls_per_second))
        view = self._views.get(key)
        if view is None or view.client is not client or view.budget != budget:
            view = AccountView(client, account, *budget)
            self._views[key] = view
        return view

    async def close(self) -> None:
        await asyncio.gather(*(view.close() for view in self._views.values()))
