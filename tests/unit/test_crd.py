"""The CRD and the examples: names and columns per the contract, a structural schema with a
description everywhere, every CEL rule evaluated. The emulated API server enforces none of
this, so it is checked here: the CRD object against the Kubernetes API schema
(kubernetes-validate), resources against openAPIV3Schema (jsonschema, Draft 7), and the CEL
rules with a base-CEL interpreter (no Kubernetes extensions)."""

import copy
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.crd_support import CRD_PATH, crd_schema, load_crd
from thingspace_operator.kube.secrets import APP_CREDENTIAL_KEYS, CALLBACK_CREDENTIAL_KEYS
from thingspace_operator.model import URL_MAX_LENGTH, URL_RE
from thingspace_operator.simulator import DEMO_APPS, DEMO_USERS
from thingspace_operator.thingspace.services import (
    ACCOUNT_NAME_MAX_LENGTH,
    ACCOUNT_NAME_PATTERN,
    CALLBACK_CREDENTIAL_MAX_LENGTH,
    CALLBACK_SERVICE_NAMES,
)

CRD = load_crd()
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = crd_schema()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
KUBERNETES = kubernetes_validate.latest_version()
EXAMPLES = CRD_PATH.parents[1] / "examples"
ABSENT = object()  # an edit that removes the field
SPEC_REQUIRED = ("serviceName", "url")  # and the account, inline or as accountRef (CEL)

CONDITION = {"status": "True", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}
GOOD: dict[str, Any] = {
    "apiVersion": "thingspace.io/v1alpha1",
    "kind": "ThingSpaceCallback",
    "metadata": {"name": "qos-events"},
    "spec": {
        "accountName": "0000123456-00001",
        "serviceName": "QoS",
        "url": "https://listener.example.com/thingspace/qos",
        "credentialsSecretRef": {"name": "thingspace-credentials"},
        "callbackCredentialsSecretRef": {"name": "qos-listener-auth"},
    },
    "status": {
        "observedGeneration": 2,
        "conditions": [
            {**CONDITION, "type": "Ready", "reason": "Registered", "observedGeneration": 2},
            {**CONDITION, "type": "Synced", "reason": "ReconcileSuccess"},
        ],
        "registration": {
            "url": "https://listener.example.com/qos",
            "hasCallbackCredentials": False,
        },
        "lastSyncTime": "2026-01-01T00:00:00Z",
        "lastHandledReconcileAt": "2026-01-01T00:00:00Z",
    },
}


def edited(obj: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with each dotted path ("spec.url", "status.conditions.0.reason")
    set to its value, or removed for ``ABSENT``."""
    obj = copy.deepcopy(obj)
    for dotted, value in edits.items():
        *parents, last = [int(key) if key.isdigit() else key for key in dotted.split(".")]
        node: Any = obj
        for key in parents:
            node = node[key]
        if value is ABSENT:
            del node[last]
        else:
            node[last] = value
    return obj


def reasons(obj: dict[str, Any]) -> set[str]:
    """Why the schema rejects ``obj``: "spec.url: pattern", "spec: required url", ..."""
    found = set()
    for error in VALIDATOR.iter_errors(obj):
        what = str(error.validator)
        if what == "required":
            what += " " + ",".join(sorted(set(error.validator_value) - error.instance.keys()))
        found.add(f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {what}")
    return found


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (".spec.url", ".status.conditions[].type")."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from nodes(node[key], path + suffix)


# -- names, columns, shared facts ------------------------------------------------------


def test_names_scope_and_version_follow_the_contract() -> None:
    spec = CRD["spec"]
    assert (CRD["apiVersion"], CRD["kind"]) == (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
    )
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
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1alpha1", True, True)
    assert VERSION["subresources"] == {"status": {}}


def test_crd_is_a_valid_kubernetes_object() -> None:
    # strict: an unknown key anywhere (a typo such as "x-kubernetes-validation") fails.
    kubernetes_validate.validate(CRD, KUBERNETES, strict=True)


def test_printer_columns() -> None:
    condition = '.status.conditions[?(@.type=="{}")].{}'
    assert [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in VERSION["additionalPrinterColumns"]
    ] == [
        ("Account", "string", ".spec.accountName", 0),
        ("Service", "string", ".spec.serviceName", 0),
        ("URL", "string", ".spec.url", 0),
        ("Ready", "string", condition.format("Ready", "status"), 0),
        ("Synced", "string", condition.format("Synced", "status"), 0),
        ("Last Sync", "date", ".status.lastSyncTime", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Reason", "string", condition.format("Ready", "reason"), 1),
        ("Account Ref", "string", ".spec.accountRef.name", 1),
    ]


def test_schema_uses_the_shared_facts() -> None:
    spec = SCHEMA["properties"]["spec"]
    fields = spec["properties"]
    assert spec["required"] == list(SPEC_REQUIRED)
    assert fields["serviceName"]["enum"] == list(CALLBACK_SERVICE_NAMES)
    assert fields["serviceName"]["maxLength"] >= max(map(len, CALLBACK_SERVICE_NAMES))
    account = fields["accountName"]
    assert (account["pattern"], account["maxLength"]) == (
        ACCOUNT_NAME_PATTERN,
        ACCOUNT_NAME_MAX_LENGTH,
    )
    assert (fields["url"]["pattern"], fields["url"]["maxLength"]) == (
        URL_RE.pattern,
        URL_MAX_LENGTH,
    )
    assert fields["deletionPolicy"]["enum"] == ["Delete", "Orphan"]
    assert fields["managementPolicy"]["enum"] == ["Manage", "ObserveOnly"]
    assert {name: field["default"] for name, field in fields.items() if "default" in field} == {
        "deletionPolicy": "Delete",
        "managementPolicy": "Manage",
        "suspend": False,
    }
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == (
        "map",
        ["type"],
    )


# -- structural schema ------------------------------------------------------------------

FORBIDDEN_KEYWORDS = {
    # Not allowed in a structural schema, or would stop the API server pruning unknown fields.
    *("$ref", "$schema", "id", "definitions", "dependencies", "patternProperties"),
    *("additionalItems", "allOf", "anyOf", "oneOf", "not"),
    "x-kubernetes-preserve-unknown-fields",
}

#: rule -> (holds(node), a node that breaks it, so each check is shown able to fail)
STRUCTURAL_RULES: dict[str, tuple[Callable[[dict[str, Any]], bool], dict[str, Any]]] = {
    "has a type": (
        lambda node: "type" in node or node.get("x-kubernetes-int-or-string") is True,
        {"description": "untyped"},
    ),
    "uses no forbidden keyword": (
        lambda node: not FORBIDDEN_KEYWORDS & node.keys(),
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    ),
    "never allows unknown fields": (
        lambda node: (
            node.get("additionalProperties", False) is False
            or (isinstance(node["additionalProperties"], dict) and "properties" not in node)
        ),
        {"type": "object", "additionalProperties": True},
    ),
    "has properties only as an object": (
        lambda node: "properties" not in node or node.get("type") == "object",
        {"type": "string", "properties": {}},
    ),
    "has items if and only if an array": (
        lambda node: (node.get("type") == "array") == isinstance(node.get("items"), dict),
        {"type": "array"},
    ),
    "requires its list-map keys": (
        lambda node: (
            node.get("x-kubernetes-list-type") != "map"
            or set(node["x-kubernetes-list-map-keys"]) <= set(node["items"].get("required", ()))
        ),
        {
            "type": "array",
            "items": {"type": "object"},
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
    "has a default its own schema accepts": (
        lambda node: (
            "default" not in node or jsonschema.Draft7Validator(node).is_valid(node["default"])
        ),
        {"type": "boolean", "default": "no"},
    ),
}


@pytest.mark.parametrize("rule", STRUCTURAL_RULES)
def test_structural_schema(rule: str) -> None:
    holds, counterexample = STRUCTURAL_RULES[rule]
    assert not holds(counterexample)
    assert [path or "<root>" for path, node in nodes(SCHEMA) if not holds(node)] == []


def test_schema_is_closed_and_valid_json_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert "preserve-unknown-fields" not in CRD_PATH.read_text()
    # The API server forbids anything but the type on metadata (even a description).
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


def test_every_property_has_a_useful_description() -> None:
    # At least 20 characters: enough to say what the field means; `kubectl explain` shows it.
    undescribed = [
        path or "<root>"
        for path, node in nodes(SCHEMA)
        if path != ".metadata" and len(node.get("description", "").strip()) < 20
    ]
    assert undescribed == []


# -- objects the schema accepts and rejects ----------------------------------------------


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


EXAMPLE_DOCUMENTS = example_documents()
GOOD_EDITS: dict[str, dict[str, Any]] = {
    "as stored": {},
    "new, no status": {"status": ABSENT},
    "http, allowed port, query": {"spec.url": "http://listener.example.com:9001/cb?tenant=a"},
    "user:password in url": {"spec.url": "https://user:pw@listener.example.com/"},
    "letters in account": {"spec.accountName": "TestAccount-2"},
    "longest account": {"spec.accountName": "1" * 64},
    "no callback credentials": {"spec.callbackCredentialsSecretRef": ABSENT},
    "dotted secret name": {"spec.credentialsSecretRef.name": "ts.credentials-2"},
    "every option": {
        "spec.deletionPolicy": "Orphan",
        "spec.managementPolicy": "ObserveOnly",
        "spec.suspend": True,
    },
    "nothing registered": {"status.registration": ABSENT},
}


@pytest.mark.parametrize(
    "obj",
    [
        *(pytest.param(edited(GOOD, edits), id=name) for name, edits in GOOD_EDITS.items()),
        *(
            pytest.param(doc, id=f"{file}:{doc['metadata']['name']}")
            for file, doc in EXAMPLE_DOCUMENTS
            if doc["kind"] == "ThingSpaceCallback"
        ),
    ],
)
def test_valid_objects_are_accepted(obj: dict[str, Any]) -> None:
    assert reasons(obj) == set()


def bad(field: str, value: Any, why: str = "required") -> Any:
    """A case: ``field`` (dotted) set to ``value``, or removed (ABSENT), fails ``why`` alone."""
    if value is ABSENT:
        parent, _, name = field.rpartition(".")
        return pytest.param(
            field, value, f"{parent or '<root>'}: required {name}", id=f"no {field}"
        )
    return pytest.param(field, value, f"{field}: {why}", id=f"{field}={repr(value)[:24]}")


BAD_VALUES = [
    *(bad(field, ABSENT) for field in ("spec", *(f"spec.{name}" for name in SPEC_REQUIRED))),
    *(bad("spec.accountName", v, "pattern") for v in ("12 34", "-1", "1-", "1--2", "", " 1")),
    bad("spec.accountName", "1" * 65, "maxLength"),
    *(bad("spec.serviceName", v, "enum") for v in ("Carrier", "qos", "")),
    *(
        bad("spec.url", v, "pattern")
        for v in (
            "ftp://x",
            "https://",
            "not a url",
            "https:///no-host",
            " https://listener.example.com",
            "https://listener.example.com/with space",
        )
    ),
    bad("spec.url", "https://listener.example.com/" + "a" * 2048, "maxLength"),
    bad("spec.deletionPolicy", "Keep", "enum"),
    bad("spec.managementPolicy", "manage", "enum"),
    bad("spec.suspend", "yes", "type"),
    bad("spec.credentialsSecretRef", "thingspace-credentials", "type"),
    *(
        bad(f"spec.{ref}.name", name, why)
        for ref in ("credentialsSecretRef", "callbackCredentialsSecretRef")
        for name, why in [
            *((name, "pattern") for name in ("Upper", "under_score", "-lead", "")),
            ("a" * 254, "maxLength"),
            (ABSENT, "required"),
        ]
    ),
    bad("status.observedGeneration", -1, "minimum"),
    bad("status.conditions.0.status", "Maybe", "enum"),
    bad("status.conditions.0.reason", "Not one word", "pattern"),
    bad("status.registration.hasCallbackCredentials", "no", "type"),
    bad("status.lastSyncTime", 1700000000, "type"),
    *(
        bad(f"status.conditions.1.{field}", ABSENT)
        for field in ("type", "status", "lastTransitionTime", "reason", "message")
    ),
]


@pytest.mark.parametrize(("field", "value", "reason"), BAD_VALUES)
def test_invalid_objects_are_rejected_for_the_right_reason(
    field: str, value: Any, reason: str
) -> None:
    assert reasons(edited(GOOD, {field: value})) == {reason}


@pytest.mark.parametrize(
    ("name", "why"),
    [("platform", None), ("Upper", "pattern"), ("-lead", "pattern"), ("a" * 254, "maxLength")],
)
def test_an_account_ref_names_a_kubernetes_object(name: str, why: str | None) -> None:
    by_ref = copy.deepcopy(GOOD)
    by_ref["spec"] = {**BY_REF, "accountRef": {"name": name}}
    expected = set() if why is None else {f"spec.accountRef.name: {why}"}
    assert reasons(by_ref) == expected


# -- CEL rules ---------------------------------------------------------------------------

INLINE = {k: v for k, v in GOOD["spec"].items() if k != "callbackCredentialsSecretRef"}
BY_REF = {
    **{k: v for k, v in INLINE.items() if k not in ("accountName", "credentialsSecretRef")},
    "accountRef": {"name": "platform"},
}

#: For every schema node that carries CEL rules: (oldSelf, self, allowed) samples; oldSelf
#: ABSENT is a create. Every rule must be seen both admitting and rejecting a sample.
CEL_SAMPLES: dict[str, list[tuple[Any, Any, bool]]] = {
    ".spec.accountName": [
        ("0000123456-00001", "0000123456-00001", True),
        ("0000123456-00001", "0000999999-00001", False),
        ("0000123456-00001", "123456-00001", False),
    ],
    ".spec.serviceName": [("QoS", "QoS", True), ("QoS", "CarrierService", False)],
    ".spec.accountRef": [
        ({"name": "platform"}, {"name": "platform"}, True),
        ({"name": "platform"}, {"name": "other"}, False),
    ],
    ".spec": [
        (ABSENT, INLINE, True),
        (ABSENT, BY_REF, True),
        (INLINE, BY_REF, True),  # the migration to a ThingSpaceAccount
        (BY_REF, BY_REF, True),
        (BY_REF, INLINE, False),  # and never back
        (ABSENT, {**INLINE, "accountRef": {"name": "platform"}}, False),  # both forms
        (ABSENT, {k: v for k, v in INLINE.items() if k != "credentialsSecretRef"}, False),
        (ABSENT, {k: v for k, v in INLINE.items() if k != "accountName"}, False),
        (ABSENT, {k: v for k, v in BY_REF.items() if k != "accountRef"}, False),  # neither
    ],
}


def cel_rules() -> dict[str, list[dict[str, str]]]:
    return {
        path: node["x-kubernetes-validations"]
        for path, node in nodes(SCHEMA)
        if "x-kubernetes-validations" in node
    }


def test_every_cel_rule_has_samples() -> None:
    assert cel_rules().keys() == CEL_SAMPLES.keys()


@pytest.mark.parametrize("path", CEL_SAMPLES)
def test_cel_rules_admit_and_reject_their_samples(path: str) -> None:
    rules = cel_rules()[path]
    seen: dict[str, set[bool]] = {rule["rule"]: set() for rule in rules}
    for old, new, allowed in CEL_SAMPLES[path]:
        # Both values pass the schema, so the verdict is the rules' alone.
        assert reasons(edited(GOOD, {path[1:]: new})) == set()
        context = {"self": new} if old is ABSENT else {"self": new, "oldSelf": old}
        # Raises on a syntax error or a function outside base CEL (e.g. lowerAscii, url).
        # A transition rule (one that reads oldSelf) is not evaluated on create.
        verdicts = {
            rule: cel.evaluate(rule, context)
            for rule in seen
            if old is not ABSENT or "oldSelf" not in rule
        }
        assert all(verdicts.values()) is allowed, (old, new, verdicts)
        for rule, verdict in verdicts.items():
            seen[rule].add(verdict)
    assert {rule: verdicts for rule, verdicts in seen.items() if verdicts != {True, False}} == {}
    field = path.rsplit(".", 1)[1]
    assert all(field in rule["message"] for rule in rules)


# -- examples ----------------------------------------------------------------------------

#: file -> the objects it holds: name -> what a ThingSpaceCallback's spec must contain.
EXPECTED_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "carrier-service-with-credentials.yaml": {
        "carrier-listener-auth": {},
        "carrier-service": {
            "serviceName": "CarrierService",
            "callbackCredentialsSecretRef": {"name": "carrier-listener-auth"},
        },
    },
    "credentials-secret.yaml": {"thingspace-credentials": {}},
    "observe-only.yaml": {
        "device-usage-observed": {"serviceName": "DeviceUsage", "managementPolicy": "ObserveOnly"}
    },
    "qos-callback.yaml": {"qos-events": {"serviceName": "QoS"}},
    "several-services.yaml": {
        "sms-delivery": {"serviceName": "SMSDeliveryConfirmation"},
        "nidd": {"serviceName": "NiddService", "deletionPolicy": "Orphan"},
    },
}
SECRETS = {
    doc["metadata"]["name"]: doc.get("stringData", {})
    for _, doc in EXAMPLE_DOCUMENTS
    if doc["kind"] == "Secret"
}


def test_examples_are_the_documented_set() -> None:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for file, doc in EXAMPLE_DOCUMENTS:
        found.setdefault(file, {})[doc["metadata"]["name"]] = doc.get("spec", {})
    assert found.keys() == EXPECTED_EXAMPLES.keys()
    for file, objects in EXPECTED_EXAMPLES.items():
        assert list(found[file]) == list(objects), file
        for name, expected in objects.items():
            assert expected.items() <= found[file][name].items(), name
    readme = (EXAMPLES / "README.md").read_text()
    assert [file for file in EXPECTED_EXAMPLES if f"`{file}`" not in readme] == []
    assert [
        file for file in EXPECTED_EXAMPLES if not (EXAMPLES / file).read_text().startswith("# ")
    ] == []


@pytest.mark.parametrize(
    "doc",
    [pytest.param(doc, id=f"{file}:{doc['metadata']['name']}") for file, doc in EXAMPLE_DOCUMENTS],
)
def test_example_is_ready_to_apply(doc: dict[str, Any]) -> None:
    assert "namespace" not in doc["metadata"]  # so `kubectl apply -n X` decides
    if doc["kind"] == "Secret":
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        return
    spec = doc["spec"]
    assert set(APP_CREDENTIAL_KEYS) <= SECRETS[spec["credentialsSecretRef"]["name"]].keys()
    if "callbackCredentialsSecretRef" in spec:
        auth = SECRETS[spec["callbackCredentialsSecretRef"]["name"]]
        assert auth.keys() == set(CALLBACK_CREDENTIAL_KEYS)
        assert max(map(len, auth.values())) <= CALLBACK_CREDENTIAL_MAX_LENGTH
    url = urlsplit(spec["url"])
    assert (url.scheme, url.port) == ("https", None)
    assert spec["accountName"] == GOOD["spec"]["accountName"]


def test_example_credentials_are_the_simulator_demo_ones() -> None:
    demo = SECRETS["thingspace-credentials"]
    assert DEMO_APPS[demo["appKey"]] == demo["appSecret"]
    assert DEMO_USERS[demo["username"]] == demo["password"]
