"""``kubectl thingspace status``: the cluster's callbacks and accounts grouped by billing
account, with their conditions and the registrations no callback manages (pure layout;
the objects are read by the caller)."""

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

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
    accounts: list[str] = field(default_factory=list)  # ThingSpaceAccount objects
    ready: str = ""
    reason: str = ""
    callbacks: list[CallbackRow] = field(default_factory=list)
    unmanaged: list[dict[str, str]] = field(default_factory=list)


def _ready(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def group(
    callbacks: Iterable[Mapping[str, Any]], accounts: Iterable[Mapping[str, Any]]
) -> list[AccountGroup]:
    groups: dict[str, AccountGroup] = {}
    by_object: dict[str, str] = {}
    for account in accounts:
        name = account["metadata"]["name"]
        billing = str((account.get("spec") or {}).get("accountName") or "")
        by_object[name] = billing
        entry = groups.setdefault(billing, AccountGroup(billing))
        ready = _ready(account)
        entry.accounts.append(name)
        entry.ready, entry.reason = str(ready.get("status", "")), str(ready.get("reason", ""))
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
        ready = _ready(callback)
        meta = callback["metadata"]
        groups.setdefault(billing, AccountGroup(billing)).callbacks.append(
            CallbackRow(
                f"{meta.get('namespace', '')}/{meta['name']}",
                str(spec.get("serviceName", "")),
                str(spec.get("url", "")),
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
        title = f"ACCOUNT {entry.account}"
        if entry.accounts:
            title += f"  (ThingSpaceAccount {', '.join(entry.accounts)}: Ready={entry.ready}"
            title += f" {entry.reason})" if entry.reason else ")"
        out.append(title)
        rows = [("RESOURCE", "SERVICE", "READY", "REASON", "URL")]
        rows += [(c.resource, c.service, c.ready, c.reason, c.url) for c in entry.callbacks]
        rows += [("(unmanaged)", u["serviceName"], "-", "-", u["url"]) for u in entry.unmanaged]
        out += columns(rows, indent="  ") if len(rows) > 1 else []
        out.append("")
    return "\n".join(out)
