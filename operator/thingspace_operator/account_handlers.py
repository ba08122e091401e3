"""What the operator does with ThingSpaceAccounts (watched by the operator itself, not
through kopf): keep the accounts known to the callbacks, ask the callbacks that use an
account to reconcile when it changes, and report the account's live registrations in its
status from the same shared list the callbacks use."""

import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .account import AccountSpec, CallbackPolicy
from .kube.claims import ACCOUNT_REF, Claim, claims_for, owner_among
from .kube.listwatch import WatchEvent
from .kube.login import OwnNamespace
from .kube.status import (
    Condition,
    changed_fields,
    condition,
    merge_conditions,
    older_than,
    utc_timestamp,
)
from .model import InvalidSpec
from .reconciler import (
    READY,
    Runtime,
    Sighting,
    account_secret,
    account_view,
    deregister,
    failure_outcome,
)
from .thingspace.accounts import Observation
from .thingspace.errors import ThingSpaceError
from .thingspace.models import display_url

log = logging.getLogger(__name__)
AUTHORITATIVE = CallbackPolicy.AUTHORITATIVE


async def account_changed(runtime: Runtime, event: WatchEvent) -> None:
    """Keep each account filed, and its body for the report after each sweep. Once the
    start-up listing is over, report a new or changed account at once, and ask its
    callbacks to reconcile when it is new (a callback applied with it may have found it
    missing), changed its spec (they may have become allowed or not, or use other
    credentials) or went. A status write changes nothing. No kopf state is kept on
    accounts: the platform team's objects get no annotations or finalizers."""
    name = event.key[1]
    if event.type == "DELETED":
        runtime.inventory.account_gone(name)
        runtime.account_bodies.pop(name, None)
        runtime.accounts_left.pop(name, None)
        seen = None
    else:
        seen = _filed(runtime, name, event.object.get("spec"))
        runtime.account_bodies[name] = dict(event.object)
    new, previous = name not in runtime.seen_accounts, runtime.seen_accounts.get(name)
    runtime.seen_accounts[name] = seen  # a deleted one stays seen: a re-creation is a change
    # At start-up every callback is checked anyway (by the first sweep or its handler),
    # and every account is reported after the first sweep.
    if not event.initial and (new or previous != seen):
        runtime.background.run(("ThingSpaceAccount", name), lambda: follow_change(runtime, name))


def _filed(runtime: Runtime, name: str, spec: Any) -> AccountSpec | None:
    """File the account; its parsed spec, or None when it is invalid, however malformed
    (a failure here would stop the watch of every account)."""
    try:
        return runtime.inventory.account_seen(name, spec if isinstance(spec, Mapping) else {})
    except Exception as exc:
        log.error("Could not file ThingSpaceAccount %s (%s)", name, type(exc).__name__)
        runtime.inventory.account_gone(name)
        return None


async def follow_change(runtime: Runtime, name: str) -> None:
    """Ask the account's callbacks to reconcile, and report it."""
    inventory = runtime.inventory
    await inventory.wait_complete()  # who uses it, and who manages each registration
    await runtime.ask_to_reconcile(sorted(set(inventory.account_users.get(name, ()))))
    body = runtime.account_bodies.get(name)
    if body is not None:
        await report_one(runtime, inventory.claims, name, body, time.monotonic())


async def report_accounts(runtime: Runtime, claims: Any, since: float) -> None:
    """After a drift sweep: every account's status, from the lists the sweep made (an
    account no callback uses is listed here, once per period)."""
    for name, body in sorted(runtime.account_bodies.items()):
        await report_one(runtime, claims, name, body, since)


async def report_one(
    runtime: Runtime, claims: Any, name: str, body: Mapping[str, Any], not_before: float
) -> None:
    """Write the account's status if it changed; never raises (logged instead)."""
    if not reports(runtime, body):
        note_left(runtime, name, body)
        return
    try:
        changes = await status_changes(runtime, claims, name, body, not_before)
        if changes:
            await runtime.resources.patch_account_status(name, changes)
    except Exception as exc:
        log.warning("Could not report ThingSpaceAccount %s: %s", name, type(exc).__name__)
    publish_account_states(runtime)


def publish_account_states(runtime: Runtime) -> None:
    """The accounts gauge: every account this process reports, as last judged."""
    ready = runtime.account_ready
    for gone in set(ready) - set(runtime.account_bodies):
        del ready[gone]
    runtime.metrics.set_accounts(ready)


async def status_changes(
    runtime: Runtime, claims: Any, name: str, body: Mapping[str, Any], not_before: float
) -> dict[str, Any]:
    """The status fields of the account ``body`` that should change, with an Event when
    Ready turns False for a new reason."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    ready, observation, account_name = await observe(runtime, name, spec, not_before)

    def managers(key: tuple[str, str]) -> list[Claim]:
        return claims_for(claims, runtime.account_names(), key)

    def may_declare(key: tuple[str, str]) -> list[Claim]:
        # Read afresh each time: accounts and callbacks may appear while pruning awaits.
        return declaring(claims, runtime.account_names(), key)

    registrations = (
        _registrations(account_name, observation, managers) if observation is not None else None
    )
    account = _parsed(name, spec)
    if observation is not None and account is not None and account.policy is AUTHORITATIVE:
        ready = await prune(runtime, account, observation, may_declare, body, ready)
    else:  # not pruning (now): earlier sightings must not count later
        forget_sightings(runtime, account_name)
    runtime.account_ready[name] = (ready.status, ready.reason)
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
    additive = sorted(
        other.name
        for other in runtime.inventory.accounts.values()
        if other.account_name == account.account_name and other.policy is not AUTHORITATIVE
    )
    if additive:  # the two say opposite things of one billing account: the safe one wins
        note = (
            f"Authoritative is inactive: ThingSpaceAccount {', '.join(additive)} of the same "
            "billing account is Additive"
        )
        return replace(ready, message=f"{ready.message}. {note}")
    if not runtime.inventory_current():
        return ready  # not every callback of the cluster known now: no judgement possible
    watch = runtime.unmanaged
    period = runtime.config.resync_seconds
    for service, live in sorted(observation.callbacks.items()):
        key = (account.account_name, service)
        seen = watch.get(key)
        if claims_of(key):  # a callback of this account and service exists, in any state
            watch.pop(key, None)
        elif (
            seen is None
            or seen.url != live.url
            or observation.started_at - seen.last > 2 * period  # sightings not consecutive
        ):
            watch[key] = Sighting(observation.started_at, observation.started_at, live.url)
        elif observation.started_at - seen.first >= period:
            await _deregister_unmanaged(runtime, account, service, live.url, claims_of, body)
            watch.pop(key, None)
        else:
            watch[key] = replace(seen, last=observation.started_at)
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
        # Everything again, as it is now: the awaits since the sightings may have let a
        # callback in (declared, or registered by a handler whose resource the inventory
        # does not show yet), or a watch gap open.
        if claims_of((account.account_name, service)) or not runtime.inventory_current():
            return
        try:
            live = (await view.observe(view.now())).get(service)
        except ThingSpaceError:
            return  # not verified now: the sightings start again
        if live is None or live.url != url:
            return  # gone, or someone's new registration: not what was sighted twice
        await deregister(view, service)
    runtime.metrics.pruned.inc()
    message = (
        f"Deregistered {service} callbacks of account {account.account_name} "
        f"({display_url(url)}): no ThingSpaceCallback declares them and callbackPolicy is "
        "Authoritative"
    )
    log.info("%s [ThingSpaceAccount %s]", message, account.name)
    await announce(runtime, body, "Normal", "Pruned", message)


def declaring(claims: Any, names: Mapping[str, str], key: tuple[str, str]) -> list[Claim]:
    """The callbacks that declare registration ``key``, plus, to be safe, every callback of
    that service whose ThingSpaceAccount cannot be resolved (deleted, invalid, not yet
    seen): it may be for this account."""
    unresolved = [
        claim
        for (account, service), found in claims.items()
        if service == key[1]
        and account.startswith(ACCOUNT_REF)
        and account.removeprefix(ACCOUNT_REF) not in names
        for claim in found
    ]
    return claims_for(claims, names, key) + unresolved


def forget_sightings(runtime: Runtime, account_name: str) -> None:
    for key in [k for k in runtime.unmanaged if k[0] == account_name]:
        del runtime.unmanaged[key]


def reports(runtime: Runtime, body: Mapping[str, Any]) -> bool:
    """Whether this operator writes the account's status: the release whose namespace holds
    its credentials does (with several releases, each reports only its own accounts)."""
    ref = (body.get("spec") or {}).get("credentialsSecretRef") or {}
    return ref.get("namespace") in (None, "", runtime.own_namespace)


def namespace_notice(found: OwnNamespace) -> str:
    """The start-up line: the operator's namespace, where it came from, and what it means
    for ThingSpaceAccounts (README, Several releases)."""
    return (
        f"Operator namespace: {found.name} (from {found.source}). A ThingSpaceAccount's "
        f"credentialsSecretRef without a namespace means a Secret in {found.name}; this "
        f"operator writes the status of the accounts whose credentialsSecretRef.namespace is "
        f"{found.name} or empty, and leaves every other account's status to the release "
        "installed in that namespace"
    )


def note_left(runtime: Runtime, name: str, body: Mapping[str, Any]) -> None:
    """Say once why the account's status is not written here: at INFO, as several releases
    each report their own accounts; at WARNING when callbacks this operator reconciles use
    it (one release should hold an account and its callbacks: with no release in that
    namespace, nobody writes the account's status)."""
    ref = (body.get("spec") or {}).get("credentialsSecretRef") or {}
    namespace = str(ref.get("namespace"))
    used = bool(runtime.inventory.account_users.get(name))
    level = logging.WARNING if used else logging.INFO
    noted = runtime.accounts_left.get(name)
    if noted is not None and noted[0] == namespace and noted[1] >= level:
        return
    runtime.accounts_left[name] = (namespace, level)
    advice = (
        f". Callbacks this operator reconciles use it: unless a release of the operator runs "
        f"in {namespace}, run this one there (POD_NAMESPACE, or the namespace of the "
        "kubeconfig's context) or the account gets no condition, counts or Events"
        if used
        else ""
    )
    log.log(
        level,
        "ThingSpaceAccount %s: its status is left to the release in namespace %s, where its "
        "credentialsSecretRef is; this operator's namespace is %s%s",
        name,
        namespace,
        runtime.own_namespace,
        advice,
    )


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
        failed = failure_outcome(exc, secret=account_secret(account, runtime)).synced
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
        if changed_fields(status, desired) or older_than(
            status.get("lastListTime"), refresh_seconds
        ):
            desired["lastListTime"] = _wall_time(observation.started_at)
    return desired


def _wall_time(monotonic: float) -> str:
    ago = time.monotonic() - monotonic
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=max(0.0, ago))
    return utc_timestamp(when)
