"""Who owns a ThingSpace registration when several resources declare the same one.

A registration is identified in ThingSpace by (account, service). When more than one
ThingSpaceCallback declares it, the oldest (creation time, then namespace/name) that is not
being deleted owns it; the others report ``Conflict`` and never call ThingSpace. The claims
come from the operator's inventory, so finding the owner costs no API call.
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


#: Prefix of the key of a callback that names its account through ``accountRef``: the
#: account's name is known only from the ThingSpaceAccount (``claims_for`` resolves it).
ACCOUNT_REF = "ThingSpaceAccount/"


def claim_key(spec: Mapping[str, Any]) -> tuple[str, str] | None:
    account, service = spec.get("accountName"), spec.get("serviceName")
    ref = spec.get("accountRef")
    if not account and isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
        account = ACCOUNT_REF + ref["name"]
    if isinstance(account, str) and isinstance(service, str) and account and service:
        return account, service
    return None


def registered_key(key: tuple[str, str] | None, status: Any) -> tuple[str, str] | None:
    """The registration a callback by ``accountRef`` registers in, as its status records
    the account (``status.accountName``); None when it records none, or names its account
    inline (``key`` is the registration then)."""
    if key is None or not key[0].startswith(ACCOUNT_REF) or not isinstance(status, Mapping):
        return None
    account = status.get("accountName")
    return (account, key[1]) if isinstance(account, str) and account else None


def in_conflict(status: Any) -> bool:
    """Its status says an older resource owns its registration."""
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    return any(isinstance(c, Mapping) and c.get("reason") == "Conflict" for c in conditions or ())


def keys_of_registration(
    key: tuple[str, str], account_names: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Every claims key that may declare the registration ``key`` names: by account name,
    and through each ThingSpaceAccount (``account_names``: object name -> account name) of
    that account."""
    account, service = key
    if account.startswith(ACCOUNT_REF):
        resolved = account_names.get(account.removeprefix(ACCOUNT_REF))
        if resolved is None:
            return [key]
        account = resolved
    refs = [(ACCOUNT_REF + name, service) for name, of in account_names.items() if of == account]
    return [(account, service), *sorted(refs)]


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


def claims_for(
    claims: Mapping[tuple[str, str], Iterable[Claim]],
    account_names: Mapping[str, str],
    key: tuple[str, str] | None,
) -> list[Claim]:
    """Every resource declaring the registration ``key`` names, whether it names the
    account inline or through a ThingSpaceAccount (``account_names``)."""
    if key is None:
        return []
    return [c for k in keys_of_registration(key, account_names) for c in claims.get(k, ())]
