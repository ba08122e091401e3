"""The reconcile service: read credentials, observe ThingSpace, apply the plan, report.

Handlers call ``sync`` or ``release`` and map the returned ``Outcome`` onto status and
Events. Everything that can go wrong is caught here and becomes an ``Outcome`` with a
condition reason, so handlers never see a raw exception from ThingSpace or a Secret.
"""

import asyncio
import contextlib
import enum
import functools
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import kopf

from .account import ACCOUNT_PLURAL, AccountSpec
from .background import SerialTasks
from .config import OperatorConfig
from .drift import DriftSweep
from .inventory import Inventory
from .kube import listwatch
from .kube.claims import Claim, claims_for, owner_among
from .kube.connection import KubeConnection
from .kube.listwatch import ListWatch, ObjectKey, Scope, WatchEvent
from .kube.namespaces import NamespaceLabels
from .kube.resources import CallbackResources
from .kube.secrets import CredentialsInvalid, CredentialsNotFound, SecretReader, SecretVersions
from .kube.secretwatch import LabelledSecretWatch, Listener
from .kube.status import Condition
from .metrics import Metrics
from .model import GROUP, PLURAL, VERSION, CallbackSpec, InvalidSpec, ManagementPolicy
from .plan import Action, DeleteReason, Drift, Ownership, plan_delete, plan_sync
from .thingspace.accounts import AccountView, AccountViews
from .thingspace.client import ClientPool
from .thingspace.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    ThingSpaceError,
    Unavailable,
)
from .thingspace.models import Callback, display_url

READY, SYNCED = "Ready", "Synced"
IN_SYNC_MESSAGE = "The live registration in ThingSpace matches the spec"

log = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    REGISTERED = "Registered"
    PENDING = "Pending"
    DRIFTED = "Drifted"
    SUSPENDED = "Suspended"
    DELETING = "Deleting"
    CONFLICT = "Conflict"
    RECONCILE_SUCCESS = "ReconcileSuccess"
    OBSERVE_ONLY = "ObserveOnly"
    INVALID_SPEC = "InvalidSpec"
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    CREDENTIALS_INVALID = "CredentialsInvalid"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"
    ACCOUNT_NOT_ALLOWED = "AccountNotAllowed"
    ACCOUNT_REQUIRED = "AccountRequired"


@dataclass
class Runtime:
    """Everything the handlers share, handed to kopf as its ``memo``."""

    config: OperatorConfig
    secrets: SecretReader
    resources: CallbackResources
    clients: ClientPool
    views: AccountViews
    locks: "weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]"
    secret_versions: SecretVersions
    metrics: Metrics
    sweep: DriftSweep
    connection: KubeConnection
    namespaces: NamespaceLabels
    metrics_port: int = 0  # where /metrics is served, once started
    secret_watch: LabelledSecretWatch | None = None
    inventory: Inventory = field(default_factory=Inventory)
    """Claims, Secret and account users, and the accounts: fed by the watches below."""
    callback_watch: ListWatch | None = None
    account_watch: ListWatch | None = None
    background: SerialTasks = field(default_factory=SerialTasks)
    """What the watches ask for and must not wait on: reconcile requests, account reports."""
    unfiled: set[ObjectKey] = field(default_factory=set)
    """Callbacks the watch showed that could not be filed (malformed)."""
    _shown_waiters: dict[ObjectKey, list[tuple[bool, "asyncio.Future[None]"]]] = field(
        default_factory=dict
    )
    seen_accounts: dict[str, AccountSpec | None] = field(default_factory=dict)
    """The spec each account had when last seen, to tell a change from a status write."""
    account_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each ThingSpaceAccount as last seen (for the status report after each sweep)."""
    unmanaged: dict[tuple[str, str], "Sighting"] = field(default_factory=dict)
    """(account, service) -> when and with which URL a registration nobody declares was
    seen: an Authoritative account removes it a period after the first sighting."""
    inventory_task: "asyncio.Task[None] | None" = None
    own_namespace: str = "default"
    """Where an account's credentials Secret is when its ref names no namespace."""
    accounts_left: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Accounts whose status another release writes, as logged: (its namespace, level)."""
    account_ready: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Each reported account's Ready (status, reason), for the metrics."""
    referenced_secrets: set[str] = field(default_factory=set)
    """``namespace/name`` of every Secret a resource references, as of the last sweep."""

    @classmethod
    def create(cls, config: OperatorConfig, connection: KubeConnection) -> "Runtime":
        metrics = Metrics()
        runtime = cls(
            config=config,
            secrets=SecretReader(connection),
            resources=CallbackResources(connection),
            namespaces=NamespaceLabels(connection),
            connection=connection,
            clients=ClientPool(
                config.api_url, config.request_timeout_seconds, metrics.observe_call
            ),
            views=AccountViews(
                config.max_concurrent_calls_per_account, config.max_calls_per_second_per_account
            ),
            locks=weakref.WeakValueDictionary(),
            secret_versions=SecretVersions(),
            metrics=metrics,
            sweep=DriftSweep(config.resync_seconds),
        )
        runtime.sweep.account_names = runtime.account_names  # log lines name accounts
        metrics.rejected_credentials.set_function(runtime.rejected_secrets_in_use)
        return runtime

    def forget_callback(self, namespace: str, name: str) -> None:
        """The callback is gone: its claim, Secret and account uses, and its drift checks.
        If it was the owner of a registration without being deleted first (no finalizer
        let the deregister handler hand over, or a gap in the watch hid its deletion),
        the next owner is asked to reconcile now (in the background) rather than at its
        next drift check."""
        claimed = self.inventory.claims.entries_of((namespace, name))
        tracked = self.sweep.tracked((namespace, name))
        if tracked is not None and tracked.uid:  # gone without its delete handler: no gauge
            self.metrics.set_state(tracked.uid, None)
        self.inventory.callback_gone(namespace, name)
        self.sweep.forget(namespace, name)
        self.unfiled.discard((namespace, name))
        for key, gone in claimed.items():
            owner = owner_among(claims_for(self.inventory.claims, self.account_names(), key))
            if owner is not None and not gone.deleting and gone < owner:  # it held it up
                heir = (owner.namespace, owner.name)
                self.background.run(heir, functools.partial(self.ask_to_reconcile, [heir]))

    def inventory_current(self) -> bool:
        """The inventory holds every ThingSpaceCallback and ThingSpaceAccount in scope
        now: listed, no change unseen since (a failed watch may hide some until it lists
        again), and none that could not be filed."""
        watches = (self.callback_watch, self.account_watch)
        healthy = all(watch is not None and watch.healthy for watch in watches)
        return self.inventory.complete and healthy and not self.unfiled

    async def wait_shown(self, namespace: str, name: str, deleting: bool) -> None:
        """Until the operator's own watch has shown this callback (being deleted, with
        ``deleting``). One watch stream delivers a namespace's objects in order, so every
        callback created (and deleted) before it there is filed then too: an ownership
        decision made after it sees them."""
        key = (namespace, name)
        if self._shown(key, deleting):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (deleting, future)
        self._shown_waiters.setdefault(key, []).append(waiter)
        try:
            await future
        finally:
            waiters = self._shown_waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._shown_waiters.pop(key, None)

    def _shown(self, key: ObjectKey, deleting: bool) -> bool:
        if key in self.unfiled:
            return True
        tracked = self.sweep.tracked(key)
        return tracked is not None and (tracked.claim.deleting or not deleting)

    def _wake_shown(self, key: ObjectKey, gone: bool = False) -> None:
        for deleting, future in self._shown_waiters.get(key, ()):
            if not future.done() and (gone or self._shown(key, deleting)):
                future.set_result(None)

    def account(self, name: str) -> AccountSpec | None:
        return self.inventory.accounts.get(name)

    async def ask_to_reconcile(self, callbacks: Iterable[tuple[str, str]]) -> None:
        """Set the reconcile-now annotation on each (namespace, name). One that cannot be
        asked is left to its drift check, which sees the same change."""
        for namespace, name in callbacks:
            try:
                await self.resources.request_reconcile(namespace, name)
            except Exception as exc:
                log.warning(
                    "Could not ask %s/%s to reconcile (%s); its next drift check will",
                    namespace,
                    name,
                    type(exc).__name__,
                )

    def account_callbacks(self) -> set[tuple[str, str]]:
        """(namespace, name) of every callback that uses a ThingSpaceAccount."""
        return {user for users in self.inventory.account_users.values() for user in users}

    def callbacks_using_account_secret(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        """The callbacks whose ThingSpaceAccount keeps its credentials in Secret ``key``."""
        return sorted(
            {
                user
                for name, spec in self.inventory.accounts.items()
                if (spec.secret_namespace or self.own_namespace, spec.secret_name) == key
                for user in self.inventory.account_users.get(name, ())
            }
        )

    def account_secrets(self) -> set[tuple[str, str]]:
        """The Secrets ThingSpaceAccounts keep their credentials in."""
        return {
            (spec.secret_namespace or self.own_namespace, spec.secret_name)
            for spec in self.inventory.accounts.values()
        }

    def rejected_secrets_in_use(self) -> int:
        """Referenced Secrets whose current values ThingSpace rejected (a Secret nobody
        uses any longer is no one's problem, though its record stays)."""
        return len(self.clients.rejected.by_origin.keys() & self.referenced_secrets)

    def account_names(self) -> dict[str, str]:
        """ThingSpaceAccount name -> the billing account it holds."""
        return {name: spec.account_name for name, spec in self.inventory.accounts.items()}

    def lock_for(self, account: str, service: str) -> asyncio.Lock:
        """One registration is changed by one reconcile at a time (handler vs drift check).
        A lock lives only while someone holds or awaits it: none are kept per resource."""
        lock = self.locks.get((account, service))
        if lock is None:
            lock = self.locks[(account, service)] = asyncio.Lock()
        return lock

    def start_secret_watch(self, listener: Listener) -> None:
        # Without Secret access in callbacks' namespaces, only the own namespace is watched.
        scope: tuple[str, ...] = (self.own_namespace,)  # ThingSpaceAccounts' Secrets
        if self.config.namespaced_secrets and self.config.namespaces:
            scope = tuple(dict.fromkeys((*self.config.namespaces, self.own_namespace)))
        elif self.config.namespaced_secrets:
            scope = ()  # every namespace
        watch = LabelledSecretWatch(self.connection, listener, scope)
        watch.on_gap = self.secrets.unwatch_all
        self.secrets.tracked = watch.tracks
        self.secret_watch = watch
        watch.start()

    def start_inventory(self, account_listener: listwatch.Listener) -> None:
        """List, then watch, every ThingSpaceCallback (the inventory and the drift sweep
        follow them) and every ThingSpaceAccount (``account_listener``); the inventory is
        complete once both are listed."""
        self.callback_watch = ListWatch(
            self.connection,
            _callbacks_path,
            self._callback_changed,
            self.config.namespaces,  # as kopf watches them: namespace by namespace
            what="ThingSpaceCallbacks",
        )
        self.account_watch = ListWatch(
            self.connection,
            _accounts_path,
            account_listener,
            what="ThingSpaceAccounts",
            may_be_absent=True,  # a cluster without accounts may lack their CRD
        )
        watches = (self.callback_watch, self.account_watch)
        for watch in watches:
            watch.start()
        self.inventory_task = asyncio.create_task(
            self._complete_inventory(watches), name="inventory"
        )

    async def _callback_changed(self, event: WatchEvent) -> None:
        key = event.key
        if event.type == "DELETED":
            self.forget_callback(*key)
            self._wake_shown(key, gone=True)
            return
        try:
            self.sweep.track(event.object, self.inventory.callback_seen(event.object))
            self.unfiled.discard(key)
        except Exception as exc:  # its shape, not the watch: the others must still be filed
            # The failure's type only: its message could quote the object.
            log.error("Could not file ThingSpaceCallback %s/%s (%s)", *key, type(exc).__name__)
            self.inventory.callback_gone(*key)  # not as it was before either
            self.sweep.forget(*key)
            self.unfiled.add(key)
        self._wake_shown(key)

    async def _complete_inventory(self, watches: Iterable[ListWatch]) -> None:
        for watch in watches:
            await watch.wait_listed()
        self.inventory.mark_complete()
        log.info(
            "Listed %d ThingSpaceCallbacks and %d ThingSpaceAccounts",
            len(self.sweep),
            len(self.account_bodies),
        )

    async def verify_crd_served(self) -> None:
        """Fail startup unless the API server serves ThingSpaceCallbacks: kopf looks the
        resource up once and would otherwise wait silently for ever."""
        if not await self.resources.served():
            raise kopf.PermanentError(
                f"The API server does not serve {PLURAL}.{GROUP}/{VERSION}: install the CRD "
                "(crds/ or the Helm chart) before the operator"
            )

    async def close(self) -> None:
        if self.inventory_task is not None:
            self.inventory_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.inventory_task
        await self.sweep.stop()
        for watch in (self.secret_watch, self.callback_watch, self.account_watch):
            if watch is not None:
                await watch.stop()
        await self.background.close()
        await self.views.close()
        await self.resources.close()
        await self.connection.close()
        await self.clients.close()
        self.metrics.stop()


@dataclass(frozen=True)
class Sighting:
    """A registration nobody declares, as the lists of an account showed it."""

    first: float  # monotonic start of the first list that showed it
    last: float  # ... and of the latest
    url: str


@dataclass(frozen=True)
class Announcement:
    """A Kubernetes Event to post about the resource."""

    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    news_of: str | None = None
    """A condition type: post only when that condition gets this reason (not on repeats)."""


@dataclass(frozen=True)
class Outcome:
    synced: Condition
    ready: Condition | None = None  # None: not observed, keep whatever Ready said
    observed: bool = False
    live: Callback | None = None
    event: Announcement | None = None
    transient: bool = False  # worth retrying soon (ThingSpace unavailable or throttling)
    retry_after: float | None = None
    correction_needed: bool = False  # a check-only sync found a write to make
    account: str | None = None  # the billing account the resource resolved to

    @property
    def succeeded(self) -> bool:
        return self.synced.status == "True"


@dataclass(frozen=True)
class Trigger:
    """Why a reconcile runs, which decides how fresh ThingSpace's list must be."""

    not_before: float | None = None  # monotonic time; None: the config's max age
    drift_check: bool = False  # a periodic check: corrections are DriftCorrected
    check_only: bool = False  # observe and plan, but leave any write to a handler
    secrets_read_after: float | None = None
    """Secrets read since then will do (default: ``not_before``). Set when the operator
    itself just read the Secret whose change asked for this reconcile."""

    @property
    def secrets_fresh_after(self) -> float | None:
        return self.not_before if self.secrets_read_after is None else self.secrets_read_after


def _callbacks_path(namespace: Scope) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    return f"{base}/namespaces/{namespace}/{PLURAL}" if namespace else f"{base}/{PLURAL}"


def _accounts_path(_: Scope) -> str:
    return f"/apis/{GROUP}/{VERSION}/{ACCOUNT_PLURAL}"


async def sync(
    namespace: str,
    spec_body: Mapping[str, Any],
    runtime: Runtime,
    trigger: Trigger,
    rival: Claim | None = None,
    recorded_account: str | None = None,
) -> Outcome:
    """Make ThingSpace's registration equal the spec (or only observe it).

    ``rival`` is the older resource that owns the same registration, if any: then this
    one reports the conflict and makes no ThingSpace call at all.
    """
    secret = ""  # namespace/name of the credentials Secret, once known
    try:
        spec = CallbackSpec.parse(spec_body)
        if spec.suspend:
            return _suspended()
        check_secrets_allowed(spec, runtime.config)
        spec = await resolve_account(namespace, spec, runtime, trigger.secrets_fresh_after)
        secret = credentials_secret(namespace, spec, runtime)
        if recorded_account and recorded_account != spec.account_name:
            raise InvalidSpec(
                f"this resource registers in account {recorded_account}; its accountRef now "
                f"names account {spec.account_name}. The account of a ThingSpaceCallback "
                "cannot change (the registration would be left behind): create a new one"
            )
        if rival is not None:
            return replace(_conflict(spec, rival), account=spec.account_name)
        desired, view = await _prepare(namespace, spec, runtime, trigger.secrets_fresh_after)
        async with runtime.lock_for(spec.account_name, spec.service_name):
            outcome = await _sync_locked(spec, desired, view, runtime, trigger, secret)
        return replace(outcome, account=spec.account_name)
    except Exception as exc:
        return _through_account(failure_outcome(exc, secret=secret), spec_body)


def _through_account(outcome: Outcome, spec_body: Mapping[str, Any]) -> Outcome:
    """A credentials failure of a callback that uses a ThingSpaceAccount points to the
    account, which reports it (the login is shared: rejected once, never repeated)."""
    ref = spec_body.get("accountRef")
    reasons = (Reason.AUTHENTICATION_FAILED, Reason.CREDENTIALS_INVALID)
    if not isinstance(ref, Mapping) or outcome.synced.reason not in reasons:
        return outcome
    message = f"ThingSpaceAccount {ref.get('name')}: see its status ({outcome.synced.message})"
    synced = replace(outcome.synced, message=message)
    ready = replace(outcome.ready, message=message) if outcome.ready is not None else None
    event = replace(outcome.event, message=message) if outcome.event is not None else None
    return replace(outcome, synced=synced, ready=ready, event=event)


async def _prepare(
    namespace: str, spec: CallbackSpec, runtime: Runtime, fresh_after: float | None
) -> tuple[Callback, AccountView]:
    """Credentials and the account view. ``fresh_after``: Secrets not kept fresh by the
    watch must have been read since then (a drift check or a requested reconcile)."""
    view = await _view_for(namespace, spec, runtime, fresh_after)
    username = password = ""
    if spec.callback_credentials_secret:
        username, password = await runtime.secrets.callback_credentials(
            namespace, spec.callback_credentials_secret, fresh_after
        )
    desired = Callback(spec.account_name, spec.service_name, spec.url, username, password)
    return desired, view


async def resolve_account(
    namespace: str, spec: CallbackSpec, runtime: Runtime, fresh_after: float | None = None
) -> CallbackSpec:
    """The spec with the account of its ``accountRef`` filled in, if this namespace may
    use that account; the inline form as it is."""
    if spec.account_ref is None:
        return spec
    account = runtime.account(spec.account_ref)
    if account is None:
        raise AccountNotFound(f"ThingSpaceAccount {spec.account_ref} not found")
    labels = (
        await runtime.namespaces.labels(namespace, fresh_after) if account.needs_labels else None
    )
    if not account.allows(namespace, labels):
        raise AccountNotAllowed(
            f"ThingSpaceAccount {account.name} does not allow namespace {namespace} (see its "
            "spec.namespaces and spec.namespaceSelector); no ThingSpace call is made"
        )
    return replace(spec, account_name=account.account_name)


def check_secrets_allowed(spec: CallbackSpec, config: OperatorConfig) -> None:
    """Without Secret access in callbacks' namespaces, only the accountRef form without
    callback credentials can work: say so instead of failing on a forbidden read."""
    if config.namespaced_secrets:
        return
    if spec.account_ref is None or spec.callback_credentials_secret is not None:
        raise AccountRequired(
            "this operator reads no Secret outside its own namespace "
            "(credentials.namespacedSecrets=false): use spec.accountRef, without "
            "callbackCredentialsSecretRef"
        )


def credentials_secret(namespace: str, spec: CallbackSpec, runtime: Runtime) -> str:
    """``namespace/name`` of the Secret whose app key and UWS login the (resolved) spec
    uses: its account's, or its own."""
    account = runtime.account(spec.account_ref) if spec.account_ref else None
    if account is not None:
        return account_secret(account, runtime)
    return f"{namespace}/{spec.credentials_secret}"


def account_secret(account: AccountSpec, runtime: Runtime) -> str:
    """``namespace/name`` of a ThingSpaceAccount's credentials Secret."""
    return f"{account.secret_namespace or runtime.own_namespace}/{account.secret_name}"


class AccountRequired(Exception):
    """The callback needs a Secret in its namespace, which this operator may not read."""


class AccountNotFound(CredentialsNotFound):
    """The ThingSpaceAccount of ``accountRef`` does not exist (or its spec is invalid)."""


class AccountNotAllowed(Exception):
    """The referenced ThingSpaceAccount is not shared with the callback's namespace."""


async def _view_for(
    namespace: str, spec: CallbackSpec, runtime: Runtime, fresh_after: float | None = None
) -> AccountView:
    account = runtime.account(spec.account_ref) if spec.account_ref else None
    if account is None:
        credentials = await runtime.secrets.app_credentials(
            namespace, spec.credentials_secret, fresh_after
        )
        return runtime.views.view(runtime.clients.client_for(credentials), spec.account_name)
    return await account_view(account, runtime, fresh_after)


async def account_view(
    account: AccountSpec, runtime: Runtime, fresh_after: float | None = None
) -> AccountView:
    """The shared view of a ThingSpaceAccount, with its credentials and call budget."""
    credentials = await runtime.secrets.app_credentials(
        account.secret_namespace or runtime.own_namespace, account.secret_name, fresh_after
    )
    runtime.views.set_budget(
        account.account_name, account.max_concurrent_calls, account.max_calls_per_second
    )
    return runtime.views.view(runtime.clients.client_for(credentials), account.account_name)


async def _sync_locked(
    spec: CallbackSpec,
    desired: Callback,
    view: AccountView,
    runtime: Runtime,
    trigger: Trigger,
    secret: str = "",
) -> Outcome:
    not_before = trigger.not_before
    if not_before is None:
        not_before = view.now() - runtime.config.observation_max_age_seconds
    live = (await view.observe(not_before)).get(spec.service_name)
    plan = plan_sync(desired, live, spec.management_policy)
    if spec.management_policy is ManagementPolicy.OBSERVE_ONLY:
        return _observed_only(desired, live, plan.drift)
    if plan.action is Action.NOTHING:
        return _in_sync(desired, live)
    if trigger.check_only:
        return _correction_needed(desired, plan.drift)
    try:
        await register_over(view, desired, live)
    except ThingSpaceError as exc:
        return failure_outcome(exc, observed_live=(live,), secret=secret)
    # Ready rests on ThingSpace's 200: a list per write would double the account's calls,
    # and the next drift check compares the registration with the live list anyway.
    return _registered(desired, live, plan.drift, trigger.drift_check)


async def release(
    namespace: str,
    spec_body: Mapping[str, Any],
    owned_urls: set[str],
    runtime: Runtime,
    ownership: Callable[[], Ownership] = lambda: Ownership.SOLE,
    recorded_account: str | None = None,
) -> Outcome:
    """Deregister on delete, but only what this resource owns. ``synced`` True: done.
    ``ownership`` is asked again under the registration's lock: a resource that declared
    the same registration meanwhile may have found it in sync and taken it over.
    ``recorded_account``: the account its status says it registered in."""
    secret = ""
    try:
        spec = CallbackSpec.parse(spec_body)
        try:
            check_secrets_allowed(spec, runtime.config)
        except AccountRequired as exc:  # its Secret cannot be read: let go, touch nothing
            return _let_go(exc)
        decided = plan_delete(
            spec.deletion_policy,
            spec.management_policy,
            spec.suspend,
            owned_urls,
            None,
            ownership(),
        )
        if decided.reason is not DeleteReason.ALREADY_GONE:  # no need to look at ThingSpace
            return _released(spec, decided.reason)
        if spec.account_ref is not None:
            try:
                spec = await resolve_account(namespace, spec, runtime)
            except (AccountNotFound, AccountNotAllowed) as exc:
                return _let_go(exc)  # a namespace's deletion must not hang on an account
            if recorded_account and recorded_account != spec.account_name:
                # Its ThingSpaceAccount now names another billing account: what is
                # registered there was never this resource's, and its own is out of reach.
                return _let_go(
                    InvalidSpec(
                        f"it registered in account {recorded_account}, but its accountRef now "
                        f"names account {spec.account_name}; the registration in "
                        f"{recorded_account} stays (deregister it there)"
                    )
                )
        secret = credentials_secret(namespace, spec, runtime)
        view = await _view_for(namespace, spec, runtime)
        async with runtime.lock_for(spec.account_name, spec.service_name):
            live = (await view.observe(view.now())).get(spec.service_name)
            plan = plan_delete(
                spec.deletion_policy,
                spec.management_policy,
                spec.suspend,
                owned_urls,
                live,
                ownership(),
            )
            if plan.action is Action.DEREGISTER:
                await deregister(view, spec.service_name)
            return _released(spec, plan.reason, live)
    except Exception as exc:
        return failure_outcome(exc, secret=secret)


def _let_go(reason: Exception) -> Outcome:
    """Deleted without a ThingSpace call: whatever is registered stays, and the Event says
    why."""
    skipped = Announcement(
        "Warning", "DeregistrationSkipped", f"Left any registration in ThingSpace: {reason}"
    )
    return Outcome(
        synced=Condition(SYNCED, "True", Reason.RECONCILE_SUCCESS, skipped.message),
        event=skipped,
    )


async def register_over(view: AccountView, desired: Callback, live: Callback | None) -> None:
    """Register ``desired`` in place of ``live``. Whether ThingSpace replaces a registration
    on a second POST is not documented: where it refuses one that exists, deregister it
    and register again (under the registration's lock, held by the caller). Any other
    refusal leaves the live registration as it is."""
    try:
        await view.register(desired)
    except RequestRejected as exc:
        if live is None or not _already_registered(exc):
            raise
        log.info(
            "ThingSpace keeps %s callbacks of account %s until they are deregistered; "
            "replacing them",
            desired.service_name,
            desired.account_name,
        )
        await deregister(view, desired.service_name)
        await view.register(desired)


def _already_registered(refusal: RequestRejected) -> bool:
    return refusal.status == 409 or any(
        word in refusal.error_code.lower() for word in ("already", "duplicate", "exist")
    )


async def deregister(view: AccountView, service: str) -> None:
    try:
        await view.deregister(service)
    except RequestRejected:
        # Gone meanwhile (deregistering an absent service is a 400): that is success.
        if service in await view.observe(view.now()):
            raise


# --- outcomes --------------------------------------------------------------------------


def _where(callback: Callback) -> str:
    return f"{callback.service_name} callbacks of account {callback.account_name}"


def _in_sync(desired: Callback, live: Callback | None) -> Outcome:
    return Outcome(
        synced=Condition(SYNCED, "True", Reason.RECONCILE_SUCCESS, IN_SYNC_MESSAGE),
        ready=Condition(
            READY,
            "True",
            Reason.REGISTERED,
            f"ThingSpace delivers {_where(desired)} to {display_url(desired.url)}",
        ),
        observed=True,
        live=live,
    )


def _registered(
    desired: Callback,
    previous: Callback | None,
    drift: Drift,
    drift_check: bool,
) -> Outcome:
    where = f"{_where(desired)} at {display_url(desired.url)}"
    if drift_check:
        event = Announcement("Normal", "DriftCorrected", f"Re-registered {where} ({drift})")
    elif previous is not None and previous.url != desired.url:
        event = Announcement(
            "Normal", "Registered", f"Registered {where}, replacing {display_url(previous.url)}"
        )
    else:
        event = Announcement("Normal", "Registered", f"Registered {where}")
    return replace(_in_sync(desired, desired), event=event)


def _correction_needed(desired: Callback, drift: Drift) -> Outcome:
    message = f"{_where(desired)}: {drift}"
    return Outcome(
        synced=Condition(SYNCED, "False", Reason.DRIFTED, message), correction_needed=True
    )


def _observed_only(desired: Callback, live: Callback | None, drift: Drift) -> Outcome:
    synced = Condition(
        SYNCED, "True", Reason.OBSERVE_ONLY, "managementPolicy is ObserveOnly: never writes"
    )
    if drift is Drift.NONE:
        ready = Condition(READY, "True", Reason.REGISTERED, "Live registration matches the spec")
        event = None
    else:
        reason = Reason.PENDING if live is None else Reason.DRIFTED
        ready = Condition(READY, "False", reason, f"Live registration: {drift}")
        event = Announcement(
            "Warning", reason, f"{_where(desired)}: {drift} (observe only)", news_of=READY
        )
    return Outcome(synced=synced, ready=ready, observed=True, live=live, event=event)


def _conflict(spec: CallbackSpec, rival: Claim) -> Outcome:
    message = (
        f"{spec.service_name} callbacks of account {spec.account_name} are declared by "
        f"{rival.ref}, which is older and owns the registration; this resource makes no "
        "ThingSpace calls until that one is deleted"
    )
    return Outcome(
        synced=Condition(SYNCED, "False", Reason.CONFLICT, message),
        ready=Condition(READY, "False", Reason.CONFLICT, message),
        event=Announcement("Warning", Reason.CONFLICT, message, news_of=SYNCED),
    )


def _suspended() -> Outcome:
    message = "spec.suspend is true: no ThingSpace calls until it is false"
    return Outcome(
        synced=Condition(SYNCED, "False", Reason.SUSPENDED, message),
        ready=Condition(READY, "Unknown", Reason.SUSPENDED, message),
    )


def _released(spec: CallbackSpec, reason: DeleteReason, live: Callback | None = None) -> Outcome:
    where = f"{spec.service_name} callbacks of account {spec.account_name}"
    if reason is DeleteReason.OWNED:
        event = Announcement("Normal", "Deregistered", f"Deregistered {where}")
    elif reason is DeleteReason.ALREADY_GONE:
        event = Announcement("Normal", "Deregistered", f"{where}: {reason}")
    elif reason in (DeleteReason.NOT_OWNER, DeleteReason.HANDOVER):
        event = Announcement(
            "Normal", "DeregistrationSkipped", f"Left {where} registered: {reason}"
        )
    elif reason is DeleteReason.NOT_OURS:
        event = Announcement(
            "Warning",
            "DeregistrationSkipped",
            f"Left {where} registered: {reason} ({display_url(live.url) if live else ''})",
        )
    else:
        event = Announcement("Normal", "Orphaned", f"Left {where} registered: {reason}")
    return Outcome(
        synced=Condition(SYNCED, "True", Reason.RECONCILE_SUCCESS, event.message),
        event=event,
    )


def failure_outcome(
    exc: BaseException, observed_live: tuple[Callback | None, ...] = (), secret: str = ""
) -> Outcome:
    """Map any failure to its condition reason. The one place that knows this mapping.
    ``secret``: ``namespace/name`` of the credentials Secret in use, if known."""
    in_secret = f"Secret {secret}" if secret else "the credentials Secret"
    match exc:
        case InvalidSpec():
            return _failure(Reason.INVALID_SPEC, str(exc), observed_live=observed_live)
        case CredentialsNotFound():
            return _failure(Reason.CREDENTIALS_NOT_FOUND, str(exc), observed_live=observed_live)
        case CredentialsInvalid():
            return _failure(Reason.CREDENTIALS_INVALID, str(exc), observed_live=observed_live)
        case AccountRequired():
            return _failure(Reason.ACCOUNT_REQUIRED, str(exc), observed_live=observed_live)
        case AccountNotAllowed():
            return _failure(Reason.ACCOUNT_NOT_ALLOWED, str(exc), observed_live=observed_live)
        case AuthenticationFailed(stage="oauth"):
            message = (
                f"{exc}. Fix appKey/appSecret in {in_secret}; the operator makes "
                "no further attempt with these values"
            )
            return _failure(Reason.AUTHENTICATION_FAILED, message, observed_live=observed_live)
        case AuthenticationFailed():
            message = (
                f"{exc}. Fix username/password in {in_secret}; the operator will "
                "not log in again with these values (five failed logins lock the user)"
            )
            return _failure(Reason.AUTHENTICATION_FAILED, message, observed_live=observed_live)
        case RequestRejected():
            return _failure(
                Reason.REJECTED,
                f"ThingSpace rejected the request: {exc}",
                observed_live=observed_live,
            )
        case RateLimited():
            return _failure(
                Reason.UNAVAILABLE,
                str(exc),
                transient=True,
                retry_after=exc.retry_after,
                observed_live=observed_live,
            )
        case Unavailable():
            return _failure(
                Reason.UNAVAILABLE, str(exc), transient=True, observed_live=observed_live
            )
    # A bug or an unexpected API error: say so without echoing anything that might be secret.
    return _failure(
        Reason.UNAVAILABLE,
        f"Unexpected error: {type(exc).__name__}",
        transient=True,
        observed_live=observed_live,
    )


def _failure(
    reason: Reason,
    message: str,
    *,
    transient: bool = False,
    retry_after: float | None = None,
    observed_live: tuple[Callback | None, ...] = (),
) -> Outcome:
    """A failed reconcile. ``observed_live`` holds the live registration if it was seen."""
    observed = bool(observed_live)
    return Outcome(
        synced=Condition(SYNCED, "False", reason, message),
        # Seen and not as declared: not ready. Not seen: Ready keeps its last known value.
        ready=Condition(READY, "False", reason, message) if observed else None,
        observed=observed,
        live=observed_live[0] if observed else None,
        event=Announcement("Warning", reason, message, news_of=SYNCED),
        transient=transient,
        retry_after=retry_after,
    )
