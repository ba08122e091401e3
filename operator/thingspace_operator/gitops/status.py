"""``kubectl thingspace status``: the cluster's callbacks and accounts grouped by billing
account, with their conditions and the registrations no callback manages (pure layout;
the objects are read by the caller)."""

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..kube.status import condition
from ..thingspace.models import display_url
from .table import columns


@dataclass(frozen=True)
class CallbackRow:
    resource: str
    service: str
    url: str
    ready: str
    reason: str
    message: str


@dataclass
class AccountGroup:
    account: str
    accounts: list[dict[str, str]] = field(default_factory=list)  # ThingSpaceAccounts' Ready
    callbacks: list[CallbackRow] = field(default_factory=list)
    unmanaged: list[dict[str, str]] = field(default_factory=list)


def group(
    callbacks: Iterable[Mapping[str, Any]], accounts: Iterable[Mapping[str, Any]]
) -> list[AccountGroup]:
    """Callbacks by billing account, with each account's state; unmanaged registrations
    are known only for accounts backed by a ThingSpaceAccount (its status lists them)."""
    groups: dict[str, AccountGroup] = {}
    by_object: dict[str, str] = {}
    for account in accounts:
        name = account["metadata"]["name"]
        billing = str((account.get("spec") or {}).get("accountName") or "")
        by_object[name] = billing
        entry = groups.setdefault(billing, AccountGroup(billing))
        ready = condition(account.get("status") or {}, "Ready")
        entry.accounts.append(
            {"name": name, "ready": ready.get("status", ""), "reason": ready.get("reason", "")}
        )
        for row in (account.get("status") or {}).get("registrations") or []:
            if not row.get("managedBy"):
                entry.unmanaged.append({"serviceName": row["serviceName"], "url": row["url"]})
    for callback in callbacks:
        spec, status = callback.get("spec") or {}, callback.get("status") or {}
        ref = (spec.get("accountRef") or {}).get("name")
        billing = (
            status.get("accountName")
            or spec.get("accountName")
            or by_object.get(str(ref))
            or f"(ThingSpaceAccount {ref}, not found)"
        )
        ready = condition(status, "Ready")
        meta = callback["metadata"]
        groups.setdefault(billing, AccountGroup(billing)).callbacks.append(
            CallbackRow(
                f"{meta.get('namespace', '')}/{meta['name']}",
                str(spec.get("serviceName", "")),
                display_url(str(spec.get("url", ""))),
                str(ready.get("status", "Unknown")),
                str(ready.get("reason", "")),
                str(ready.get("message", "")),
            )
        )
    # Billing accounts in order, then the references that resolve to none.
    return [groups[key] for key in sorted(groups, key=lambda k: (k.startswith("("), k))]


def as_json(groups: list[AccountGroup]) -> str:
    return json.dumps({"accounts": [asdict(g) for g in groups]}, indent=2)


def as_text(groups: list[AccountGroup]) -> str:
    if not groups:
        return "No ThingSpaceCallbacks or ThingSpaceAccounts found.\n"
    out = []
    for entry in groups:
        states = [f"{a['name']}: Ready={a['ready']} {a['reason']}".rstrip() for a in entry.accounts]
        title = f"ACCOUNT {entry.account}"
        out.append(title + (f"  (ThingSpaceAccount {'; '.join(states)})" if states else ""))
        rows = [("RESOURCE", "SERVICE", "READY", "REASON", "URL")]
        rows += [(c.resource, c.service, c.ready, c.reason, c.url) for c in entry.callbacks]
        rows += [("(unmanaged)", u["serviceName"], "-", "-", u["url"]) for u in entry.unmanaged]
        out += columns(rows, indent="  ") if len(rows) > 1 else []
        out.append("")
    return "\n".join(out)
