"""kopf handlers: parse the event, call the reconcile service, map its outcome to status.

No ThingSpace or Secret logic lives here. ``build_registry`` binds the handlers to one
configuration, so tests and the CLI each get a registry with their own settings.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import kopf

from . import reconciler
from .account_handlers import account_changed, report_accounts
from .config import OperatorConfig
from .drift import Tracked
from .kube.claims import (
    Claim,
    claim_key,
    claim_of,
    claims_for,
    registered_key,
    rival_owner,
    successor,
)
from .kube.login import Login
from .kube.secretwatch import SecretEvent
from .kube.status import (
    Condition,
    changed_fields,
    condition,
    merge_conditions,
    older_than,
    utc_timestamp,
)
from .metrics import ResourceState
from .model import (
    FINALIZER,
    GROUP,
    KOPF_ANNOTATION_PREFIX,
    KOPF_EARLIER_DIFFBASE_KEY,
    PLURAL,
    RECONCILE_REQUESTED_ANNOTATION,
    VERSION,
)
from .plan import Ownership
from .reconciler import READY, Outcome, Reason, Runtime, Trigger
from .thingspace.models import display_url

log = logging.getLogger(__name__)
#: Seconds a handler waits for the operator's own watch to show its resource.
SHOWN_WAIT = 10.0
ClaimsIndex = Mapping[tuple[str, str], Iterable[Claim]]
SecretUsers = Mapping[tuple[str, str], Iterable[str]]  # (namespace, Secret) -> names
RECONCILE_REQUESTED_FIELD = ("metadata", "annotations", RECONCILE_REQUESTED_ANNOTATION)
#: Synced reasons of a state someone chose (Suspended) or must change (the others), not a
#: fault: the status and a Warning Event (none for Suspended) report it, and it is logged
#: once as it starts, at WARNING (INFO for Suspended). kopf's ERROR "Handler ... failed
#: permanently" on every change of such a resource is for faults only.
REPORTED_STATES = frozenset(
    {Reason.SUSPENDED, Reason.CONFLICT, Reason.ACCOUNT_NOT_ALLOWED, Reason.ACCOUNT_REQUIRED}
)


def build_registry(config: OperatorConfig, login: Login) -> kopf.OperatorRegistry:
    """All handlers, bound to ``config``. ``login`` finds the cluster for kopf (kube/login.py:
    the one the operator's own requests use)."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)
    watch_streams = max(len(config.namespaces), 1)  # kopf's, of ThingSpaceCallbacks

    @kopf.on.login(registry=registry, id="login")
    async def log_in(**_: Any) -> kopf.AiohttpSession:
        return await login.kopf_session(watch_streams)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        configure_kopf(settings, config)
        runtime: Runtime = memo["runtime"]
        claims, users = runtime.inventory.claims, runtime.inventory.secret_users
        await runtime.verify_crd_served()
        runtime.metrics_port = runtime.metrics.serve(config.metrics_port)
        runtime.start_inventory(lambda event: account_changed(runtime, event))
        if config.secret_watch:
            runtime.start_secret_watch(lambda event: secret_changed(runtime, users, event))
        # The sweep decides ownership from the same live claims the handlers see, and
        # starts once they are complete.
        runtime.sweep.start(
            lambda tracked, since, resuming: check_drift(runtime, claims, tracked, since, resuming),
            before_each=lambda: refresh_unwatched_secrets(runtime, users),
            after_each=lambda since: report_accounts(runtime, claims, since),
            first=runtime.inventory.wait_complete,
        )

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            await runtime.close()
        stop_flag: asyncio.Event | None = memo.get("stop_flag")
        if stop_flag is not None:
            # Stopped by a signal, kopf still waits on its stop flag and would hold the
            # exit (and so the Lease's release) for 5 s: the flag is set, as we stop anyway.
            stop_flag.set()

    # No resume handler: after a restart the first drift sweep checks every unchanged
    # resource, one list per account, without kopf's per-handler bookkeeping
    # (docs/performance.md, S6).
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, field="spec", registry=registry)
    async def reconcile(retry: int, memo: kopf.Memo, **kwargs: Any) -> None:
        outcome = await sync_and_report(Trigger(), "change", memo=memo, **kwargs)
        raise_for_retry(outcome, retry, memo["runtime"].config)

    @kopf.on.update(*resource, field=RECONCILE_REQUESTED_FIELD, registry=registry)
    async def reconcile_now(
        new: Any,
        patch: kopf.Patch,
        name: str,
        namespace: str | None,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        """A new annotation value: reconcile at once, with a list fetched from now on (or,
        when a drift check asked, with the list that check fetched)."""
        key = (namespace or "", name)
        listed_since = memo["runtime"].sweep.take_request(key)
        if listed_since is None:
            secrets_read = memo["runtime"].sweep.take_secrets_read(key)
            trigger = Trigger(not_before=time.monotonic(), secrets_read_after=secrets_read)
            label = "requested"
        else:
            trigger, label = Trigger(not_before=listed_since, drift_check=True), "drift_check"
        await sync_and_report(
            trigger, label, patch=patch, name=name, namespace=namespace, memo=memo, **kwargs
        )
        if new is not None:
            patch.status["lastHandledReconcileAt"] = str(new)

    @kopf.on.delete(*resource, registry=registry)
    async def deregister(
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        meta: Mapping[str, Any],
        namespace: str | None,
        patch: kopf.Patch,
        body: kopf.Body,
        memo: kopf.Memo,
        retry: int,
        **kwargs: Any,
    ) -> None:
        runtime: Runtime = memo["runtime"]
        # Not before every claim is known (an older owner not known yet would lose its
        # registration): the start-up listing, and the own watch up to this deletion.
        await runtime.inventory.wait_complete()
        try:
            async with asyncio.timeout(SHOWN_WAIT):
                await runtime.wait_shown(_namespaced(namespace), str(meta.get("name")), True)
        except TimeoutError:
            message = "Waiting for the operator's watch of ThingSpaceCallbacks to show the deletion"
            raise kopf.TemporaryError(message, delay=backoff(retry, runtime.config)) from None
        _, heir = _ownership(runtime, runtime.inventory.claims, body, namespace)
        outcome = await reconciler.release(
            _namespaced(namespace),
            spec,
            owned_urls(spec, status),
            runtime,
            lambda: _ownership(runtime, runtime.inventory.claims, body, namespace)[0],
            status.get("accountName"),
        )
        if not outcome.succeeded:
            report(outcome, status, meta, patch, body, deleting=True)
            # The finalizer stays until deregistration succeeds or the policy says Orphan.
            raise kopf.TemporaryError(outcome.synced.message, delay=backoff(retry, runtime.config))
        post_event(body, outcome, status)
        runtime.metrics.set_state(str(meta.get("uid")), None)
        if heir is not None:
            # Wake the next owner now instead of at its next drift check (a failure to ask
            # is logged: the deletion is done, and must not be retried for it).
            await runtime.ask_to_reconcile([(heir.namespace, heir.name)])

    return registry


async def secret_changed(runtime: Runtime, users: SecretUsers, event: SecretEvent) -> None:
    """A labelled Secret was created, changed, deleted or unlabelled: keep the data of a
    referenced one, and reconcile its users when its values changed."""
    key = event.key
    if event.data is None:
        runtime.secrets.forget(*key)
    elif key in users or runtime.secrets.knows(*key):
        runtime.secrets.remember(*key, event.version, event.data, watched=True)
    if not runtime.secret_versions.changed(key, event.data, initial=event.initial):
        return
    await reconcile_users(runtime, users, key)
    # An account's credentials changed: its callbacks use them now.
    await runtime.ask_to_reconcile(runtime.callbacks_using_account_secret(key))


async def reconcile_users(
    runtime: Runtime, users: SecretUsers, key: tuple[str, str], read_at: float | None = None
) -> None:
    """Ask every resource that references the Secret ``key`` to reconcile now (with the
    read made at ``read_at``, if any). One that cannot be asked is left to its drift check,
    which sees the new values too."""
    callbacks = [(key[0], user) for user in sorted(set(users.get(key, ())))]
    if read_at is not None:
        for callback in callbacks:
            runtime.sweep.secrets_read(callback, read_at)
    await runtime.ask_to_reconcile(callbacks)


async def refresh_unwatched_secrets(runtime: Runtime, users: SecretUsers) -> None:
    """Once per drift period, before the checks: forget the Secrets nobody references any
    longer, read again those no watch keeps fresh, and reconcile the users of any that
    changed. An unlabelled Secret's change so applies within one period."""
    referenced = {*users, *runtime.account_secrets()}
    runtime.secrets.retain(referenced)
    runtime.referenced_secrets = {f"{namespace}/{name}" for namespace, name in referenced}
    runtime.namespaces.retain({namespace for namespace, _ in runtime.account_callbacks()})
    gate = asyncio.Semaphore(16)

    async def refresh(key: tuple[str, str]) -> None:
        async with gate:
            read_at = time.monotonic()  # the GET below starts later: its data will do
            try:
                changed = await runtime.secrets.refresh(*key, fresh_after=read_at)
            except Exception as exc:  # the API server is down: try again next period
                log.warning("Could not read Secret %s/%s again: %s", *key, type(exc).__name__)
                return
        if changed:
            await reconcile_users(runtime, users, key, read_at)

    await asyncio.gather(*(refresh(key) for key in runtime.secrets.unwatched()))


async def sync_and_report(
    trigger: Trigger,
    label: str,
    *,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    namespace: str | None,
    patch: kopf.Patch,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> Outcome:
    """The body of every sync handler: who owns it, sync, then status, Event and metrics.
    Ownership is decided once the start-up listing of every object is filed."""
    runtime: Runtime = memo["runtime"]
    await runtime.inventory.wait_complete()
    # Every older claim is filed once the own watch shows this resource. If it lags this
    # long, decide now: a drift check corrects a registration taken from an older owner.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SHOWN_WAIT):
            await runtime.wait_shown(_namespaced(namespace), str(meta.get("name")), False)
    claims = runtime.inventory.claims
    rival = _rival(runtime, claims, claim_key(spec), claim_of(meta, namespace or ""))
    recorded = status.get("accountName")
    outcome = await reconciler.sync(_namespaced(namespace), spec, runtime, trigger, rival, recorded)
    runtime.sweep.handled(_namespaced(namespace), str(meta.get("name")))
    report(outcome, status, meta, patch, body, runtime=runtime, trigger=label)
    return outcome


async def check_drift(
    runtime: Runtime, claims: ClaimsIndex, tracked: Tracked, since: float, resuming: bool = False
) -> None:
    """One resource's periodic check: observe only; anything to write goes to a handler.

    ``since`` is the start of the period: every check of an account in this period shares
    one list. A resource whose registration and status are as they should be costs no
    Kubernetes write at all. ``resuming``: the first check after a restart.
    """
    trigger = Trigger(not_before=since, drift_check=True, check_only=True)
    rival = _rival(runtime, claims, tracked.registration, tracked.claim)
    recorded = tracked.status.get("accountName")
    outcome = await reconciler.sync(
        tracked.namespace, tracked.spec, runtime, trigger, rival, recorded
    )
    status = tracked.status
    refresh = runtime.config.sync_time_refresh_seconds
    desired = desired_status(outcome, status, tracked.generation, False, refresh)
    if outcome.correction_needed or changed_fields(status, desired):
        runtime.sweep.request(tracked.key, since)
        try:
            exists = await runtime.resources.request_reconcile(*tracked.key)
        except Exception:
            # Not asked after all: a later request by someone else must list afresh.
            runtime.sweep.take_request(tracked.key)
            raise
        if not exists:  # its deletion went unseen (a watch gap): forget it everywhere
            runtime.forget_callback(*tracked.key)
    else:
        trigger_label = "resume" if resuming else "drift_check"
        runtime.metrics.observe_reconcile(trigger_label, outcome.synced.reason, False)
        if tracked.uid:
            runtime.metrics.set_state(tracked.uid, resource_state(desired))


def _rival(
    runtime: Runtime, claims: ClaimsIndex, key: tuple[str, str] | None, me: Claim
) -> Claim | None:
    """The older resource that owns the registration ``key`` instead of ``me``, if any."""
    everyone = claims_for(claims, runtime.account_names(), key)
    return rival_owner(everyone, me) if everyone else None


def _ownership(
    runtime: Runtime,
    claims: ClaimsIndex,
    body: Mapping[str, Any],
    namespace: str | None,
) -> tuple[Ownership, Claim | None]:
    """Whether this resource (being deleted) owned the registration, and who is next:
    among the claims on the account it registered in, whatever its accountRef names now."""
    spec, status, meta = body.get("spec") or {}, body.get("status"), body.get("metadata") or {}
    key = registered_key(claim_key(spec), status) or claim_key(spec)
    me = replace(claim_of(meta, namespace or ""), deleting=False)
    everyone = claims_for(claims, runtime.account_names(), key)
    heir = successor(everyone, me)
    if heir is not None and heir < me:
        return Ownership.NOT_OWNER, None
    return (Ownership.HANDOVER if heir else Ownership.SOLE), heir


def _namespaced(namespace: str | None) -> str:
    if not namespace:  # the CRD is namespaced; kopf always passes one
        raise kopf.PermanentError("ThingSpaceCallback objects must be namespaced")
    return namespace


class HandledConfiguration(kopf.StatusDiffBaseStorage):
    """kopf's record of the configuration it last handled (how it tells a spec change
    from any other event), kept in ``status.lastHandledConfiguration``.

    In status, it rides on the status patch every reconcile makes anyway; as an
    annotation, as before, it cost a PATCH of its own per change. The annotation of
    earlier versions is still read, so an upgrade does not look like a change.
    """

    def __init__(self) -> None:
        super().__init__(field="status.lastHandledConfiguration")
        self._earlier = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_ANNOTATION_PREFIX, key=KOPF_EARLIER_DIFFBASE_KEY
        )

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return self._earlier.build(body=body, extra_fields=extra_fields)  # as before

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return super().fetch(body=body) or self._earlier.fetch(body=body)


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's progress of retried handlers goes to annotations, never into our status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = HandledConfiguration()
    # A watch that silently stalls is kopf's best-known failure: bound both sides.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # No worker limit: kopf keeps the events of objects waiting for a worker, bodies and
    # all, so a limit barely lowered the peak memory of a burst and slowed convergence
    # (docs/performance.md). Workers must never wait on kopf's pass over other objects:
    # with kopf indexes they did, and a limit of 500 hung a restart over 1000 resources.
    # Workers are released after 1 s idle instead of kopf's 5 s (docs/performance.md).
    # On shutdown, calls in flight get 1 s to finish, then are abandoned (as safe as a
    # crash: the next leader lists before it writes); the Lease is released sooner.
    settings.queueing.exit_timeout = 1.0
    settings.queueing.worker_limit = None
    settings.queueing.idle_timeout = 1.0
    settings.posting.level = logging.INFO  # only our explicit Events are posted
    # No watch of every CRD and namespace of the cluster (their bodies cost memory that
    # grows with the cluster, and the RBAC to list them): the resource is found once by
    # discovery at startup (verify_crd_served), the namespaces are the ones configured.
    settings.scanning.disabled = True
    settings.execution.max_workers = 8


def report(
    outcome: Outcome,
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    body: kopf.Body,
    deleting: bool = False,
    runtime: Runtime | None = None,
    trigger: str = "",
) -> None:
    """Patch only the status fields that changed, announce what is news, count it."""
    refresh = runtime.config.sync_time_refresh_seconds if runtime is not None else 0.0
    desired = desired_status(outcome, status, meta.get("generation"), deleting, refresh)
    for key, value in changed_fields(status, desired).items():
        patch.status[key] = value
    post_event(body, outcome, status, runtime.account_names() if runtime is not None else None)
    if runtime is not None:
        drift_corrected = outcome.event is not None and outcome.event.reason == "DriftCorrected"
        runtime.metrics.observe_reconcile(trigger, outcome.synced.reason, drift_corrected)
        runtime.metrics.set_state(str(meta.get("uid")), resource_state(desired))


def owned_urls(spec: Mapping[str, Any], status: Mapping[str, Any]) -> set[str]:
    """What a deletion may deregister: the URL the spec declares, and the one the status
    last confirmed as this resource's own (Ready=True is written with the registration it
    found equal to the spec). A registration the status merely shows (someone else's, one
    a callback deleted with Orphan left, a drifted one) is not this resource's."""
    urls = {spec.get("url", "")}
    if condition(status, READY).get("status") == "True":
        urls.add((status.get("registration") or {}).get("url", ""))
    return urls - {""}


def resource_state(status: Mapping[str, Any]) -> ResourceState:
    ready, synced = condition(status, READY), condition(status, "Synced")
    return ResourceState(
        ready=str(ready.get("status", "Unknown")),
        synced=str(synced.get("status", "Unknown")),
        managed=ready.get("status") == "True" and synced.get("reason") != "ObserveOnly",
        ready_reason=str(ready.get("reason", "")),
        synced_reason=str(synced.get("reason", "")),
    )


def desired_status(
    outcome: Outcome,
    status: Mapping[str, Any],
    generation: int | None,
    deleting: bool = False,
    sync_refresh: float = 0.0,
) -> dict[str, Any]:
    """The status this outcome calls for. ``lastSyncTime`` moves when anything else changes,
    or when it is older than ``sync_refresh`` seconds."""
    now = utc_timestamp()
    updates = [outcome.synced]
    ready = outcome.ready
    known = condition(status, READY)
    if deleting:
        ready = Condition(READY, "False", "Deleting", outcome.synced.message)
    elif ready is None and not known:
        ready = Condition(READY, "False", outcome.synced.reason, outcome.synced.message)
    elif ready is None and known.get("observedGeneration") != generation:
        # Not looked at, and what Ready says is of an earlier spec: this one is not known
        # to be in effect (kubectl wait and GitOps health checks read Ready).
        message = f"The current spec is not known to be in effect: {outcome.synced.message}"
        ready = Condition(READY, "Unknown", outcome.synced.reason, message)
    if ready is not None:
        updates.append(ready)
    desired: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(status.get("conditions") or (), updates, generation, now),
    }
    if outcome.account:
        desired["accountName"] = outcome.account
    if outcome.observed:
        desired["registration"] = (
            {
                "url": display_url(outcome.live.url),
                "hasCallbackCredentials": outcome.live.has_credentials,
            }
            if outcome.live is not None
            else None
        )
    if outcome.succeeded and (
        changed_fields(status, desired) or older_than(status.get("lastSyncTime"), sync_refresh)
    ):
        # A check that changes nothing writes nothing, except a coarse heartbeat.
        desired["lastSyncTime"] = now
    return desired


def post_event(
    body: kopf.Body,
    outcome: Outcome,
    status: Mapping[str, Any],
    account_names: Mapping[str, str] | None = None,
) -> None:
    """Post the outcome's Event and log it; a state already reported is not repeated. A
    failed sync without an Event (Suspended) is logged at INFO when it starts.
    ``account_names``: ThingSpaceAccount -> billing account, for the log line."""
    event = outcome.event
    line = (body, outcome, status, account_names or {})
    if event is None:
        synced = outcome.synced
        if not outcome.succeeded and condition(status, "Synced").get("reason") != synced.reason:
            log_about(*line, logging.INFO, synced.reason, synced.message)
        return
    if event.news_of and condition(status, event.news_of).get("reason") == event.reason:
        return
    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    level = logging.INFO if event.type == "Normal" else logging.WARNING
    log_about(*line, level, event.reason, event.message)


def log_about(
    body: kopf.Body,
    outcome: Outcome,
    status: Mapping[str, Any],
    account_names: Mapping[str, str],
    level: int,
    reason: str,
    message: str,
) -> None:
    """One line about the resource, naming the account and service it registers (also as
    the ``account`` and ``service`` fields of a JSON line): by ``accountRef``, the billing
    account its status records, else the one its ThingSpaceAccount holds."""
    spec, meta = body.get("spec") or {}, body.get("metadata") or {}
    ref = spec.get("accountRef")
    ref_name = str(ref.get("name")) if isinstance(ref, Mapping) else ""
    account = (
        outcome.account
        or spec.get("accountName")
        or status.get("accountName")
        or account_names.get(ref_name)
        or (f"ThingSpaceAccount/{ref_name}" if ref_name else "")
    )
    service = spec.get("serviceName")
    log.log(
        level,
        "%s [account=%s service=%s %s/%s]: %s",
        reason,
        account,
        service,
        meta.get("namespace"),
        meta.get("name"),
        message,
        extra={"account": account, "service": service},
    )


def raise_for_retry(outcome: Outcome, retry: int, config: OperatorConfig) -> None:
    """Transient failures retry with backoff; permanent ones wait for a change or a drift
    check. A reported state (REPORTED_STATES) is no failure of the handler."""
    if outcome.succeeded or outcome.synced.reason in REPORTED_STATES:
        return
    if outcome.transient:
        delay = outcome.retry_after or backoff(retry, config)
        raise kopf.TemporaryError(outcome.synced.message, delay=delay)
    raise kopf.PermanentError(outcome.synced.message)


def backoff(retry: int, config: OperatorConfig) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(config.retry_max_seconds, config.retry_base_seconds * 2 ** min(retry, 16))
    return max(config.retry_base_seconds / 2, random.uniform(0, ceiling))
