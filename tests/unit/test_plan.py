"""Table tests of the pure planning functions."""

import pytest

from thingspace_operator.model import DeletionPolicy, ManagementPolicy
from thingspace_operator.plan import (
    Action,
    DeleteReason,
    Drift,
    drift_between,
    plan_delete,
    plan_sync,
)
from thingspace_operator.thingspace.models import Callback

A, S = "0000123456-00001", "QoS"
DESIRED = Callback(A, S, "https://a.example/qos", "user", "pw")
MANAGE, OBSERVE = ManagementPolicy.MANAGE, ManagementPolicy.OBSERVE_ONLY


@pytest.mark.parametrize(
    ("live", "drift"),
    [
        (None, Drift.MISSING),
        (Callback(A, S, "https://a.example/qos", "user", "pw"), Drift.NONE),
        (Callback(A, S, "https://b.example/qos", "user", "pw"), Drift.URL),
        (Callback(A, S, "https://a.example/qos", "other", "pw"), Drift.CREDENTIALS),
        (Callback(A, S, "https://a.example/qos", "user", "changed"), Drift.CREDENTIALS),
        (Callback(A, S, "https://a.example/qos"), Drift.CREDENTIALS),
        (Callback(A, S, "https://b.example/qos"), Drift.URL),  # URL reported first
    ],
)
def test_drift_between(live: Callback | None, drift: Drift) -> None:
    assert drift_between(DESIRED, live) is drift


def test_no_credentials_on_both_sides_is_in_sync() -> None:
    desired = Callback(A, S, "https://a.example/qos")
    assert drift_between(desired, Callback(A, S, "https://a.example/qos", "", "")) is Drift.NONE


@pytest.mark.parametrize(
    ("live", "policy", "action"),
    [
        (None, MANAGE, Action.REGISTER),
        (Callback(A, S, "https://b.example/qos", "user", "pw"), MANAGE, Action.REGISTER),
        (Callback(A, S, "https://a.example/qos", "user", "x"), MANAGE, Action.REGISTER),
        (DESIRED, MANAGE, Action.NOTHING),
        (None, OBSERVE, Action.NOTHING),
        (Callback(A, S, "https://b.example/qos"), OBSERVE, Action.NOTHING),
        (DESIRED, OBSERVE, Action.NOTHING),
    ],
)
def test_plan_sync(live: Callback | None, policy: ManagementPolicy, action: Action) -> None:
    plan = plan_sync(DESIRED, live, policy)
    assert plan.action is action
    assert plan.drift is drift_between(DESIRED, live)


OURS = Callback(A, S, "https://a.example/qos")
THEIRS = Callback(A, S, "https://someone-else.example/qos")
DELETE, ORPHAN = DeletionPolicy.DELETE, DeletionPolicy.ORPHAN


@pytest.mark.parametrize(
    ("deletion", "management", "suspended", "live", "action", "reason"),
    [
        (DELETE, MANAGE, False, OURS, Action.DEREGISTER, DeleteReason.OWNED),
        (DELETE, MANAGE, False, None, Action.NOTHING, DeleteReason.ALREADY_GONE),
        (DELETE, MANAGE, False, THEIRS, Action.NOTHING, DeleteReason.NOT_OURS),
        (ORPHAN, MANAGE, False, OURS, Action.NOTHING, DeleteReason.ORPHAN),
        (DELETE, OBSERVE, False, OURS, Action.NOTHING, DeleteReason.OBSERVE_ONLY),
        (DELETE, MANAGE, True, OURS, Action.NOTHING, DeleteReason.SUSPENDED),
        (ORPHAN, OBSERVE, True, THEIRS, Action.NOTHING, DeleteReason.ORPHAN),
    ],
)
def test_plan_delete(
    deletion: DeletionPolicy,
    management: ManagementPolicy,
    suspended: bool,
    live: Callback | None,
    action: Action,
    reason: DeleteReason,
) -> None:
    plan = plan_delete(deletion, management, suspended, {OURS.url}, live)
    assert (plan.action, plan.reason) == (action, reason)
