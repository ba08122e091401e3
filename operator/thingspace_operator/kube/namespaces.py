"""Labels of the namespaces whose callbacks use a ThingSpaceAccount with a namespaceSelector.

Read by name when first needed and again once per drift period, never listed or watched:
the operator holds the labels of those namespaces only, however many the cluster has.
"""

import time
from collections.abc import Mapping
from urllib.parse import quote

from .connection import KubeApiError, KubeConnection


class NamespaceLabels:
    def __init__(self, connection: KubeConnection) -> None:
        self._connection = connection
        self._known: dict[str, tuple[float, dict[str, str]]] = {}

    async def labels(self, namespace: str, fresh_after: float | None = None) -> Mapping[str, str]:
        """The namespace's labels, read again if last read before ``fresh_after``."""
        known = self._known.get(namespace)
        if known is not None and (fresh_after is None or known[0] >= fresh_after):
            return known[1]
        started = time.monotonic()
        try:
            found = await self._connection.get_json(
                f"/api/v1/namespaces/{quote(namespace, safe='')}"
            )
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            labels: dict[str, str] = {}
        else:
            labels = dict((found.get("metadata") or {}).get("labels") or {})
        self._known[namespace] = (started, labels)
        return labels

    def retain(self, namespaces: set[str]) -> None:
        for namespace in set(self._known) - namespaces:
            del self._known[namespace]
