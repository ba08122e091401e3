"""Pure decisions: what to do about one registration, given what is declared and what is live.

No I/O here. Every branch is covered by the table tests in tests/unit/test_plan.py.
"""

import enum
from collections.abc import Collection
from dataclasses import dataclass

from .model import DeletionPolicy, ManagementPolicy
from .thingspace.models import Callback


class Drift(enum.StrEnum):
    """How the live registration differs from the declared one."""

    NONE = "in sync"
    MISSING = "not registered"
    URL = "URL differs"
    CREDENTIALS = "callback credentials differ"


class Action(enum.StrEnum):
    NOTHING = "nothing"
    REGISTER = "register"
    DEREGISTER = "deregister"


def drift_between(desired: Callback, live: Callback | None) -> Drift:
    if live is None:
        return Drift.MISSING
    if live.url != desired.url:
        return Drift.URL
    if (live.username, live.password) != (desired.username, desired.password):
        return Drift.CREDENTIALS
    return Drift.NONE


@dataclass(frozen=True)
class SyncPlan:
    action: Action
    drift: Drift


def plan_sync(desired: Callback, live: Callback | None, policy: ManagementPolicy) -> SyncPlan:
    """Register when the live registration is missing or differs, unless only observing."""
    drift = drift_between(desired, live)
    if drift is Drift.NONE or policy is ManagementPolicy.OBSERVE_ONLY:
        return SyncPlan(Action.NOTHING, drift)
    return SyncPlan(Action.REGISTER, drift)


class Ownership(enum.StrEnum):
    """This resource's claim on its (account, service) among all resources declaring it."""

    SOLE = "sole owner"
    HANDOVER = "owner, with another resource waiting to take over"
    NOT_OWNER = "another resource owns it"


class DeleteReason(enum.StrEnum):
    OWNED = "the live registration is the one this resource declared"
    NOT_OWNER = "another ThingSpaceCallback owns this registration"
    HANDOVER = "another ThingSpaceCallback takes the registration over"
    ORPHAN = "deletionPolicy is Orphan"
    OBSERVE_ONLY = "managementPolicy is ObserveOnly"
    SUSPENDED = "the resource is suspended"
    ALREADY_GONE = "the registration is already gone"
    NOT_OURS = "the live registration points to a URL this resource did not declare"


@dataclass(frozen=True)
class DeletePlan:
    action: Action
    reason: DeleteReason


def plan_delete(
    deletion: DeletionPolicy,
    management: ManagementPolicy,
    suspended: bool,
    owned_urls: Collection[str],
    live: Callback | None,
    ownership: Ownership = Ownership.SOLE,
) -> DeletePlan:
    """Deregister only what this resource owns; a registration changed by someone else stays."""
    if ownership is Ownership.NOT_OWNER:
        return DeletePlan(Action.NOTHING, DeleteReason.NOT_OWNER)
    if deletion is DeletionPolicy.ORPHAN:
        return DeletePlan(Action.NOTHING, DeleteReason.ORPHAN)
    if management is ManagementPolicy.OBSERVE_ONLY:
        return DeletePlan(Action.NOTHING, DeleteReason.OBSERVE_ONLY)
    if suspended:
        return DeletePlan(Action.NOTHING, DeleteReason.SUSPENDED)
    if ownership is Ownership.HANDOVER:
        return DeletePlan(Action.NOTHING, DeleteReason.HANDOVER)
    if live is None:
        return DeletePlan(Action.NOTHING, DeleteReason.ALREADY_GONE)
    if live.url not in owned_urls:
        return DeletePlan(Action.NOTHING, DeleteReason.NOT_OURS)
    return DeletePlan(Action.DEREGISTER, DeleteReason.OWNED)
