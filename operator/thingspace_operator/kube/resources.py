"""Writes the operator makes to other ThingSpaceCallback objects (outside kopf's patch)."""

import datetime
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..account import ACCOUNT_PLURAL
from ..model import GROUP, PLURAL, RECONCILE_REQUESTED_ANNOTATION, VERSION
from .connection import KubeApiError, KubeConnection
from .events import event_manifest, reference

TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


class CallbackResources:
    def __init__(self, connection: KubeConnection) -> None:
        self._connection = connection
        self._session: aiohttp.ClientSession | None = None

    async def served(self) -> bool:
        """Whether discovery lists the ThingSpaceCallback resource (no RBAC needed)."""
        try:
            found = await self._connection.get_json(f"/apis/{GROUP}/{VERSION}")
        except KubeApiError as exc:
            if exc.status == 404:  # the group version is not served at all
                return False
            raise
        return any(resource.get("name") == PLURAL for resource in found.get("resources") or ())

    async def request_reconcile(self, namespace: str, name: str) -> bool:
        """Set the reconcile-now annotation, exactly as a user would to force a reconcile.
        False: the resource no longer exists.

        Used when a referenced Secret changes, when a contested registration is handed
        over, and when a drift check finds something to correct. Sent with aiohttp, not in
        a thread: cancelled at shutdown, it stops at once instead of landing after the Lease
        was handed over.
        """
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        body = {"metadata": {"annotations": {RECONCILE_REQUESTED_ANNOTATION: stamp}}}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        headers = {**self._connection.headers(), "Content-Type": "application/merge-patch+json"}
        async with self._client().patch(
            self._connection.url(path), data=json.dumps(body), headers=headers, timeout=TIMEOUT
        ) as response:
            if response.status == 404:  # deleted meanwhile: nothing left to reconcile
                return False
            if response.status >= 300:
                raise KubeApiError(response.status, response.reason)
        return True

    async def patch_account_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into a ThingSpaceAccount's status."""
        path = f"/apis/{GROUP}/{VERSION}/{ACCOUNT_PLURAL}/{name}/status"
        headers = {**self._connection.headers(), "Content-Type": "application/merge-patch+json"}
        async with self._client().patch(
            self._connection.url(path),
            data=json.dumps({"status": status}),
            headers=headers,
            timeout=TIMEOUT,
        ) as response:
            if response.status >= 300 and response.status != 404:  # 404: deleted meanwhile
                raise KubeApiError(response.status, response.reason)

    async def post_event(
        self, namespace: str, body: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """An Event about the object ``body``, posted in ``namespace`` (outside kopf's
        handlers, which post their own)."""
        event = event_manifest(namespace, reference(body), type_, reason, message)
        async with self._client().post(
            self._connection.url(f"/api/v1/namespaces/{namespace}/events"),
            json=event,
            headers=self._connection.headers(),
            timeout=TIMEOUT,
        ) as response:
            if response.status >= 300:
                raise KubeApiError(response.status, response.reason)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._connection.session()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
