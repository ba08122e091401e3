"""The real API server enforces the CRD: every invalid spec of the unit suite's table is
refused by `kubectl apply` with the expected message, CEL keeps accountName and
serviceName immutable, and every example in examples/ is accepted."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Release, apply, remove_test_objects, unique
from tests.e2e.controlplane import Cluster
from tests.unit.test_crd import ABSENT, BAD_VALUES, EXAMPLES, GOOD, edited
from thingspace_operator.model import CallbackSpec, InvalidSpec

#: What the API server says for each kind of schema violation.
MESSAGES = {
    "required": "Required value",
    "pattern": "should match",
    "enum": "Unsupported value",
    "maxLength": "Too long",
    "type": "must be of type",
}
SPEC_CASES = [case for case in BAD_VALUES if str(case.values[0]).startswith("spec")]


@pytest.fixture(scope="module")
def namespace(plane: Cluster) -> Iterator[str]:
    """A namespace, with the CRD installed from the chart if no earlier test did."""
    release = Release(plane, unique("crd-system"), name=unique("tso"))
    release.install("--set", "secretWatch.enabled=false")
    name = unique("crd")
    plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        remove_test_objects(plane, [name], release.namespace, operator_running=False)
        release.uninstall()


def manifest(namespace: str, **edits: Any) -> dict[str, Any]:
    obj = edited(GOOD, edits)
    obj.pop("status")
    obj["metadata"] = {"name": unique("cb"), "namespace": namespace}
    return obj


def test_enough_cases_are_checked() -> None:
    assert len(SPEC_CASES) >= 15


@pytest.mark.parametrize(("field", "value", "reason"), SPEC_CASES)
def test_invalid_spec_is_rejected_with_its_reason(
    plane: Cluster, namespace: str, field: str, value: Any, reason: str
) -> None:
    done = apply(plane, manifest(namespace, **{field: value}), check=False)
    assert done.returncode != 0, f"accepted: {field}={value!r}"
    kind = "required" if value is ABSENT else reason.split(": ", 1)[1]
    assert MESSAGES[kind] in done.stderr, done.stderr
    assert field in done.stderr, done.stderr  # the server names the field


@pytest.mark.parametrize(
    ("field", "value"),
    [("spec.accountName", "0000999999-00001"), ("spec.serviceName", "CarrierService")],
)
def test_identity_is_immutable(plane: Cluster, namespace: str, field: str, value: str) -> None:
    obj = manifest(namespace)
    apply(plane, obj)
    done = apply(plane, edited(obj, {field: value}), check=False)
    assert done.returncode != 0
    assert f"{field.split('.')[-1]} is immutable" in done.stderr, done.stderr


def test_every_example_is_accepted(plane: Cluster, namespace: str) -> None:
    documents = [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert len(documents) >= 5
    done = plane.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "-f", "-",
        input=yaml.safe_dump_all(documents),
    )  # fmt: skip
    assert done.stdout.count("(server dry run)") == len(documents)


def test_the_platform_example_is_accepted(plane: Cluster) -> None:
    # Its namespaces must exist for a server-side dry run of what lives in them.
    example = EXAMPLES / "platform" / "shared-account.yaml"
    documents = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    for name in ("thingspace-operator", "team-iot", "team-telemetry"):
        plane.kubectl("create", "namespace", name, check=False)
    done = plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents)
    )
    assert done.stdout.count("(server dry run)") == len(documents)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accountRef": {"name": "fleet"}}, "either accountRef, or accountName"),
        ({"accountName": None, "credentialsSecretRef": None}, "either accountRef, or accountName"),
    ],
)
def test_an_account_is_named_one_way_only(
    plane: Cluster, namespace: str, change: dict[str, Any], message: str
) -> None:
    obj = manifest(namespace)
    obj["spec"].update(change)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    done = apply(plane, obj, check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_moving_to_an_account_ref_is_allowed_and_never_back(plane: Cluster, namespace: str) -> None:
    obj = manifest(namespace)
    apply(plane, obj)
    by_ref = {
        k: v for k, v in obj["spec"].items() if k not in ("accountName", "credentialsSecretRef")
    }
    moved = {**obj, "spec": {**by_ref, "accountRef": {"name": "fleet"}}}
    plane.kubectl("-n", namespace, "replace", "-f", "-", input=yaml.safe_dump(moved))
    renamed = {**obj, "spec": {**by_ref, "accountRef": {"name": "other"}}}
    done = plane.kubectl(
        "-n", namespace, "replace", "-f", "-", input=yaml.safe_dump(renamed), check=False
    )
    assert "accountRef is immutable" in done.stderr, done.stderr
    done = plane.kubectl(
        "-n", namespace, "replace", "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert "accountRef cannot be removed" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec.url", "https://listener.example.com/qos\u00a0"),  # a copied non-breaking space
        ("spec.url", "https://listener.example.com/qos\u2028"),
        ("spec.url", "https://listener.example.com/qos\x0b"),
        ("spec.url", "https://listener.example.com/qos\n"),  # a YAML block scalar's newline
        ("spec.url", "https://listener.example.com/q os"),
        ("spec.accountName", "0000123456-00001\n"),
    ],
)
def test_the_api_server_and_the_operator_agree_on_what_is_valid(
    plane: Cluster, namespace: str, field: str, value: str
) -> None:
    """Go's regular expressions (the API server's) and Python's (the operator's, the
    GitOps tools') read \\s and $ differently: what kubectl accepts, the operator must be
    able to act on, and what it refuses, the operator must refuse too."""
    obj = manifest(namespace, **{field: value})
    done = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    accepted = done.returncode == 0
    try:
        CallbackSpec.parse(obj["spec"])
        parsed = True
    except InvalidSpec:
        parsed = False
    assert accepted == parsed, f"API server accepts: {accepted}, operator parses: {parsed}"
