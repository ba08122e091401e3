"""core/v1 Events the operator posts itself (outside kopf's handler context): leader
changes on the Lease, and what it does to ThingSpaceAccounts from the drift sweep."""

import datetime
from collections.abc import Mapping
from typing import Any

COMPONENT = "thingspace-operator"


def event_manifest(
    namespace: str,
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    instance: str = "",
) -> dict[str, Any]:
    """An Event about ``involved`` (apiVersion, kind, name, uid, and namespace for a
    namespaced object), posted in ``namespace``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved.get('name', 'object')}.", "namespace": namespace},
        # The API server wants the Event in its object's namespace; a cluster-scoped object
        # is given the Event's (as kopf does), so it need not go to "default".
        "involvedObject": {"namespace": namespace, **involved},
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    if instance:  # the API server wants both reporting fields or neither
        event.update(reportingComponent=COMPONENT, reportingInstance=instance)
    return event


def reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The involvedObject of a Kubernetes object's body."""
    meta = body.get("metadata") or {}
    ref = {
        "apiVersion": body.get("apiVersion", ""),
        "kind": body.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref
