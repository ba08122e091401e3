"""The Helm chart with a real helm binary; rendered manifests validated against the
Kubernetes schemas (strict: unknown fields fail); the Dockerfile linted."""

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "thingspace-operator"
HELM = os.environ.get("HELM") or str(ROOT / ".tools" / "helm")
KUBERNETES_VERSION = "1.34.0"
NAMESPACED = ["--set", "watchNamespaces={team-a,team-b}"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(HELM).exists():
        pytest.fail(f"helm not found at {HELM}: run `make tools` (tools/get_helm.py)")
    env_dirs = {
        k: str(ROOT / ".tools" / k.lower())
        for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")
    }
    return subprocess.run(
        [HELM, *args], capture_output=True, text=True, check=False, env={**os.environ, **env_dirs}
    )


def render(*options: str) -> list[dict[str, Any]]:
    result = helm("template", "tso", str(CHART), "--namespace", "ops", *options)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = by_kind(docs, "Deployment")
    return found


@pytest.mark.parametrize("options", [[], NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_helm_lint_strict(options: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *options)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "options",
    [
        [],
        NAMESPACED,
        ["--set", "metrics.service.enabled=false", "--set", "crds.enabled=false"],
        ["--set", "leaderElection.enabled=false", "--set", "replicaCount=1"],
        ["--set", "replicaCount=3", "--set", "affinity.nodeAffinity=null"],
        [
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=existing",
            "--set",
            "logging.format=json",
            "--set",
            "nodeSelector.pool=system",
            "--set",
            "extraEnv[0].name=HTTPS_PROXY",
            "--set",
            "extraEnv[0].value=http://proxy:3128",
        ],
    ],
    ids=["defaults", "namespaced", "minimal", "single", "three", "options"],
)
def test_rendered_manifests_are_valid_kubernetes(options: list[str], tmp_path: Path) -> None:
    docs = render(*options)
    paths = []
    for index, doc in enumerate(docs):
        path = tmp_path / f"{index}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    result = run(
        str(ROOT / ".venv" / "bin" / "kubernetes-validate"),
        "--strict",
        "--kubernetes-version",
        KUBERNETES_VERSION,
        *paths,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validation_catches_typos_and_wrong_types() -> None:
    unknown = helm("template", "tso", str(CHART), "--set", "replicas=2")
    assert unknown.returncode != 0
    assert "replicas" in unknown.stderr
    wrong = helm("template", "tso", str(CHART), "--set", "thingspace.resyncSeconds=soon")
    assert wrong.returncode != 0
    assert "resyncSeconds" in wrong.stderr
    bad_enum = helm("template", "tso", str(CHART), "--set", "logging.format=xml")
    assert bad_enum.returncode != 0


def test_values_schema_is_generated_from_values() -> None:
    result = run(
        str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tools" / "values_schema.py"), "--check"
    )
    assert result.returncode == 0, "run: python tools/values_schema.py"


def test_schema_descriptions_span_continued_comment_lines() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    described = schema["properties"]["resources"]["description"]
    assert described.startswith("Resources of the operator container. Measured peak memory")
    assert described.endswith("(docs/benchmarks.md).")


def test_chart_ships_exactly_the_crds_in_crds() -> None:
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    assert [source.name for source in sources] == [
        "thingspaceaccounts.thingspace.io.yaml",
        "thingspacecallbacks.thingspace.io.yaml",
    ]
    rendered = {
        crd["metadata"]["name"]: crd for crd in by_kind(render(), "CustomResourceDefinition")
    }
    for source in sources:
        assert (CHART / "files" / "crds" / source.name).read_bytes() == source.read_bytes()
        crd = rendered.pop(source.name.removesuffix(".yaml"))
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == yaml.safe_load(source.read_text())
    assert rendered == {}
    unkept = by_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert len(unkept) == 2
    assert all("annotations" not in crd["metadata"] for crd in unkept)
    assert by_kind(render("--set", "crds.enabled=false"), "CustomResourceDefinition") == []


ACCOUNT_RULES = [
    {
        "apiGroups": ["thingspace.io"],
        "resources": ["thingspaceaccounts"],
        "verbs": ["list", "watch"],
    },
    {
        "apiGroups": ["thingspace.io"],
        "resources": ["thingspaceaccounts/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]
OWN_NAMESPACE_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
NAMESPACED_RULES = [
    {
        "apiGroups": ["thingspace.io"],
        "resources": ["thingspacecallbacks"],
        "verbs": ["list", "watch", "patch"],
    },
    {
        "apiGroups": ["thingspace.io"],
        "resources": ["thingspacecallbacks/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def test_cluster_wide_rbac_is_least_privilege() -> None:
    docs = render()
    roles = {doc["metadata"]["name"]: doc["rules"] for doc in by_kind(docs, "ClusterRole")}
    assert roles == {
        "tso-thingspace-operator": NAMESPACED_RULES,
        "tso-thingspace-operator-accounts": ACCOUNT_RULES,
    }
    # The only Roles: the Lease, and the operator's own namespace.
    assert sorted(r["metadata"]["name"] for r in by_kind(docs, "Role")) == [
        "tso-thingspace-operator-leader-election",
        "tso-thingspace-operator-own",
    ]
    assert (
        "--all-namespaces" in deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_namespaced_mode_uses_roles_per_namespace() -> None:
    docs = render(*NAMESPACED)
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] != "ops"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == NAMESPACED_RULES for r in roles)
    bindings = by_kind(docs, "RoleBinding")
    assert all(b["subjects"][0]["namespace"] == "ops" for b in bindings)
    # Cluster-wide only what is cluster-scoped: ThingSpaceAccounts and namespaces' labels.
    assert [r["rules"] for r in by_kind(docs, "ClusterRole")] == [ACCOUNT_RULES]
    own = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-own")]
    watched = [
        {**OWN_NAMESPACE_RULES[0], "verbs": ["get", "list", "watch"]},
        OWN_NAMESPACE_RULES[1],
    ]
    assert [(r["metadata"]["namespace"], r["rules"]) for r in own] == [("ops", watched)]
    args = deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--namespace=team-a", "--namespace=team-b"]


def test_without_the_secret_watch_only_get_on_secrets_is_granted() -> None:
    for docs, kind in (
        (render("--set", "secretWatch.enabled=false"), "ClusterRole"),
        (render(*NAMESPACED, "--set", "secretWatch.enabled=false"), "Role"),
    ):
        for role in by_kind(docs, kind):
            if role["metadata"]["name"].endswith(("-leader-election", "-own", "-accounts")):
                continue
            secrets = [rule for rule in role["rules"] if rule["resources"] == ["secrets"]]
            assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
        env = deployment(docs)["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "THINGSPACE_SECRET_WATCH", "value": "false"} in env


def test_deployment_is_safe_by_default() -> None:
    spec = deployment(render())["spec"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["THINGSPACE_API_URL"] == "https://thingspace.verizon.com"
    assert env["THINGSPACE_RESYNC_SECONDS"] == "300"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8080,
        "health": 8081,
    }


def test_two_replicas_elect_a_leader_by_default() -> None:
    docs = render()
    spec = deployment(docs)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["THINGSPACE_LEADER_ELECT"]["value"] == "true"
    assert env["THINGSPACE_LEADER_ELECTION_ID"]["value"] == "tso-thingspace-operator"
    assert env["THINGSPACE_LEASE_DURATION_SECONDS"]["value"] == "15"
    assert env["THINGSPACE_RENEW_DEADLINE_SECONDS"]["value"] == "10"
    assert env["THINGSPACE_RETRY_PERIOD_SECONDS"]["value"] == "2"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert pod["terminationGracePeriodSeconds"] == 30
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == (spec["selector"]["matchLabels"])
    )
    (budget,) = by_kind(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": spec["selector"]}


def test_lease_rbac_is_limited_to_the_release_lease() -> None:
    docs = render(*NAMESPACED)
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-election")]
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["tso-thingspace-operator"],
            "verbs": ["get", "watch", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    (binding,) = [
        b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"].endswith("-election")
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tso-thingspace-operator", "namespace": "ops"}
    ]


def test_without_leader_election_one_replica_is_replaced_with_recreate() -> None:
    docs = render("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    spec = deployment(docs)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    env = {
        item["name"]: item.get("value") for item in spec["template"]["spec"]["containers"][0]["env"]
    }
    assert env["THINGSPACE_LEADER_ELECT"] == "false"
    assert "POD_NAME" not in env
    assert by_kind(docs, "PodDisruptionBudget") == []
    assert not [r for r in by_kind(docs, "Role") if "leader-election" in r["metadata"]["name"]]


def test_several_replicas_without_leader_election_are_refused() -> None:
    refused = helm("template", "tso", str(CHART), "--set", "leaderElection.enabled=false")
    assert refused.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in refused.stderr


def test_chosen_affinity_replaces_the_default_anti_affinity() -> None:
    docs = render(
        "--set",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "--set",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    )
    affinity = deployment(docs)["spec"]["template"]["spec"]["affinity"]
    assert list(affinity) == ["nodeAffinity"]


def test_service_monitor_is_optional() -> None:
    assert by_kind(render(), "ServiceMonitor") == []
    (monitor,) = by_kind(
        render(
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ),
        "ServiceMonitor",
    )
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if (
            isinstance(value, dict)
            and value
            and key not in ("resources", "podSecurityContext", "securityContext")
        ):
            keys.extend(leaf_keys(value, f"{path}."))
        else:
            keys.append(path)
    return keys


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in leaf_keys(values) if f"`{key}`" not in readme]
    assert missing == []


# --- the container image definition ------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run(str(ROOT / ".venv" / "bin" / "hadolint"), str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_what_exists_and_runs_an_installed_entrypoint() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text()
    assert all(f"!{source}" in ignored for source in sources)
    entrypoint = re.search(r'ENTRYPOINT \["([^"]+)", "run"\]', dockerfile)
    assert entrypoint is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint.group(1) in scripts
    assert re.search(r"^USER \d+:\d+$", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("watch", [True, False], ids=["secret-watch", "no-secret-watch"])
@pytest.mark.parametrize("options", [[], NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_without_namespaced_secrets_only_the_own_namespace_has_secret_access(
    options: list[str], watch: bool
) -> None:
    docs = render(
        *options,
        "--set", "credentials.namespacedSecrets=false",
        "--set", f"secretWatch.enabled={str(watch).lower()}",
    )  # fmt: skip
    secret_rules = {
        (role["kind"], role["metadata"].get("namespace", ""), tuple(rule["verbs"]))
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    }
    verbs = ("get", "list", "watch") if watch else ("get",)
    assert secret_rules == {("Role", "ops", verbs)}  # the release namespace
    env = {
        e["name"]: e.get("value")
        for e in deployment(docs)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["THINGSPACE_NAMESPACED_SECRETS"] == "false"
