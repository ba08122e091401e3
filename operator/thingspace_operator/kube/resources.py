"""Writes the operator makes to other ThingSpaceCallback objects (outside kopf's patch)."""

import asyncio
import datetime

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from ..model import GROUP, PLURAL, RECONCILE_REQUESTED_ANNOTATION, VERSION


class CallbackResources:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CustomObjectsApi(api_client)

    async def served(self) -> bool:
        """Whether discovery lists the ThingSpaceCallback resource (no RBAC needed)."""
        try:
            found = await asyncio.to_thread(self._api.get_api_resources, GROUP, VERSION)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(resource.name == PLURAL for resource in found.resources or ())

    async def request_reconcile(self, namespace: str, name: str) -> bool:
        """Set the reconcile-now annotation, exactly as a user would to force a reconcile.
        False: the resource no longer exists.

        Used when a referenced Secret changes, when a contested registration is handed
        over, and when a drift check finds something to correct.
        """
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        body = {"metadata": {"annotations": {RECONCILE_REQUESTED_ANNOTATION: stamp}}}
        try:
            await asyncio.to_thread(
                self._api.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to reconcile
                raise
            return False
        return True
