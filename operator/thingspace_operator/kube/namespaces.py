"""Labels of the namespaces whose callbacks use a ThingSpaceAccount with a namespaceSelector.

Read by name when first needed and again once per drift period, never listed or watched:
the operator holds the labels of those namespaces only, however many the cluster has.
"""

import asyncio
import time
from collections.abc import Mapping

import kubernetes.client
from kubernetes.client.exceptions import ApiException


class NamespaceLabels:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._known: dict[str, tuple[float, dict[str, str]]] = {}

    async def labels(self, namespace: str, fresh_after: float | None = None) -> Mapping[str, str]:
        """The namespace's labels, read again if last read before ``fresh_after``."""
        known = self._known.get(namespace)
        if known is not None and (fresh_after is None or known[0] >= fresh_after):
            return known[1]
        started = time.monotonic()
        try:
            found = await asyncio.to_thread(self._core.read_namespace, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            labels: dict[str, str] = {}
        else:
            labels = dict((found.metadata.labels if found.metadata else None) or {})
        self._known[namespace] = (started, labels)
        return labels

    def retain(self, namespaces: set[str]) -> None:
        for namespace in set(self._known) - namespaces:
            del self._known[namespace]
