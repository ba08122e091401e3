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
SIMULATOR = ["--set", "simulator.enabled=true"]
SIMULATOR_NAME = "tso-thingspace-operator-simulator"
NETWORK_POLICY = [*SIMULATOR, "--set", "simulator.networkPolicy.enabled=true"]
MONITORING_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
WITH_PEER = [
    *NETWORK_POLICY,
    "--set-json",
    f"simulator.networkPolicy.from=[{json.dumps(MONITORING_PEER)}]",
]


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


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name]
    return found


def notes(*options: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template does not render it)."""
    result = helm(
        "install", "tso", str(CHART), "--namespace", "ops", "--dry-run=client", "-o", "json",
        *options,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["info"]["notes"])


@pytest.mark.parametrize(
    "options",
    [[], NAMESPACED, SIMULATOR, NETWORK_POLICY],
    ids=["cluster-wide", "namespaced", "simulator", "simulator-network-policy"],
)
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
        [*SIMULATOR, "--set", "simulator.accounts={0000123456-00001}"],
        WITH_PEER,
    ],
    ids=["defaults", "namespaced", "minimal", "single", "three", "options", "simulator", "netpol"],
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
    assert described.endswith("(docs/operations.md).")


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


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["leaderElection.leaseDurationSeconds=10"], "leaseDurationSeconds > renewDeadline"),
        (["leaderElection.retryPeriodSeconds=9"], "leaseDurationSeconds > renewDeadline"),
        (["podDisruptionBudget.minAvailable=2"], "no node could ever be drained"),
        (["metrics.port=8081"], "metrics.port and health.port must differ"),
        (
            ["metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"],
            "needs metrics.service.enabled",
        ),
        (["serviceAccount.create=false"], "needs serviceAccount.name"),
    ],
)
def test_values_the_operator_or_the_cluster_would_fail_on_are_refused_at_install(
    options: list[str], problem: str
) -> None:
    """Each renders cleanly otherwise, then crash-loops, blocks every node drain, clashes
    on a port, selects nothing, or gives the namespace's default ServiceAccount the
    operator's permissions."""
    sets = [arg for option in options for arg in ("--set", option)]
    refused = helm("template", "tso", str(CHART), *sets)
    assert refused.returncode != 0
    assert problem in refused.stderr


def test_the_chart_works_as_a_subchart_with_global_values() -> None:
    """Helm hands every subchart the parent's "global" values."""
    assert deployment(render("--set", "global.imageRegistry=example.com"))


def test_a_namespace_named_twice_is_watched_and_granted_once() -> None:
    docs = render("--set", "watchNamespaces={iot,iot,billing}")
    args = deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=iot",
        "--namespace=billing",
    ]
    for kind in ("Role", "RoleBinding"):
        watched = [o["metadata"]["namespace"] for o in by_kind(docs, kind)]
        assert (watched.count("iot"), watched.count("billing")) == (1, 1)


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


# --- the simulator (simulator.enabled, staging only) -------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    operator = named(docs, "Deployment", "tso-thingspace-operator")
    return {
        item["name"]: item.get("value")
        for item in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_by_default_there_is_no_simulator() -> None:
    docs = render()
    assert [doc for doc in docs if "simulator" in doc["metadata"]["name"]] == []
    assert by_kind(docs, "Secret") == []
    assert "SIMULATOR" not in notes()


def test_the_operator_talks_to_the_simulator_service() -> None:
    docs = render(*SIMULATOR, "--set", "thingspace.apiUrl=https://elsewhere.example")
    assert operator_env(docs)["THINGSPACE_API_URL"] == f"http://{SIMULATOR_NAME}.ops.svc:8088"
    service = named(docs, "Service", SIMULATOR_NAME)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8088, "targetPort": "http", "protocol": "TCP"}
    ]
    simulator = named(docs, "Deployment", SIMULATOR_NAME)
    pod_labels = simulator["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(simulator["spec"]["selector"]["matchLabels"], pod_labels)
    moved = render(*SIMULATOR, "--set", "simulator.port=9100")
    assert operator_env(moved)["THINGSPACE_API_URL"] == f"http://{SIMULATOR_NAME}.ops.svc:9100"
    assert named(moved, "Service", SIMULATOR_NAME)["spec"]["ports"][0]["port"] == 9100


def test_no_selector_of_the_operator_selects_the_simulator() -> None:
    docs = render(*SIMULATOR, "--set", "metrics.serviceMonitor.enabled=true")
    operator = named(docs, "Deployment", "tso-thingspace-operator")
    simulator = named(docs, "Deployment", SIMULATOR_NAME)
    operator_pod = operator["spec"]["template"]["metadata"]["labels"]
    simulator_pod = simulator["spec"]["template"]["metadata"]["labels"]
    assert simulator_pod["app.kubernetes.io/component"] == "simulator"
    (budget,) = by_kind(docs, "PodDisruptionBudget")
    metrics = named(docs, "Service", "tso-thingspace-operator-metrics")
    for selector in (
        operator["spec"]["selector"]["matchLabels"],
        budget["spec"]["selector"]["matchLabels"],
        metrics["spec"]["selector"],
    ):
        assert selects(selector, operator_pod)
        assert not selects(selector, simulator_pod)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    monitored = monitor["spec"]["selector"]["matchLabels"]
    assert selects(monitored, metrics["metadata"]["labels"])
    assert not selects(monitored, named(docs, "Service", SIMULATOR_NAME)["metadata"]["labels"])
    # Nor the other way round.
    assert not selects(simulator["spec"]["selector"]["matchLabels"], operator_pod)


def test_the_simulator_is_as_hardened_as_the_operator() -> None:
    docs = render(*SIMULATOR)
    operator = named(docs, "Deployment", "tso-thingspace-operator")["spec"]["template"]["spec"]
    spec = named(docs, "Deployment", SIMULATOR_NAME)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"] == operator["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"] == operator["containers"][0]["securityContext"]
    assert container["image"] == operator["containers"][0]["image"]
    assert container["command"] == ["thingspace-sim"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/_sim/registrations", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8088, "protocol": "TCP"}]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["limits"]
    elsewhere = render(
        *SIMULATOR,
        "--set", "simulator.image.repository=example.com/sim",
        "--set", "simulator.image.tag=v2",
    )  # fmt: skip
    pod = named(elsewhere, "Deployment", SIMULATOR_NAME)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "example.com/sim:v2"


def test_simulator_credentials_stay_out_of_the_deployments_and_argv() -> None:
    docs = render(
        *SIMULATOR,
        "--set", "simulator.apps={key-1:app-secret-1,key-2:app-secret-2}",
        "--set", "simulator.users={alice:user-password-1}",
        "--set", "simulator.accounts={0000123456-00001}",
        "--set", "simulator.deliveryRetrySeconds=5",
    )  # fmt: skip
    dumped = yaml.safe_dump(by_kind(docs, "Deployment"))
    for clear in ("app-secret-1", "app-secret-2", "user-password-1"):
        assert clear not in dumped
    simulator = named(docs, "Deployment", SIMULATOR_NAME)
    (container,) = simulator["spec"]["template"]["spec"]["containers"]
    # Nothing in argv (/proc/*/cmdline, ps): no credential, not even a $(VAR) to expand.
    assert container["args"] == [
        "--host", "0.0.0.0", "--port", "8088",
        "--account", "0000123456-00001",
        "--delivery-retry-seconds", "5",
    ]  # fmt: skip
    assert "$(" not in json.dumps(container["args"])
    # thingspace-sim reads THINGSPACE_SIM_APPS and THINGSPACE_SIM_USERS from the Secret.
    assert container["envFrom"] == [{"secretRef": {"name": SIMULATOR_NAME}}]
    assert "env" not in container
    secret = named(docs, "Secret", SIMULATOR_NAME)
    assert secret["stringData"] == {
        "THINGSPACE_SIM_APPS": "key-1:app-secret-1,key-2:app-secret-2",
        "THINGSPACE_SIM_USERS": "alice:user-password-1",
    }
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "simulator"
    no_users = render(*SIMULATOR, "--set-json", "simulator.users=[]")
    assert named(no_users, "Secret", SIMULATOR_NAME)["stringData"] == {
        "THINGSPACE_SIM_APPS": "demo-app-key:demo-app-secret"
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("simulator.users={alice}", "NAME:PASSWORD"),
        ("simulator.apps={key:sec\\,ret}", "comma"),
    ],
)
def test_simulator_credentials_must_have_a_colon_and_no_comma(value: str, problem: str) -> None:
    refused = helm("template", "tso", str(CHART), *SIMULATOR, "--set", value)
    assert refused.returncode != 0
    assert problem in refused.stderr


def test_simulator_port_must_be_unprivileged() -> None:
    """The simulator runs as non-root: it cannot bind a port below 1024."""
    refused = helm("template", "tso", str(CHART), *SIMULATOR, "--set", "simulator.port=80")
    assert refused.returncode != 0
    assert "simulator.port" in refused.stderr or "/simulator/port" in refused.stderr
    render(*SIMULATOR, "--set", "simulator.port=1024")


def test_simulator_network_policy_is_optional_and_admits_only_the_operator() -> None:
    assert by_kind(render(*SIMULATOR), "NetworkPolicy") == []
    docs = render(*NETWORK_POLICY, "--set", "simulator.port=9100")
    policy = named(docs, "NetworkPolicy", SIMULATOR_NAME)
    spec = policy["spec"]
    simulator = named(docs, "Deployment", SIMULATOR_NAME)["spec"]["template"]["metadata"]
    operator = named(docs, "Deployment", "tso-thingspace-operator")["spec"]["template"]
    assert selects(spec["podSelector"]["matchLabels"], simulator["labels"])
    assert not selects(spec["podSelector"]["matchLabels"], operator["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert selects(peer["podSelector"]["matchLabels"], operator["metadata"]["labels"])
    assert not selects(peer["podSelector"]["matchLabels"], simulator["labels"])
    assert rule["ports"] == [{"port": 9100, "protocol": "TCP"}]
    (rule,) = named(render(*WITH_PEER), "NetworkPolicy", SIMULATOR_NAME)["spec"]["ingress"]
    assert rule["from"][1:] == [MONITORING_PEER]


def test_notes_open_with_the_simulator_warning() -> None:
    text = notes(*SIMULATOR)
    assert text.lstrip("#\n ").startswith("WARNING: SIMULATOR MODE")
    assert "NEVER USE IN PRODUCTION" in text
    assert f"port-forward svc/{SIMULATOR_NAME} 8088" in text
    assert "thingspace-sim send --sim-url http://127.0.0.1:8088 --account" in text
    assert "/_sim/deliveries" in text
    assert f"talks to http://{SIMULATOR_NAME}.ops.svc:8088" in text
    assert "demo-app-secret" not in text
    assert "demo-password" not in text
    # /_sim/registrations answers callback passwords: the notes point elsewhere.
    assert "/_sim/registrations" not in text
    assert "is unauthenticated: any pod that can" in text
    assert "simulator.networkPolicy.enabled=true" in text
    assert "simulator.networkPolicy.enabled=true" not in notes(*NETWORK_POLICY)


def test_notes_of_an_install_without_namespaced_secrets_point_to_account_refs() -> None:
    """Inline credentials in a callback's namespace would only report AccountRequired."""
    text = notes("--set", "credentials.namespacedSecrets=false")
    assert "kubectl -n ops create secret generic thingspace-credentials" in text
    assert "spec.accountRef" in text
    assert "kubectl -n <namespace> create secret" not in text
    assert "kubectl -n <namespace> create secret" in notes()


def test_a_startup_probe_on_the_health_port_holds_the_other_probes_back() -> None:
    """Liveness and readiness are probed only once the server answers: each probe refused
    while a process starts is a Warning Event on its pod."""

    def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
        (found,) = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        return found

    operator = container(render("--set", "health.port=9091"), "tso-thingspace-operator")
    startup = operator["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 9091, "protocol": "TCP"} in operator["ports"]
    assert startup["periodSeconds"] == 1
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # a slow start
    # The port listens early and holds a probe until the server answers (~1.5 s in).
    assert startup["timeoutSeconds"] >= 3
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"]["port"] == "health"

    simulator = container(render(*SIMULATOR), SIMULATOR_NAME)
    startup = simulator["startupProbe"]
    assert startup["httpGet"] == {"path": "/_sim/registrations", "port": "http"}
    assert startup["periodSeconds"] == 1
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
