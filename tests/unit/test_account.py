"""ThingSpaceAccount specs: parsing, and which namespaces may use an account."""

from typing import Any

import pytest

from thingspace_operator.account import AccountSpec, CallbackPolicy, LabelSelector
from thingspace_operator.model import CallbackSpec, InvalidSpec

SPEC: dict[str, Any] = {
    "accountName": "0000123456-00001",
    "credentialsSecretRef": {"name": "thingspace-credentials"},
}


def account(**spec: Any) -> AccountSpec:
    return AccountSpec.parse("platform", {**SPEC, **spec})


def test_an_account_with_defaults() -> None:
    parsed = account()
    assert (parsed.account_name, parsed.secret_name, parsed.secret_namespace) == (
        "0000123456-00001",
        "thingspace-credentials",
        None,
    )
    assert parsed.policy is CallbackPolicy.ADDITIVE
    assert (parsed.max_calls_per_second, parsed.max_concurrent_calls) == (None, None)


def test_an_account_with_everything() -> None:
    parsed = account(
        credentialsSecretRef={"name": "creds", "namespace": "platform"},
        namespaces=["team-a"],
        namespaceSelector={"matchLabels": {"tier": "iot"}},
        callbackPolicy="Authoritative",
        maxCallsPerSecond=2.5,
        maxConcurrentCalls=2,
    )
    assert parsed.secret_namespace == "platform"
    assert parsed.namespaces == frozenset({"team-a"})
    assert parsed.policy is CallbackPolicy.AUTHORITATIVE
    assert (parsed.max_calls_per_second, parsed.max_concurrent_calls) == (2.5, 2)


@pytest.mark.parametrize(
    "spec",
    [
        {"accountName": "not an account"},
        {"credentialsSecretRef": {}},
        {"credentialsSecretRef": "creds"},
        {"callbackPolicy": "Exclusive"},
        {"namespaceSelector": {"matchLabels": ["a"]}},
    ],
)
def test_a_spec_past_the_schema_becomes_invalid_spec(spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        account(**spec)


@pytest.mark.parametrize(
    ("spec", "namespace", "labels", "allowed"),
    [
        ({}, "team-a", {"tier": "iot"}, False),  # shared with nobody unless said so
        ({"namespaces": ["team-a"]}, "team-a", None, True),
        ({"namespaces": ["team-a"]}, "team-b", {}, False),
        ({"namespaceSelector": {}}, "anything", {}, True),  # {} selects every namespace
        ({"namespaceSelector": {"matchLabels": {"tier": "iot"}}}, "t", {"tier": "iot"}, True),
        ({"namespaceSelector": {"matchLabels": {"tier": "iot"}}}, "t", {"tier": "web"}, False),
        ({"namespaceSelector": {"matchLabels": {"tier": "iot"}}}, "t", None, False),  # unknown
    ],
)
def test_who_may_use_an_account(
    spec: dict[str, Any], namespace: str, labels: dict[str, str] | None, allowed: bool
) -> None:
    assert account(**spec).allows(namespace, labels) is allowed


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "tier", "operator": "In", "values": ["iot", "edge"]}, {"tier": "edge"}, True),
        ({"key": "tier", "operator": "In", "values": ["iot"]}, {}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {"tier": "iot"}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {}, True),
        ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
        ({"key": "tier", "operator": "Exists"}, {}, False),
        ({"key": "tier", "operator": "DoesNotExist"}, {}, True),
        ({"key": "tier", "operator": "Gt", "values": ["1"]}, {"tier": "2"}, False),
    ],
)
def test_label_selector_expressions(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert LabelSelector.parse({"matchExpressions": [expression]}).matches(labels) is matches


def test_a_callback_names_its_account_one_way_or_the_other() -> None:
    by_ref = CallbackSpec.parse(
        {"accountRef": {"name": "platform"}, "serviceName": "QoS", "url": "https://l.example/q"}
    )
    assert (by_ref.account_ref, by_ref.account_name, by_ref.credentials_secret) == (
        "platform",
        "",
        "",
    )
    with pytest.raises(InvalidSpec, match="one form or the other"):
        CallbackSpec.parse(
            {
                "accountRef": {"name": "platform"},
                "accountName": "0000123456-00001",
                "serviceName": "QoS",
                "url": "https://l.example/q",
            }
        )
