"""Work a watch asks for but must not wait on: run in the background, one at a time per
key, in the order asked."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class SerialTasks:
    def __init__(self) -> None:
        self._last: dict[Hashable, asyncio.Task[None]] = {}
        self._waiting: set[Hashable] = set()  # keys whose last work has not started yet
        self._pending: set[asyncio.Task[None]] = set()

    def run(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        """Start ``work`` once the work asked for ``key`` before has finished. Work asked
        again before the last one started is the same work: it reads the state when it
        starts, so it is not asked twice."""
        if key in self._waiting:
            return
        before = self._last.get(key)

        async def after_the_work_before() -> None:
            if before is not None:
                await asyncio.wait([before])  # its failure was logged; this runs anyway
            self._waiting.discard(key)
            await work()

        task = asyncio.create_task(after_the_work_before(), name=f"background {key}")
        self._last[key] = task
        self._waiting.add(key)
        self._pending.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: Hashable, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if self._last.get(key) is task:
            del self._last[key]
            self._waiting.discard(key)  # cancelled before it started
        failure = None if task.cancelled() else task.exception()
        if failure is not None:  # its type only: a message could quote a response
            log.error("Background work for %s failed (%s)", key, type(failure).__name__)

    async def idle(self) -> None:
        """Until no work is pending."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    async def close(self) -> None:
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
