"""Writes the operator makes to other ThingSpaceCallback objects (outside kopf's patch)."""

import asyncio
import datetime

import kubernetes.client

from ..model import GROUP, PLURAL, RECONCILE_REQUESTED_ANNOTATION, VERSION


class CallbackResources:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CustomObjectsApi(api_client)

    async def request_reconcile(self, namespace: str, name: str) -> None:
        """Set the reconcile-now annotation, exactly as a user would to force a reconcile."""
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        body = {"metadata": {"annotations": {RECONCILE_REQUESTED_ANNOTATION: stamp}}}
        await asyncio.to_thread(
            self._api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body
        )
