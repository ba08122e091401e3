"""The chaos soak's invariants, each a function of what was recorded (proxies, logs, the
API server, the simulator) returning the violations it found as sentences with evidence."""

import itertools
import json
import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.soak_wire import Sent
from bench.soak_workload import FOREIGN_SERVICES, LISTENER_SECRET, Workload
from tests.e2e.controlplane import Cluster


def fencing(sent: Iterable[Sent]) -> list[str]:
    """2. The spans [first call, last call] of the process incarnations never overlap."""
    spans: dict[str, tuple[float, float]] = {}
    for call in sent:
        first, last = spans.get(call.sender, (call.at, call.at))
        spans[call.sender] = (min(first, call.at), max(last, call.at))
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    return [
        f"fencing: {a} called ThingSpace until t={sa[1]:.2f} but {b} began at t={sb[0]:.2f}"
        for (a, sa), (b, sb) in itertools.pairwise(ordered)
        if sb[0] <= sa[1]
    ]


def ownership(sent: Iterable[Sent], work: Workload) -> list[str]:
    """3. No deregistration of what the operator did not own; no write of a URL declared by
    a suspended or ObserveOnly resource (before it was writable); no write where nothing
    is declared."""
    with work.lock:
        urls, keep = dict(work.urls), set(work.never_deregister)
    found = []
    for call in sent:
        if call.endpoint == "register":
            since = urls.get(call.url, 0.0)
            if call.service in FOREIGN_SERVICES:
                found.append(f"ownership: registered undeclared {call.account}/{call.service}")
            elif since is None or call.at < since:
                found.append(
                    f"ownership: {call.sender} registered {call.url} ({call.account}/"
                    f"{call.service}) declared only by a suspended or ObserveOnly spec"
                )
        elif call.endpoint == "deregister" and call.url in keep:
            found.append(
                f"ownership: {call.sender} deregistered {call.account}/{call.service} at "
                f"{call.url}, which the operator does not own"
            )
    return found


def lockout(sent: Iterable[Sent], sim_logins: dict[str, Any]) -> list[str]:
    """4. Rejected credentials (a login or an app secret) are never sent again, by the
    process that saw them rejected nor by any later one; nobody gets locked."""
    found: list[str] = []
    rejected: dict[str, tuple[float, str]] = {}  # key -> (when, by whom)
    for call in sorted(sent, key=lambda c: c.at):
        if call.key in rejected and call.at > rejected[call.key][0]:
            by = rejected[call.key][1]
            who = "" if by == call.sender else f" that {by} saw rejected"
            found.append(
                f"lockout: {call.sender} sent rejected credentials again{who} ({call.endpoint})"
            )
        if call.rejected:
            rejected.setdefault(call.key, (call.done, call.sender))
    if sim_logins.get("locked"):
        found.append(f"lockout: the simulator locked {sim_logins['locked']}")
    return found


def leaks(texts: dict[str, str], values: Iterable[str]) -> list[str]:
    """5. No secret value in any text (a log, Events, status, metrics)."""
    pattern = re.compile("|".join(re.escape(v) for v in sorted(values)))
    found = []
    for where, text in texts.items():
        if match := pattern.search(text):
            found.append(f"secrets: a secret value ({match.group()[:4]}…) is in {where}")
    return found


def metrics_text(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
        return str(answer.read().decode())


def cluster_texts(plane: Cluster, namespaces: list[str]) -> dict[str, str]:
    """Events and the status of every callback and account, as text."""
    texts = {}
    for namespace in namespaces:
        done = plane.kubectl("-n", namespace, "get", "events,tscb", "-o", "json", check=False)
        texts[f"events and status in {namespace}"] = done.stdout
    texts["ThingSpaceAccounts"] = plane.kubectl("get", "tsa", "-o", "json", check=False).stdout
    return texts


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _condition(item: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (item.get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return dict(c)
    return {}


def converged(plane: Cluster, work: Workload) -> list[str]:
    """1 and 7, after quiet: live registrations equal what is declared and Ready, every
    status tells the truth, nothing is left deleting."""
    items: list[dict[str, Any]] = []
    for namespace in work.namespaces:
        listed = plane.kubectl("-n", namespace, "get", "tscb", "-o", "json", check=False)
        if listed.returncode != 0:
            return [f"converged: cannot list callbacks in {namespace}"]
        items += json.loads(listed.stdout)["items"]
    live: dict[tuple[str, str], dict[str, Any]] = {
        (account, item["serviceName"]): item
        for account, entries in work.sim.request("GET", "registrations").items()
        for item in entries
    }
    found, claimed = [], set()
    for item in items:
        meta, spec = item["metadata"], item["spec"]
        who = f"{meta['namespace']}/{meta['name']}"
        if meta.get("deletionTimestamp"):
            found.append(f"deletion: {who} is still held by {meta.get('finalizers')}")
            continue
        account = work.auth_account if spec.get("accountRef") else spec["accountName"]
        slot = (account, spec["serviceName"])
        claimed.add(slot)
        ready, synced = _condition(item, "Ready"), _condition(item, "Synced")
        current = (item.get("status") or {}).get("observedGeneration") == meta["generation"]
        entry = live.get(slot)
        matches = (
            entry is not None
            and entry["url"] == spec["url"]
            and _creds_match(entry, spec, work, meta["namespace"])
        )
        if spec.get("suspend"):
            if (ready.get("status"), synced.get("reason")) != ("Unknown", "Suspended"):
                found.append(f"status: suspended {who} says Ready={ready} Synced={synced}")
        elif spec.get("managementPolicy") == "ObserveOnly":
            want = "Registered" if matches else "Pending" if entry is None else "Drifted"
            if not current or ready.get("reason") != want:
                found.append(f"status: ObserveOnly {who} says {ready.get('reason')}, is {want}")
        elif not (current and ready.get("status") == "True" and matches):
            found.append(
                f"converged: {who} Ready={ready.get('status')}/{ready.get('reason')} "
                f"current={current} declares {spec['url']}, live {entry and entry['url']}"
            )
    with work.lock:
        keep = set(work.never_deregister)
    mine = {*work.inline_accounts, work.auth_account}
    for (account, service), entry in live.items():
        if account not in mine or (account, service) in claimed:
            continue
        if account == work.auth_account:
            found.append(f"converged: undeclared {account}/{service} not pruned from "
                         f"the Authoritative account ({entry['url']})")  # fmt: skip
        elif entry["url"] not in keep:
            found.append(f"converged: {account}/{service} at {entry['url']} is live but "
                         "nobody declares it and nobody left it on purpose")  # fmt: skip
    return found


def _creds_match(entry: dict[str, Any], spec: dict[str, Any], work: Workload, ns: str) -> bool:
    if (spec.get("callbackCredentialsSecretRef") or {}).get("name") == LISTENER_SECRET:
        return bool(entry.get("password") == work.listener[ns])
    return "password" not in entry and "username" not in entry
