"""The ThingSpaceAccount CRD and the platform example: names and columns per the contract,
a valid Kubernetes object, and the example documents valid against their CRDs. The real
API server applies the example in tests/e2e/test_crd_enforced.py."""

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.crd_support import crd_schema

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "thingspaceaccounts.thingspace.io.yaml").read_text())
(VERSION,) = CRD["spec"]["versions"]
SCHEMAS = {
    "ThingSpaceAccount": VERSION["schema"]["openAPIV3Schema"],
    "ThingSpaceCallback": crd_schema(),
}
EXAMPLE = ROOT / "examples" / "platform" / "shared-account.yaml"


def test_names_and_scope_follow_the_contract() -> None:
    spec = CRD["spec"]
    assert (spec["group"], spec["scope"]) == ("thingspace.io", "Cluster")
    assert spec["names"]["plural"] == "thingspaceaccounts"
    assert spec["names"]["shortNames"] == ["tsa"]
    assert spec["names"]["categories"] == ["thingspace"]
    assert VERSION["name"] == "v1alpha1"
    assert VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Account", "Ready", "Managed", "Unmanaged", "Last List", "Age"]
    assert VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "callbackPolicy"
    ]["enum"] == ["Additive", "Authoritative"]


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(CRD, kubernetes_validate.latest_version(), strict=True)


def example_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]


@pytest.mark.parametrize(
    "doc", example_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_the_platform_example_is_valid(doc: dict[str, Any]) -> None:
    if doc["kind"] in SCHEMAS:
        jsonschema.Draft7Validator(SCHEMAS[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("callbackPolicy", "Exclusive"),
        ("maxCallsPerSecond", 0),
        ("maxConcurrentCalls", 0),
        ("credentialsSecretRef", {"namespace": "ops"}),
        ("namespaces", ["Team_A"]),
    ],
)
def test_bad_accounts_are_refused(field: str, value: Any) -> None:
    account = next(d for d in example_documents() if d["kind"] == "ThingSpaceAccount")
    account["spec"][field] = value
    assert not jsonschema.Draft7Validator(SCHEMAS["ThingSpaceAccount"]).is_valid(account)
