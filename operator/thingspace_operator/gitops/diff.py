"""What the operator would do to ThingSpace for a set of manifests (pure: no I/O).

The decisions are the operator's own (``plan.plan_sync``); this module only resolves the
manifests into declared registrations and lays the answers out. Secret values never
appear in a row: a changed credential shows as masked on both sides.
"""

import enum
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from ..account import AccountSpec, CallbackPolicy
from ..kube.secrets import CredentialsInvalid, app_credentials_from, callback_credentials_from
from ..model import CallbackSpec, InvalidSpec, ManagementPolicy
from ..plan import Action, Drift, plan_sync
from ..thingspace.errors import ThingSpaceError
from ..thingspace.models import AppCredentials, Callback, display_url
from .manifests import Manifest, ManifestSet
from .table import columns

MASK = "*****"
UNSET = "(unset)"
NOT_COMPARED = " (callback credentials not compared: their Secret is not in the given files)"
PRUNED = (
    "not declared in these manifests: deregistered, unless a ThingSpaceCallback elsewhere "
    "in the cluster declares it"
)


class Step(enum.StrEnum):
    REGISTER = "register"
    REREGISTER = "re-register"
    IN_SYNC = "in-sync"
    OBSERVE = "observe"
    SKIP = "skip"
    CONFLICT = "conflict"
    DEREGISTER = "deregister"
    KEEP = "keep"
    ERROR = "error"


#: Steps that change ThingSpace, or that the operator would refuse (exit code 2).
CHANGES = frozenset({Step.REGISTER, Step.REREGISTER, Step.CONFLICT, Step.DEREGISTER})


@dataclass(frozen=True)
class Change:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class Row:
    account: str
    service: str
    step: Step
    detail: str
    resource: str = ""  # namespace/name of the declaring manifest
    source: str = ""  # its file
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Declared:
    manifest: Manifest
    resource: str
    spec: CallbackSpec
    account: str
    callback_credentials: tuple[str, str] | None  # None: not in the files, not compared
    caveat: str = ""  # what could not be checked without the cluster


@dataclass
class Resolution:
    """The manifests read as registrations, with what is needed to list their accounts."""

    declared: list[Declared] = field(default_factory=list)
    errors: list[Row] = field(default_factory=list)
    credentials: dict[str, AppCredentials] = field(default_factory=dict)  # by account
    authoritative: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)  # every account to list


def resolve(
    manifests: ManifestSet,
    default_namespace: str,
    operator_namespace: str,
    credentials: AppCredentials | None = None,
    credentials_from_manifests: bool = False,
) -> Resolution:
    """``credentials``: one set for every account. ``credentials_from_manifests``: each
    account's credentials Secret among the manifests (opt-in: a placeholder Secret in git
    would cost a failed login on every run)."""
    found = Resolution()
    accounts = _accounts(manifests, found)
    secrets: dict[str, tuple[str, str]] = {}  # account -> its credentials Secret
    for manifest in manifests.callbacks:
        try:
            declared = _declared(manifest, manifests, accounts, default_namespace)
        except InvalidSpec as exc:
            found.errors.append(_error_row(manifest, default_namespace, str(exc)))
            continue
        found.declared.append(declared)
        found.accounts.add(declared.account)
        if declared.spec.account_ref is None:
            namespace = declared.resource.split("/")[0]
            secrets.setdefault(declared.account, (namespace, declared.spec.credentials_secret))
    for spec in accounts.values():
        found.accounts.add(spec.account_name)
        secret = (spec.secret_namespace or operator_namespace, spec.secret_name)
        secrets.setdefault(spec.account_name, secret)
    if credentials is not None:
        found.credentials = dict.fromkeys(found.accounts, credentials)
    elif credentials_from_manifests:
        for account, secret in sorted(secrets.items()):
            _credentials_from_files(found, account, manifests, secret, default_namespace)
    return found


def _accounts(manifests: ManifestSet, found: Resolution) -> dict[str, AccountSpec]:
    accounts = {}
    for manifest in manifests.accounts:
        try:
            spec = AccountSpec.parse(manifest.name, manifest.spec)
        except (InvalidSpec, TypeError, ValueError) as exc:
            why = str(exc) if isinstance(exc, InvalidSpec) else "malformed spec"
            found.errors.append(Row("", "", Step.ERROR, why, manifest.name, manifest.source))
            continue
        accounts[manifest.name] = spec
        if spec.policy is CallbackPolicy.AUTHORITATIVE:
            found.authoritative.add(spec.account_name)
    return accounts


def _declared(
    manifest: Manifest,
    manifests: ManifestSet,
    accounts: Mapping[str, AccountSpec],
    default_namespace: str,
) -> Declared:
    namespace = manifest.namespace(default_namespace)
    spec = CallbackSpec.parse(manifest.spec)
    account, caveat = spec.account_name, ""
    if spec.account_ref is not None:
        account, caveat = _resolve_ref(spec.account_ref, accounts, namespace)
    callback_credentials: tuple[str, str] | None = ("", "")
    if spec.callback_credentials_secret:
        name = spec.callback_credentials_secret
        data = manifests.secret_data(namespace, name, default_namespace)
        try:
            callback_credentials = (
                callback_credentials_from(data, f"{namespace}/{name}") if data else None
            )
        except CredentialsInvalid as exc:
            raise InvalidSpec(f"{exc}; the operator would refuse it (no write)") from None
    resource = f"{namespace}/{manifest.name}"
    return Declared(manifest, resource, spec, account, callback_credentials, caveat)


def _resolve_ref(name: str, accounts: Mapping[str, AccountSpec], namespace: str) -> tuple[str, str]:
    """The billing account of a ThingSpaceAccount among the manifests, with the operator's
    own namespace rule (``AccountSpec.allows``); labels are not known without a cluster."""
    account = accounts.get(name)
    if account is None:
        raise InvalidSpec(
            f"ThingSpaceAccount {name} is not in the given files (add it, or read it from "
            f"the cluster with --account-ref {name})"
        )
    if account.allows(namespace, None):
        return account.account_name, ""
    if account.needs_labels:
        return account.account_name, f" (only if namespace {namespace}'s labels match {name})"
    raise InvalidSpec(
        f"ThingSpaceAccount {name} does not allow namespace {namespace}: the operator would "
        "report AccountNotAllowed (no write)"
    )


def _credentials_from_files(
    found: Resolution,
    account: str,
    manifests: ManifestSet,
    secret: tuple[str, str],
    default_namespace: str,
) -> None:
    where = "/".join(secret)
    data = manifests.secret_data(*secret, default_namespace)
    if not data:
        return  # reported as "no credentials for account" when it is listed
    try:
        found.credentials[account] = app_credentials_from(data, where)
    except CredentialsInvalid as exc:
        found.errors.append(Row(account, "", Step.ERROR, str(exc)))


def _error_row(manifest: Manifest, default_namespace: str, message: str) -> Row:
    resource = f"{manifest.namespace(default_namespace)}/{manifest.name}"
    spec = manifest.spec
    return Row(
        str(spec.get("accountName") or ""),
        str(spec.get("serviceName") or ""),
        Step.ERROR,
        message,
        resource,
        manifest.source,
    )


# --- planning ----------------------------------------------------------------------------

LiveLists = Mapping[str, list[Callback] | ThingSpaceError]
#: Stands for callback credentials the operator will register but the files do not hold.
UNKNOWN = "\0unknown"


def plan(resolution: Resolution, live: LiveLists, prune: bool = False) -> list[Row]:
    """One row per declared registration, plus one per undeclared live registration."""
    rows = list(resolution.errors)
    by_key: dict[tuple[str, str], list[Declared]] = defaultdict(list)
    for declared in resolution.declared:
        by_key[(declared.account, declared.spec.service_name)].append(declared)
    for (account, service), claimants in sorted(by_key.items()):
        listed = live.get(account)
        if not isinstance(listed, list):
            why = _unlisted(account, listed)
            rows += [_row(d, Step.ERROR, why) for d in claimants]
            continue
        current = next((c for c in listed if c.service_name == service), None)
        rows += _plan_key(claimants, current)
    # An invalid manifest still declares its registration: the operator would not prune it.
    claimed = set(by_key) | {(r.account, r.service) for r in resolution.errors if r.service}
    declared_accounts = {account for account, _ in by_key}
    for account in sorted(resolution.accounts):
        listed = live.get(account)
        if isinstance(listed, list):
            pruning = prune or account in resolution.authoritative
            rows += _undeclared(listed, claimed, pruning)
        elif account not in declared_accounts:
            rows.append(Row(account, "", Step.ERROR, _unlisted(account, listed)))
    return rows


def _unlisted(account: str, failure: ThingSpaceError | None) -> str:
    if failure is None:
        return f"no credentials for account {account}: give --credentials-file or THINGSPACE_*"
    return f"cannot list the account: {failure}"


def _plan_key(claimants: list[Declared], live: Callback | None) -> list[Row]:
    if len(claimants) > 1:
        others = ", ".join(d.resource for d in claimants)
        return [
            _row(d, Step.CONFLICT, f"declared by several resources: {others}") for d in claimants
        ]
    declared = claimants[0]
    spec = declared.spec
    if spec.suspend:
        return [_row(declared, Step.SKIP, "suspended: the operator leaves it as it is")]
    compared, note = _compared_credentials(declared, live)
    desired = Callback(declared.account, spec.service_name, spec.url, *compared)
    decision = plan_sync(desired, live, spec.management_policy)
    changes = _changes(desired, live)
    note += declared.caveat
    if decision.drift is Drift.NONE:
        detail = "registered as declared: no write (adopted if no resource manages it yet)"
        return [_row(declared, Step.IN_SYNC, detail + note)]
    if spec.management_policy is ManagementPolicy.OBSERVE_ONLY:
        return [_row(declared, Step.OBSERVE, f"ObserveOnly: {decision.drift}, no write", changes)]
    assert decision.action is Action.REGISTER
    step = Step.REGISTER if live is None else Step.REREGISTER
    return [_row(declared, step, str(decision.drift) + note, changes)]


def _compared_credentials(declared: Declared, live: Callback | None) -> tuple[tuple[str, str], str]:
    """The callback credentials to compare, and a note when they are not in the files.

    Unknown ones equal the live ones when those are set (nothing to tell them apart); when
    nothing is set live, the operator will register some: that is a change."""
    if declared.callback_credentials is not None:
        return declared.callback_credentials, ""
    if live is not None and live.has_credentials:
        return (live.username, live.password), NOT_COMPARED
    return (UNKNOWN, UNKNOWN), NOT_COMPARED


def _undeclared(
    listed: Iterable[Callback], claimed: Collection[tuple[str, str]], pruning: bool
) -> list[Row]:
    rows = []
    for callback in sorted(listed, key=lambda c: c.service_name):
        if (callback.account_name, callback.service_name) in claimed:
            continue
        url = display_url(callback.url)
        if pruning:
            step, detail = Step.DEREGISTER, PRUNED
            changes: tuple[Change, ...] = (Change("url", url, UNSET),)
        else:
            step, detail = Step.KEEP, f"not declared: left alone ({url})"
            changes = ()
        rows.append(
            Row(callback.account_name, callback.service_name, step, detail, changes=changes)
        )
    return rows


def _changes(desired: Callback, live: Callback | None) -> tuple[Change, ...]:
    before = live or Callback(desired.account_name, desired.service_name, "")
    changes = []
    if before.url != desired.url:
        changes.append(Change("url", display_url(before.url) or UNSET, display_url(desired.url)))
    for name in ("username", "password"):
        old, new = getattr(before, name), getattr(desired, name)
        if old != new:
            changes.append(Change(name, MASK if old else UNSET, MASK if new else UNSET))
    return tuple(changes)


def _row(declared: Declared, step: Step, detail: str, changes: tuple[Change, ...] = ()) -> Row:
    return Row(
        declared.account,
        declared.spec.service_name,
        step,
        detail,
        declared.resource,
        declared.manifest.source,
        changes,
    )


# --- output ------------------------------------------------------------------------------


def exit_code(rows: Iterable[Row]) -> int:
    """0: nothing would change; 2: something would (or conflicts); 1: an error."""
    steps = {row.step for row in rows}
    if Step.ERROR in steps:
        return 1
    return 2 if steps & CHANGES else 0


def as_json(rows: list[Row]) -> str:
    summary = {step.value: sum(row.step is step for row in rows) for step in Step}
    return json.dumps(
        {
            "changes": any(row.step in CHANGES for row in rows),
            "summary": {k: v for k, v in summary.items() if v},
            "registrations": [asdict(row) for row in rows],
        },
        indent=2,
    )


def as_table(rows: list[Row]) -> str:
    if not rows:
        return "No registrations declared or live.\n"
    header = ("ACCOUNT", "SERVICE", "ACTION", "RESOURCE", "DETAIL")
    lines = [header]
    for row in rows:
        lines.append((row.account, row.service, row.step.value, row.resource or "-", row.detail))
        lines += [("", "", "", "", f"  {c.field}: {c.before} -> {c.after}") for c in row.changes]
    text = "\n".join(columns(lines))
    counts = {step: sum(row.step is step for row in rows) for step in Step}
    summary = ", ".join(f"{n} {step.value}" for step, n in counts.items() if n)
    return f"{text.rstrip()}\n\n{summary}\n"
