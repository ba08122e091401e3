"""Run the real kopf operator in the current event loop against an emulated API server.

kopf's reactor (watchers, workers, timers, finalizers, event posting) runs for real; only
the login is pointed at the emulator, and the operator's own requests go there too.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import kopf

from thingspace_operator.config import OperatorConfig
from thingspace_operator.handlers import build_registry
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.login import Login
from thingspace_operator.reconciler import Runtime


@asynccontextmanager
async def running_operator(kube_url: str, config: OperatorConfig) -> AsyncIterator[Runtime]:
    info = kopf.ConnectionInfo(server=kube_url, insecure=True, default_namespace="default")
    login = Login(KubeConnection(info))
    registry = build_registry(config, login=login)
    runtime = Runtime.create(config, login.connection)
    stop, ready = asyncio.Event(), asyncio.Event()
    # kopf cancels every task it did not start unless told to ignore it at shutdown.
    ignored = set(asyncio.all_tasks())
    tasks = await kopf.spawn_tasks(
        registry=registry,
        memo=kopf.Memo(runtime=runtime),
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        stop_flag=stop,
        ready_flag=ready,
    )
    reactor = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield runtime
    finally:
        ignored.add(asyncio.current_task())  # type: ignore[arg-type]
        ignored.update(
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
        )
        stop.set()
        try:
            await asyncio.wait_for(reactor, 15)
        finally:
            await login.close()
