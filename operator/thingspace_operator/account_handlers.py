"""kopf handlers of ThingSpaceAccount: keep the accounts known to the callbacks, ask the
callbacks that use an account to reconcile when it changes, and report the account's live
registrations in its status from the same shared list the callbacks use."""

import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import kopf

from .account import ACCOUNT_PLURAL, AccountSpec, CallbackPolicy
from .config import OperatorConfig
from .kube.claims import Claim, claims_for, owner_among
from .kube.status import Condition, changed_fields, condition, merge_conditions, utc_timestamp
from .model import GROUP, VERSION, InvalidSpec
from .reconciler import READY, Runtime, account_view, deregister, display_url, failure_outcome
from .thingspace.accounts import Observation

log = logging.getLogger(__name__)
AUTHORITATIVE = CallbackPolicy.AUTHORITATIVE
AccountUsers = kopf.Index[str, tuple[str, str]]  # ThingSpaceAccount -> (namespace, callback)


def register_account_handlers(
    registry: kopf.OperatorRegistry, config: OperatorConfig, callbacks: tuple[str, str, str]
) -> None:
    account = (GROUP, VERSION, ACCOUNT_PLURAL)

    @kopf.index(*account, id="accounts", registry=registry)
    async def accounts(name: str, spec: Mapping[str, Any], **_: Any) -> dict[str, AccountSpec]:
        try:
            return {name: AccountSpec.parse(name, spec)}
        except InvalidSpec:
            return {}  # reported on the account; callbacks see it as not found

    @kopf.index(*callbacks, id="account_users", registry=registry)
    async def account_users(
        spec: Mapping[str, Any], name: str, namespace: str | None, **_: Any
    ) -> dict[str, tuple[str, str]] | None:
        ref = spec.get("accountRef")
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            return {ref["name"]: (namespace or "", name)}
        return None

    @kopf.on.event(*account, registry=registry)
    async def account_changed(
        type: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        """Keep each account's body for the periodic report; a changed or deleted account:
        its callbacks reconcile now (they may have become allowed or not, or use other
        credentials)."""
        runtime: Runtime = memo["runtime"]
        runtime.indexed = True  # kopf calls handlers only after every index is full
        if type == "DELETED":
            runtime.account_bodies.pop(name, None)
        else:
            runtime.account_bodies[name] = dict(body)
        seen = _parsed(name, body.get("spec") or {}) if type != "DELETED" else None
        previous = runtime.seen_accounts.get(name)
        runtime.seen_accounts[name] = seen
        if type is None or previous == seen:
            return  # the initial listing (every callback resumes anyway), or only status
        users: AccountUsers = kwargs["account_users"]
        for namespace, callback in sorted(set(users.get(name, ()))):
            try:
                await runtime.resources.request_reconcile(namespace, callback)
            except Exception as exc:
                log.warning("Could not ask %s/%s to reconcile (%s)", namespace, callback, exc)

    @kopf.on.resume(*account, registry=registry)
    @kopf.on.create(*account, registry=registry)
    @kopf.on.update(*account, field="spec", registry=registry)
    async def report(
        name: str,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        """A new or changed account's status at once; afterwards, every drift sweep
        refreshes it (report_accounts)."""
        runtime: Runtime = memo["runtime"]
        if not reports(runtime, body):
            return
        now = time.monotonic() - runtime.config.observation_max_age_seconds
        changes = await status_changes(runtime, kwargs["claims"], name, body, now)
        patch.status.update(changes)


async def report_accounts(runtime: Runtime, claims: Any, since: float) -> None:
    """After a drift sweep: every account's status, from the lists the sweep made (an
    account no callback uses is listed here, once per period)."""
    for name, body in sorted(runtime.account_bodies.items()):
        if not reports(runtime, body):
            continue
        try:
            changes = await status_changes(runtime, claims, name, body, since)
            if changes:
                await runtime.resources.patch_account_status(name, changes)
        except Exception as exc:
            log.warning("Could not report ThingSpaceAccount %s: %s", name, type(exc).__name__)


async def status_changes(
    runtime: Runtime, claims: Any, name: str, body: Mapping[str, Any], not_before: float
) -> dict[str, Any]:
    """The status fields of the account ``body`` that should change, with an Event when
    Ready turns False for a new reason."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    ready, observation, account_name = await observe(runtime, name, spec, not_before)
    names = runtime.account_names()

    def claims_of(key: tuple[str, str]) -> list[Claim]:
        return claims_for(claims, names, key)

    registrations = (
        _registrations(account_name, observation, claims_of) if observation is not None else None
    )
    account = _parsed(name, spec)
    if observation is not None and account is not None and account.policy is AUTHORITATIVE:
        ready = await prune(runtime, account, observation, claims_of, body, ready)
    generation = (body.get("metadata") or {}).get("generation")
    refresh = runtime.config.sync_time_refresh_seconds
    desired = desired_status(status, generation, ready, registrations, observation, refresh)
    if ready.status == "False" and condition(status, READY).get("reason") != ready.reason:
        await announce(runtime, body, "Warning", ready.reason, ready.message)
    return changed_fields(status, desired)


async def announce(
    runtime: Runtime, body: Mapping[str, Any], type_: str, reason: str, message: str
) -> None:
    """An Event on the account (cluster-scoped: posted in the operator's namespace)."""
    try:
        await runtime.resources.post_event(runtime.own_namespace, body, type_, reason, message)
    except Exception as exc:
        log.warning("Could not post an Event about an account: %s", exc)


async def prune(
    runtime: Runtime,
    account: AccountSpec,
    observation: Observation,
    claims_of: Callable[[tuple[str, str]], list[Claim]],
    body: Mapping[str, Any],
    ready: Condition,
) -> Condition:
    """Authoritative: deregister what no ThingSpaceCallback declares, under every safety
    rule (README, Authoritative accounts); returns Ready with what it did or why not."""
    if runtime.config.namespaces:
        note = "Authoritative is inactive: this operator watches only some namespaces"
        return replace(ready, message=f"{ready.message}. {note}")
    if not runtime.indexed:
        return ready  # not every callback of the cluster seen yet: no judgement possible
    watch = runtime.unmanaged
    period = runtime.config.resync_seconds
    for service, live in sorted(observation.callbacks.items()):
        key = (account.account_name, service)
        first = watch.get(key)
        if claims_of(key):  # a callback of this account and service exists, in any state
            watch.pop(key, None)
        elif first is None or first[1] != live.url:
            watch[key] = (observation.started_at, live.url)  # first seen unmanaged
        elif observation.started_at - first[0] >= period:
            await _deregister_unmanaged(runtime, account, service, live.url, claims_of, body)
            watch.pop(key, None)
    for key in [k for k in watch if k[0] == account.account_name]:
        if key[1] not in observation.callbacks:
            watch.pop(key)
    return ready


async def _deregister_unmanaged(
    runtime: Runtime,
    account: AccountSpec,
    service: str,
    url: str,
    claims_of: Callable[[tuple[str, str]], list[Claim]],
    body: Mapping[str, Any],
) -> None:
    view = await account_view(account, runtime)
    async with runtime.lock_for(account.account_name, service):
        if claims_of((account.account_name, service)):
            return  # declared meanwhile
        await deregister(view, service)
    message = (
        f"Deregistered {service} callbacks of account {account.account_name} "
        f"({display_url(url)}): no ThingSpaceCallback declares them and callbackPolicy is "
        "Authoritative"
    )
    log.info("%s [ThingSpaceAccount %s]", message, account.name)
    await announce(runtime, body, "Normal", "Pruned", message)


def reports(runtime: Runtime, body: Mapping[str, Any]) -> bool:
    """Whether this operator writes the account's status: the release whose namespace holds
    its credentials does (with several releases, each reports only its own accounts)."""
    ref = (body.get("spec") or {}).get("credentialsSecretRef") or {}
    return ref.get("namespace") in (None, "", runtime.own_namespace)


def _parsed(name: str, spec: Mapping[str, Any]) -> AccountSpec | None:
    try:
        return AccountSpec.parse(name, spec)
    except InvalidSpec:
        return None


async def observe(
    runtime: Runtime, name: str, spec: Mapping[str, Any], not_before: float
) -> tuple[Condition, Observation | None, str]:
    """Ready, and the account's list from ``not_before`` on (shared: no call if one was
    made since)."""
    try:
        account = AccountSpec.parse(name, spec)
    except InvalidSpec as exc:
        return Condition(READY, "False", "InvalidSpec", str(exc)), None, ""
    try:
        view = await account_view(account, runtime)
        await view.observe(not_before)
    except Exception as exc:
        failed = failure_outcome(exc).synced
        return Condition(READY, "False", failed.reason, failed.message), None, account.account_name
    observation = view.cached
    count = len(observation.callbacks) if observation else 0
    message = f"Listed account {account.account_name}: {count} live registrations"
    return Condition(READY, "True", "Authenticated", message), observation, account.account_name


def _registrations(
    account_name: str, observation: Observation, claims_of: Any
) -> list[dict[str, Any]]:
    rows = []
    for service, live in sorted(observation.callbacks.items()):
        owner: Claim | None = owner_among(claims_of((account_name, service)))
        rows.append(
            {
                "serviceName": service,
                "url": display_url(live.url),
                "hasCallbackCredentials": live.has_credentials,
                "managedBy": owner.ref if owner is not None else "",
            }
        )
    return rows


def desired_status(
    status: Mapping[str, Any],
    generation: int | None,
    ready: Condition,
    registrations: list[dict[str, Any]] | None,
    observation: Observation | None,
    refresh_seconds: float = 3600.0,
) -> dict[str, Any]:
    """What the status should say. ``lastListTime`` moves with any other change, and at
    least every ``refresh_seconds``: a quiet account costs no write per period."""
    now = utc_timestamp()
    desired: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(status.get("conditions") or (), [ready], generation, now),
    }
    if registrations is not None and observation is not None:
        managed = sum(1 for row in registrations if row["managedBy"])
        desired.update(registrations=registrations, managed=managed)
        desired["unmanaged"] = len(registrations) - managed
        if changed_fields(status, desired) or _stale(status.get("lastListTime"), refresh_seconds):
            desired["lastListTime"] = _wall_time(observation.started_at)
    return desired


def _wall_time(monotonic: float) -> str:
    ago = time.monotonic() - monotonic
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=max(0.0, ago))
    return utc_timestamp(when)


def _stale(timestamp: str | None, seconds: float) -> bool:
    if not timestamp:
        return True
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds() >= seconds
