"""RBAC granted versus RBAC used, from the API server's audit log.

A grant nobody uses is a finding: it widens what a stolen token can do for no benefit. The
only grants allowed to go unused are listed in EXCUSED, each with its reason.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.e2e.cluster import Release
from tests.e2e.controlplane import Cluster

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

#: Grants the operator may leave unused in a lifecycle run, and why.
EXCUSED: dict[Grant, str] = {
    ("coordination.k8s.io", "leases", "watch"): "only a standby watches the Lease (to take "
    "a released one at once); test_leader_election checks that use",
}


@dataclass(frozen=True)
class Request:
    verb: str
    group: str
    resource: str  # with "/subresource" when there is one
    namespace: str | None
    name: str | None
    code: int
    uri: str

    @property
    def grant(self) -> Grant:
        return self.group, self.resource, self.verb


def used_requests(
    audit: Iterable[dict[str, Any]], user: str, credential_id: str | None = None
) -> Iterator[Request]:
    """Every resource request ``user`` made (with the token ``credential_id``, if given:
    one process), as the API server recorded it."""
    for event in audit:
        if event.get("stage") not in ("ResponseStarted", "ResponseComplete"):
            continue  # a watch is logged when its response starts; it completes much later
        who = event.get("user") or {}
        if who.get("username") != user:
            continue
        credentials = (who.get("extra") or {}).get("authentication.kubernetes.io/credential-id")
        if credential_id is not None and credential_id not in (credentials or ()):
            continue
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery and other non-resource URLs: open to every user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        yield Request(
            verb=event["verb"],
            group=ref.get("apiGroup", ""),
            resource=resource,
            namespace=ref.get("namespace"),
            name=ref.get("name"),
            code=int((event.get("responseStatus") or {}).get("code", 0)),
            uri=event.get("requestURI", ""),
        )


def granted_rules(plane: Cluster, release: Release) -> set[Grant]:
    """Every (group, resource, verb) the release's Roles and ClusterRoles grant."""
    selector = f"app.kubernetes.io/instance={release.name}"
    roles = plane.kubectl_json("get", "clusterroles,roles", "-A", "-l", selector)["items"]
    granted: set[Grant] = set()
    for role in roles:
        for rule in role.get("rules") or ():
            for group in rule.get("apiGroups") or ():
                for resource in rule.get("resources") or ():
                    granted.update((group, resource, verb) for verb in rule.get("verbs") or ())
    return granted


def unused_grants(granted: set[Grant], requests: Iterable[Request]) -> set[Grant]:
    used = {request.grant for request in requests}
    return granted - used - set(EXCUSED)
