"""The CRD: names and columns per the contract, a structural schema with descriptions, and
every CEL rule evaluated. The emulated API server enforces none of this, so it is tested
here against the schema itself (jsonschema) and a CEL interpreter."""

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pytest
import yaml

from tests.harness.kube import load_crd
from thingspace_operator.thingspace.services import ACCOUNT_NAME_PATTERN, CALLBACK_SERVICE_NAMES

CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = {
    "apiVersion": "thingspace.io/v1alpha1",
    "kind": "ThingSpaceCallback",
    "metadata": {"name": "qos"},
    "spec": {
        "accountName": "0000123456-00001",
        "serviceName": "QoS",
        "url": "https://listener.example.com/qos",
        "credentialsSecretRef": {"name": "thingspace-credentials"},
    },
}


def test_names_scope_and_version_follow_the_contract() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "thingspacecallbacks.thingspace.io"
    assert (spec["group"], spec["scope"]) == ("thingspace.io", "Namespaced")
    assert spec["names"] == {
        "kind": "ThingSpaceCallback",
        "listKind": "ThingSpaceCallbackList",
        "plural": "thingspacecallbacks",
        "singular": "thingspacecallback",
        "shortNames": ["tscb"],
        "categories": ["thingspace"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, True)
    ]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    visible = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert visible == ["Account", "Service", "URL", "Ready", "Synced", "Last Sync", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Last Sync"]["type"] == "date"


def test_enums_and_patterns_come_from_the_shared_facts() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["serviceName"]["enum"] == list(CALLBACK_SERVICE_NAMES)
    assert spec["accountName"]["pattern"] == ACCOUNT_NAME_PATTERN
    assert spec["deletionPolicy"]["enum"] == ["Delete", "Orphan"]
    assert spec["managementPolicy"]["enum"] == ["Manage", "ObserveOnly"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_structural_schema_with_a_description_everywhere() -> None:
    for path, node in walk(SCHEMA):
        assert node.get("type"), f"{path or '<root>'} has no type"
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert node.get("additionalProperties") is not True, path
        if path != ".metadata":
            assert node.get("description", "").strip(), f"{path or '<root>'} has no description"


def validate(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, SCHEMA, cls=jsonschema.Draft7Validator)


def test_every_example_is_valid() -> None:
    callbacks = [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "ThingSpaceCallback"
    ]
    assert len(callbacks) >= 5
    for doc in [GOOD, *callbacks]:
        validate(doc)


def spec_with(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            obj["spec"].pop(key)
        else:
            obj["spec"][key] = value
    return obj


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"accountName": None}, "'accountName' is a required property"),
        ({"serviceName": None}, "'serviceName' is a required property"),
        ({"url": None}, "'url' is a required property"),
        ({"credentialsSecretRef": None}, "'credentialsSecretRef' is a required property"),
        ({"accountName": "12 34"}, "does not match"),
        ({"accountName": "-1"}, "does not match"),
        ({"accountName": "1" * 65}, "is too long"),
        ({"serviceName": "Carrier"}, "is not one of"),
        ({"url": "ftp://listener.example.com"}, "does not match"),
        ({"url": "https://"}, "does not match"),
        ({"url": "not a url"}, "does not match"),
        ({"url": "https://host/with space"}, "does not match"),
        ({"deletionPolicy": "Keep"}, "is not one of"),
        ({"managementPolicy": "Read"}, "is not one of"),
        ({"suspend": "yes"}, "is not of type 'boolean'"),
        ({"credentialsSecretRef": {"name": "Upper"}}, "does not match"),
        ({"credentialsSecretRef": {}}, "'name' is a required property"),
        ({"callbackCredentialsSecretRef": {"name": ""}}, "does not match"),
    ],
)
def test_bad_objects_are_rejected_for_the_right_reason(
    changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(jsonschema.ValidationError, match=complaint):
        validate(spec_with(**changes))


def test_status_shape_is_accepted() -> None:
    obj = copy.deepcopy(GOOD)
    obj["status"] = {
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Registered",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 2,
            }
        ],
        "registration": {"url": "https://x", "hasCallbackCredentials": False},
        "lastSyncTime": "2026-01-01T00:00:00Z",
        "lastHandledReconcileAt": "now",
    }
    validate(obj)
    obj["status"]["conditions"][0]["status"] = "Maybe"
    with pytest.raises(jsonschema.ValidationError, match="is not one of"):
        validate(obj)


def cel_rules() -> list[tuple[str, str, str]]:
    return [
        (path, rule["rule"], rule["message"])
        for path, node in walk(SCHEMA)
        for rule in node.get("x-kubernetes-validations", [])
    ]


def value_at(obj: dict[str, Any], path: str) -> Any:
    for key in path.strip(".").split("."):
        obj = obj[key]
    return obj


def test_every_cel_rule_is_known_and_tested() -> None:
    assert {path for path, _, _ in cel_rules()} == {".spec.accountName", ".spec.serviceName"}


@pytest.mark.parametrize(("path", "rule", "message"), cel_rules())
def test_cel_immutability_rules(path: str, rule: str, message: str) -> None:
    old = GOOD
    changed = spec_with(
        **{path.rsplit(".", 1)[1]: "CarrierService" if "service" in path else "0000999999-00001"}
    )
    unchanged = {"self": value_at(old, path), "oldSelf": value_at(old, path)}
    assert cel.evaluate(rule, unchanged) is True
    assert (
        cel.evaluate(rule, {"self": value_at(changed, path), "oldSelf": value_at(old, path)})
        is False
    )
    assert "immutable" in message
