"""Who owns a ThingSpace registration when several resources declare the same one.

A registration is identified in ThingSpace by (account, service). When more than one
ThingSpaceCallback declares it, the oldest (creation time, then namespace/name) that is not
being deleted owns it; the others report ``Conflict`` and never call ThingSpace. The claims
come from a kopf index, so finding the owner costs no API call.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Claim:
    created: str  # RFC 3339 timestamps sort chronologically as strings
    namespace: str
    name: str
    deleting: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def claim_key(spec: Mapping[str, Any]) -> tuple[str, str] | None:
    account, service = spec.get("accountName"), spec.get("serviceName")
    if isinstance(account, str) and isinstance(service, str) and account and service:
        return account, service
    return None


def claim_of(meta: Mapping[str, Any], namespace: str) -> Claim:
    return Claim(
        created=str(meta.get("creationTimestamp") or ""),
        namespace=namespace,
        name=str(meta.get("name")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def owner_among(claims: Iterable[Claim]) -> Claim | None:
    """The oldest claim that is not being deleted."""
    return min((c for c in claims if not c.deleting), default=None)


def rival_owner(claims: Iterable[Claim], me: Claim) -> Claim | None:
    """The claim that owns the registration instead of ``me``, if any."""
    owner = owner_among(claims)
    if owner is None or owner.ref == me.ref:
        return None
    return owner


def successor(claims: Iterable[Claim], me: Claim) -> Claim | None:
    """Who takes over when ``me`` goes away."""
    return owner_among(c for c in claims if c.ref != me.ref)
