"""Condition bookkeeping: lastTransitionTime moves only when a status flips."""

import json

import kopf
import pytest

from thingspace_operator.handlers import HandledConfiguration, desired_status, owned_urls
from thingspace_operator.kube.status import (
    Condition,
    changed_fields,
    condition,
    merge_conditions,
    older_than,
)
from thingspace_operator.model import KOPF_ANNOTATION_PREFIX
from thingspace_operator.reconciler import failure_outcome
from thingspace_operator.thingspace.errors import Unavailable

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_new_condition_gets_transition_time_and_generation() -> None:
    merged = merge_conditions([], [Condition("Ready", "True", "Registered", "ok")], 3, T0)
    assert merged == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Registered",
            "message": "ok",
            "lastTransitionTime": T0,
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time_but_updates_reason_and_message() -> None:
    first = merge_conditions([], [Condition("Synced", "False", "Unavailable", "a")], 1, T0)
    second = merge_conditions(first, [Condition("Synced", "False", "Rejected", "b")], 2, T1)
    assert second[0]["lastTransitionTime"] == T0
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == (
        "Rejected",
        "b",
        2,
    )


def test_flip_moves_transition_time() -> None:
    first = merge_conditions([], [Condition("Ready", "False", "Pending", "")], 1, T0)
    second = merge_conditions(first, [Condition("Ready", "True", "Registered", "")], 1, T1)
    assert second[0]["lastTransitionTime"] == T1


def test_other_conditions_are_kept_in_order() -> None:
    start = merge_conditions(
        [],
        [Condition("Ready", "True", "Registered", ""), Condition("Synced", "True", "X", "")],
        1,
        T0,
    )
    updated = merge_conditions(start, [Condition("Synced", "False", "Unavailable", "")], 1, T1)
    assert [c["type"] for c in updated] == ["Ready", "Synced"]
    assert updated[0] == start[0]


def test_condition_lookup_and_changed_fields() -> None:
    status = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 1}
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Synced") == {}
    assert changed_fields(status, {"observedGeneration": 1, "lastSyncTime": T0}) == {
        "lastSyncTime": T0
    }


def test_handled_configuration_lives_in_status_and_reads_the_earlier_annotation() -> None:
    storage = HandledConfiguration()
    earlier = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    raw = {"metadata": {"name": "q", "annotations": {}}, "spec": {"url": "https://a"}}
    essence = storage.build(body=kopf.Body(raw))
    assert essence == earlier.build(body=kopf.Body(raw))
    annotated = {**raw, "metadata": {"name": "q", "annotations": {}}}
    patch = kopf.Patch()
    earlier.store(body=kopf.Body(annotated), patch=patch, essence=essence)
    annotated["metadata"]["annotations"] = dict(patch["metadata"]["annotations"])
    assert storage.fetch(body=kopf.Body(annotated)) == essence  # upgraded: no change seen
    assert storage.build(body=kopf.Body(annotated)) == essence  # its annotation is ignored

    patch = kopf.Patch()
    storage.store(body=kopf.Body(raw), patch=patch, essence=essence)
    assert set(patch) == {"status"}  # no metadata patch of its own
    stored = {**raw, "status": dict(patch["status"])}
    assert json.loads(stored["status"]["lastHandledConfiguration"]) == essence
    assert storage.fetch(body=kopf.Body(stored)) == essence


def test_a_failure_that_could_not_look_leaves_ready_only_for_the_spec_it_describes() -> None:
    """Ready keeps its value when a failure prevents looking at ThingSpace, but only for
    the generation it was about: after a spec change it is Unknown, not True for the
    old URL while observedGeneration says the new spec was handled."""
    failed = failure_outcome(Unavailable("ThingSpace list call failed with HTTP 503"))
    ready_of_1 = {
        "type": "Ready",
        "status": "True",
        "reason": "Registered",
        "message": "ThingSpace delivers QoS callbacks to https://old.example.com",
        "lastTransitionTime": "2026-11-28T00:00:00Z",
        "observedGeneration": 1,
    }
    same = desired_status(failed, {"conditions": [ready_of_1]}, 1)
    assert condition(same, "Ready")["status"] == "True"  # a drift check that could not look
    changed = desired_status(failed, {"conditions": [ready_of_1]}, 2)
    ready = condition(changed, "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "Unavailable")
    assert ready["observedGeneration"] == 2


@pytest.mark.parametrize(
    ("timestamp", "old"),
    [
        (None, True),
        ("", True),
        ("yesterday", True),
        ("2026-11-28T10:00:00.123456Z", True),
        ("2099-01-01T00:00:00Z", False),
        ("2099-01-01T00:00:00.5+02:00", False),
    ],
)
def test_any_rfc3339_last_sync_time_is_read_and_nothing_else_fails(
    timestamp: str | None, old: bool
) -> None:
    """A lastSyncTime written by someone else must not fail every reconcile."""
    assert older_than(timestamp, 3600) is old


@pytest.mark.parametrize(
    ("ready", "owned"),
    [
        ("True", {"https://spec.example/", "https://earlier-spec.example/"}),
        ("False", {"https://spec.example/"}),  # shown, never confirmed as its own
        ("Unknown", {"https://spec.example/"}),
    ],
)
def test_a_deletion_owns_the_spec_url_and_the_registration_last_confirmed(
    ready: str, owned: set[str]
) -> None:
    status = {
        "conditions": [{"type": "Ready", "status": ready, "reason": "Any"}],
        "registration": {"url": "https://earlier-spec.example/"},
    }
    assert owned_urls({"url": "https://spec.example/"}, status) == owned
