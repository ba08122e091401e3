"""What users read on the real API server: `kubectl explain` shows a description for every
field of both CRDs' spec, and the OpenAPI v3 document the API server serves (what kubectl
explain reads) has one on every field, array item and map value of spec and status. The
CRDs come from the chart, as users install them; tests/unit/test_reference_docs.py checks
the YAML itself."""

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import Release, eventually, unique
from tests.e2e.controlplane import Cluster
from tests.unit.test_reference_docs import fields as schema_fields

GROUP_VERSION = "thingspace.io/v1alpha1"
#: resource as kubectl names it -> (CRD, schema name in the served OpenAPI v3 document)
RESOURCES = {
    "thingspacecallback": (
        "thingspacecallbacks.thingspace.io",
        "io.thingspace.v1alpha1.ThingSpaceCallback",
    ),
    "thingspaceaccount": (
        "thingspaceaccounts.thingspace.io",
        "io.thingspace.v1alpha1.ThingSpaceAccount",
    ),
}
#: A field line of `kubectl explain --recursive`: two spaces of indent per level, the name,
#: a tab, the type in angle brackets.
FIELD_LINE = re.compile(r"^(?P<indent>(?:  )+)(?P<name>[A-Za-z0-9_$-]+)\t<")


@pytest.fixture(scope="module")
def installed(plane: Cluster) -> Iterator[Cluster]:
    """Both CRDs from the chart (unless an earlier test's release holds them), served with
    their OpenAPI schema."""
    release = Release(plane, unique("docs-system"), name=unique("tso"))
    release.install("--set", "secretWatch.enabled=false")
    try:
        for crd, _ in RESOURCES.values():
            plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        # The API server publishes a new CRD's OpenAPI a moment after it is Established.
        for resource in RESOURCES:
            eventually(
                functools.partial(explain, plane, f"{resource}.spec", check=False),
                what=f"kubectl explain {resource}.spec",
            )
        yield plane
    finally:
        release.uninstall()


def explain(plane: Cluster, target: str, *args: str, check: bool = True) -> str:
    done = plane.kubectl("explain", target, f"--api-version={GROUP_VERSION}", *args, check=check)
    return done.stdout if done.returncode == 0 else ""


def listed_fields(output: str) -> list[str]:
    """The dotted paths of the FIELDS section of `kubectl explain --recursive`."""
    lines = output.splitlines()
    paths: list[str] = []
    stack: list[str] = []
    for line in lines[lines.index("FIELDS:") + 1 :]:
        found = FIELD_LINE.match(line)
        if found:
            depth = len(found["indent"]) // 2 - 1
            stack = [*stack[:depth], found["name"]]
            paths.append(".".join(stack))
    return paths


def description(output: str) -> str:
    """The DESCRIPTION section of `kubectl explain` (up to FIELDS, if any)."""
    _, found, rest = output.partition("DESCRIPTION:")
    assert found, output
    text = rest.split("\nFIELDS:", 1)[0].strip()
    return "" if text == "<empty>" else text


def test_listed_fields_and_description_parse_explain_output() -> None:
    output = (
        "GROUP:      g\nKIND:       K\nVERSION:    v1\n\nFIELD: spec <Object>\n\n\n"
        "DESCRIPTION:\n    The spec.\n    \nFIELDS:\n  a\t<Object>\n    b\t<string> -required-\n"
        "    c\t<[]Object>\n      d\t<string>\n  e\t<boolean>\n"
    )
    assert listed_fields(output) == ["a", "a.b", "a.c", "a.c.d", "e"]
    assert description(output) == "The spec."
    assert description("DESCRIPTION:\n    <empty>\n") == ""


@pytest.fixture(scope="module")
def served(installed: Cluster) -> dict[str, Any]:
    """The components.schemas of the API server's OpenAPI v3 document of the group."""

    def fetch() -> dict[str, Any] | None:
        raw = installed.kubectl("get", "--raw", f"/openapi/v3/apis/{GROUP_VERSION}").stdout
        schemas: dict[str, Any] = json.loads(raw)["components"]["schemas"]
        return schemas if all(name in schemas for _, name in RESOURCES.values()) else None

    found: dict[str, Any] = eventually(fetch, what="the CRDs in /openapi/v3")
    return found


@pytest.mark.parametrize("resource", RESOURCES)
def test_kubectl_explain_describes_every_spec_field(installed: Cluster, resource: str) -> None:
    fields = listed_fields(explain(installed, f"{resource}.spec", "--recursive"))
    assert len(fields) >= 10, fields
    undescribed = []
    for field in fields:
        output = explain(installed, f"{resource}.spec.{field}", check=False)
        if "DESCRIPTION:" not in output or not description(output):
            undescribed.append(field)
    assert undescribed == [], f"kubectl explain {resource}.spec.<field> shows no DESCRIPTION"


@pytest.mark.parametrize("resource", RESOURCES)
def test_explain_lists_the_served_fields(
    installed: Cluster, served: dict[str, Any], resource: str
) -> None:
    # explain shows the fields of array items as the array's own: leave out [] and {}.
    schema = served[RESOURCES[resource][1]]["properties"]["spec"]
    expected = {
        path.replace("[]", "").lstrip(".")
        for path, _ in schema_fields(schema, "")
        if not path.endswith(("[]", "{}"))
    }
    listed = listed_fields(explain(installed, f"{resource}.spec", "--recursive"))
    assert sorted(listed) == sorted(expected)


@pytest.mark.parametrize("resource", RESOURCES)
def test_served_schema_describes_every_field(served: dict[str, Any], resource: str) -> None:
    schema = served[RESOURCES[resource][1]]
    assert schema.get("description")
    nodes = [
        (path, node)
        for part in ("spec", "status")
        for path, node in [
            (part, schema["properties"][part]),
            *schema_fields(schema["properties"][part], part),
        ]
    ]
    assert len(nodes) >= 20
    assert [path for path, node in nodes if not str(node.get("description", "")).strip()] == []
