"""kopf handlers of ThingSpaceAccount: keep the accounts known to the callbacks, ask the
callbacks that use an account to reconcile when it changes, and report the account's live
registrations in its status from the same shared list the callbacks use."""

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from .account import ACCOUNT_PLURAL, AccountSpec
from .config import OperatorConfig
from .kube.claims import Claim, claims_for, owner_among
from .kube.status import Condition, changed_fields, condition, merge_conditions, utc_timestamp
from .model import GROUP, VERSION, InvalidSpec
from .reconciler import READY, Runtime, account_view, display_url, failure_outcome
from .thingspace.accounts import Observation

log = logging.getLogger(__name__)
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
    registrations = (
        _registrations(account_name, observation, lambda key: claims_for(claims, names, key))
        if observation is not None
        else None
    )
    generation = (body.get("metadata") or {}).get("generation")
    refresh = runtime.config.sync_time_refresh_seconds
    desired = desired_status(status, generation, ready, registrations, observation, refresh)
    if ready.status == "False" and condition(status, READY).get("reason") != ready.reason:
        event_body = body if isinstance(body, kopf.Body) else kopf.Body(dict(body))  # type: ignore[arg-type]
        kopf.event(event_body, type="Warning", reason=ready.reason, message=ready.message)
    return changed_fields(status, desired)


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
