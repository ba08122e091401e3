"""Shared fixtures: a fresh simulator, emulated Kubernetes API and operator per test."""

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from tests.harness.kube import KubernetesEmulator, emulated_kubernetes
from tests.harness.operator import running_operator
from thingspace_operator.config import OperatorConfig
from thingspace_operator.kube.secretwatch import CREDENTIALS_LABEL
from thingspace_operator.reconciler import Runtime
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer

NAMESPACE = "iot"
ACCOUNT = "0000123456-00001"
DEMO_CREDENTIALS = {
    "appKey": "demo-app-key",
    "appSecret": "demo-app-secret",
    "username": "demo-user",
    "password": "demo-password",
}


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (KeyError, TypeError, AttributeError, IndexError):
            pass
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.05)


async def quiet_period(seconds: float) -> None:
    """Let time pass to prove something does NOT happen (no retries, no logins).

    Never used to wait for something to happen: that is what ``eventually`` is for.
    """
    await asyncio.sleep(seconds)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig()) as server:
        yield server


@pytest.fixture
async def k8s() -> AsyncIterator[KubernetesEmulator]:
    async with emulated_kubernetes() as emulator:
        yield emulator


class Cluster:
    """Test helper that speaks to the emulated API like kubectl would."""

    def __init__(self, k8s: KubernetesEmulator) -> None:
        self.k8s = k8s
        self.url = str(k8s.url).rstrip("/")
        #: Every password or app secret written through apply_secret, for leak checks.
        self.secret_values: set[str] = set()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, **kwargs) as response,
        ):
            assert response.status < 300, (method, path, response.status, await response.text())
            return await response.json()

    async def apply_secret(
        self,
        name: str,
        data: dict[str, str],
        namespace: str = NAMESPACE,
        labelled: bool | None = True,
    ) -> None:
        """Create or change a Secret, labelled ``thingspace.io/credentials=true`` as the
        docs ask (``labelled=False``: label removed; None: labels left as they are)."""
        self.secret_values.update(v for k, v in data.items() if k in ("appSecret", "password"))
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        metadata: dict[str, Any] = {"name": name}
        if labelled is not None:
            metadata["labels"] = {CREDENTIALS_LABEL: "true" if labelled else None}
        if self.secret(name, namespace) is None:
            if not labelled:
                metadata.pop("labels", None)
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": encoded}
            await self._request("POST", f"/api/v1/namespaces/{namespace}/secrets", json=body)
        else:
            await self._request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/secrets/{name}",
                json={"metadata": metadata, "data": encoded},
                headers={"Content-Type": "application/merge-patch+json"},
            )

    async def delete_secret(self, name: str, namespace: str = NAMESPACE) -> None:
        await self._request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def _stored(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.k8s.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else dict(obj.raw)

    def secret(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self._stored("v1/secrets", namespace, name)

    async def create_callback(
        self,
        name: str,
        namespace: str = NAMESPACE,
        metadata: dict[str, Any] | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        """``metadata``: more of it, e.g. a creationTimestamp, which the emulated API server
        keeps when given one."""
        metadata = {"name": name, **(metadata or {})}
        body = {
            "apiVersion": "thingspace.io/v1alpha1",
            "kind": "ThingSpaceCallback",
            "metadata": metadata,
            "spec": {
                "accountName": ACCOUNT,
                "serviceName": "QoS",
                "url": "https://listener.example.com/qos",
                "credentialsSecretRef": {"name": "thingspace-credentials"},
                **spec,
            },
        }
        return await self._request("POST", self._path(namespace), json=body)  # type: ignore[no-any-return]

    async def patch_callback(
        self, name: str, patch: dict[str, Any], namespace: str = NAMESPACE
    ) -> None:
        await self._request(
            "PATCH",
            f"{self._path(namespace)}/{name}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def delete_callback(self, name: str, namespace: str = NAMESPACE) -> None:
        await self._request("DELETE", f"{self._path(namespace)}/{name}")

    def callback(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self._stored("thingspace.io/v1alpha1/thingspacecallbacks", namespace, name)

    def condition(self, name: str, type_: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        obj = self.callback(name, namespace) or {}
        for item in obj.get("status", {}).get("conditions", []):
            if item["type"] == type_:
                return dict(item)
        return {}

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(obj.raw)
            for (resource, _, _), obj in self.k8s.objects.items()
            if resource.plural == "events"
            and not obj.deleted
            and (name is None or obj.raw.get("involvedObject", {}).get("name") == name)
        ]

    def event_reasons(self, name: str | None = None) -> list[str]:
        return [event.get("reason", "") for event in self.events(name)]

    @staticmethod
    def _path(namespace: str) -> str:
        return f"/apis/thingspace.io/v1alpha1/namespaces/{namespace}/thingspacecallbacks"


@pytest.fixture
def cluster(k8s: KubernetesEmulator) -> Cluster:
    return Cluster(k8s)


class OperatorFactory:
    """Starts operators with test-friendly timings (keyword arguments override them) and
    stops them at the end of the test, or earlier with ``stop`` (to simulate a crash)."""

    def __init__(self, kube_url: str, sim_url: str) -> None:
        self._kube_url, self._sim_url = kube_url, sim_url
        self._running: dict[int, AsyncExitStack] = {}

    async def __call__(self, **overrides: Any) -> Runtime:
        settings: dict[str, Any] = {
            "api_url": self._sim_url,
            "resync_seconds": 60.0,
            "request_timeout_seconds": 2.0,
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 1.0,
            "metrics_port": 0,
            **overrides,
        }
        config = OperatorConfig(**settings).validated()
        stack = AsyncExitStack()
        runtime = await stack.enter_async_context(running_operator(self._kube_url, config))
        self._running[id(runtime)] = stack
        return runtime

    async def stop(self, runtime: Runtime) -> None:
        await self._running.pop(id(runtime)).aclose()

    async def stop_all(self) -> None:
        for stack in reversed(list(self._running.values())):
            await stack.aclose()
        self._running.clear()


@pytest.fixture
async def start_operator(
    k8s: KubernetesEmulator, sim: SimulatorServer
) -> AsyncIterator[OperatorFactory]:
    factory = OperatorFactory(str(k8s.url), sim.url)
    try:
        yield factory
    finally:
        await factory.stop_all()


@pytest.fixture
async def operator(start_operator: OperatorFactory, cluster: Cluster) -> Runtime:
    """The operator with default test settings and the demo credentials Secret in place."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    return await start_operator()
