"""Background work per key: one at a time, in order; asked again before it started, once."""

import asyncio

import pytest

from thingspace_operator.background import SerialTasks


async def test_work_for_one_key_runs_in_order_and_asked_again_early_runs_once() -> None:
    tasks, done = SerialTasks(), []
    release = asyncio.Event()

    async def first() -> None:
        await release.wait()
        done.append("first")

    async def again() -> None:
        done.append("again")

    tasks.run("fleet", first)
    await asyncio.sleep(0)  # the first has started: asking again queues a second run
    tasks.run("fleet", again)
    tasks.run("fleet", again)  # the second has not started: the same work
    tasks.run("other", again)
    release.set()
    await asyncio.wait_for(tasks.idle(), 5)
    assert done == ["again", "first", "again"]  # "other" did not wait for "fleet"


async def test_a_failure_is_logged_by_type_and_the_next_work_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks, done = SerialTasks(), []

    async def fails() -> None:
        raise RuntimeError("a message that could quote a response")

    async def then() -> None:
        done.append("then")

    tasks.run("fleet", fails)
    await asyncio.sleep(0)
    tasks.run("fleet", then)
    await asyncio.wait_for(tasks.idle(), 5)
    assert done == ["then"]
    assert "Background work for fleet failed (RuntimeError)" in caplog.text
    assert "could quote" not in caplog.text


async def test_closing_cancels_what_is_pending() -> None:
    tasks = SerialTasks()
    tasks.run("fleet", asyncio.Event().wait)
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.close(), 5)
    await asyncio.wait_for(tasks.idle(), 5)
