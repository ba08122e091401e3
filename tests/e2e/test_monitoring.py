"""The chart's monitoring on real parts: the Prometheus Operator's own CRDs on the real API
server accept the chart's ServiceMonitor and PrometheusRule; a real Prometheus (Debian's)
scrapes a running operator with the chart's rules loaded, and the alerts fire on
Prometheus' /api/v1/alerts when ThingSpace rejects a login or fails, and resolve after;
every query of the chart's dashboard returns data from it."""

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import monitoring_tools

from tests.e2e.cluster import (
    CHART,
    DEMO_CREDENTIALS,
    OperatorProcess,
    Release,
    Simulator,
    apply,
    callback_manifest,
    eventually,
    free_port,
    remove_test_objects,
    secret_manifest,
    unique,
    wait_ready,
)
from tests.e2e.controlplane import Cluster
from tests.e2e.test_lifecycle import account_manifest, by_ref

DASHBOARD = CHART / "files" / "dashboard.json"
MONITORING_CRDS = ("servicemonitors", "prometheusrules")
# Short enough to see each alert fire and resolve within a test.
FAST_ALERTS = [
    "--set", "metrics.prometheusRule.alerts.AccountNotAuthenticated.for=0s",
    "--set", "metrics.prometheusRule.alerts.APIErrors.for=0s",
    "--set", "metrics.prometheusRule.alerts.APIErrors.window=20s",
]  # fmt: skip


@dataclass
class Monitored:
    plane: Cluster
    sim: Simulator
    release: Release
    team: str
    operator: OperatorProcess
    prometheus: str  # its base URL

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = _get_json(url)
        assert answer["status"] == "success", (promql, answer)
        return list(answer["data"]["result"])

    def firing(self) -> dict[str, dict[str, Any]]:
        alerts = _get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"]: a for a in alerts if a["state"] == "firing"}


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return dict(json.loads(answer.read()))


@pytest.fixture(scope="module")
def crds(plane: Cluster) -> Iterator[None]:
    try:
        found = monitoring_tools.operator_crds()
    except monitoring_tools.Unavailable as exc:
        pytest.skip(f"######## Prometheus Operator CRDs not available: {exc} ########")
    names = [f"{found}/monitoring.coreos.com_{kind}.yaml" for kind in MONITORING_CRDS]
    plane.kubectl("apply", "--server-side", *[arg for n in names for arg in ("-f", n)])
    for kind in MONITORING_CRDS:
        crd = f"crd/{kind}.monitoring.coreos.com"
        plane.kubectl("wait", "--for=condition=Established", crd, "--timeout=60s")
    yield
    plane.kubectl("delete", *[f"crd/{k}.monitoring.coreos.com" for k in MONITORING_CRDS])


@pytest.fixture(scope="module")
def monitored(
    plane: Cluster, sim: Simulator, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    """A release installed with its ServiceMonitor and PrometheusRule (the real API server
    validates both against the Prometheus Operator's schemas), its operator running, and a
    Prometheus scraping it every second with the release's rules."""
    prometheus_bin = _prometheus_bin()
    workdir = tmp_path_factory.mktemp("monitoring")
    team = unique("team")
    plane.kubectl("create", "namespace", team)
    release = Release(plane, unique("monitoring-system"), name=unique("tso"))
    release.install(
        "--set", "thingspace.resyncSeconds=2",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
        *FAST_ALERTS,
    )  # fmt: skip
    operator = OperatorProcess(release, sim, workdir).start()
    prometheus = _start_prometheus(prometheus_bin, workdir, release, operator)
    try:
        yield Monitored(plane, sim, release, team, operator, prometheus.url)
    finally:
        prometheus.process.terminate()
        prometheus.process.wait(20)
        remove_test_objects(plane, [team], release.namespace, operator_running=True)
        operator.stop()
        release.uninstall()


def _prometheus_bin() -> Path:
    try:
        return monitoring_tools.prometheus_bin()
    except monitoring_tools.Unavailable as exc:
        pytest.skip(f"######## prometheus not available: {exc} ########")


@dataclass
class Prometheus:
    process: "subprocess.Popen[bytes]"
    url: str


def _start_prometheus(
    binary: Path, workdir: Path, release: Release, operator: OperatorProcess
) -> Prometheus:
    """Prometheus on 127.0.0.1, with the PrometheusRule the API server stored and a scrape
    job named as the ServiceMonitor's would be (its Service's name, the release namespace)."""
    stored = release.plane.kubectl_json(
        "-n", release.namespace, "get", "prometheusrule", f"{release.name}-thingspace-operator"
    )
    (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": stored["spec"]["groups"]}))
    target = f"127.0.0.1:{operator.env['THINGSPACE_METRICS_PORT']}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": f"{release.name}-thingspace-operator-metrics",
                "static_configs": [
                    {"targets": [target], "labels": {"namespace": release.namespace}}
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary / "prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(workdir / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(process, f"http://127.0.0.1:{port}")
    eventually(lambda: _get_json(f"{server.url}/api/v1/status/runtimeinfo"), 30, "Prometheus up")
    return server


def test_the_api_server_stores_the_charts_monitoring_objects(monitored: Monitored) -> None:
    namespace, name = monitored.release.namespace, f"{monitored.release.name}-thingspace-operator"
    monitor = monitored.plane.kubectl_json("-n", namespace, "get", "servicemonitor", name)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    rule = monitored.plane.kubectl_json("-n", namespace, "get", "prometheusrule", name)
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == len(yaml.safe_load((CHART / "files" / "alerts.yaml").read_text()))
    # The API server applies the Prometheus Operator's schema: a bad duration is refused.
    broken = {**rule, "metadata": {"name": unique("broken"), "namespace": namespace}}
    broken["spec"] = json.loads(json.dumps(rule["spec"]))
    broken["spec"]["groups"][0]["rules"][0]["for"] = "soon"
    refused = apply(monitored.plane, broken, check=False)
    assert refused.returncode != 0
    assert "for" in refused.stderr


def test_a_rejected_login_fires_its_alerts_until_the_secret_is_fixed(
    monitored: Monitored,
) -> None:
    plane, namespace = monitored.plane, monitored.release.namespace
    wrong = {**DEMO_CREDENTIALS, "username": "alerted-user", "password": "wrong-for-alerts"}
    apply(plane, secret_manifest("alerted-credentials", namespace, wrong))
    account = unique("alerted")
    manifest = account_manifest(account, "0000771177-00001", namespace, "x")
    manifest["spec"]["credentialsSecretRef"]["name"] = "alerted-credentials"
    manifest["spec"]["namespaces"] = [monitored.team]
    apply(plane, manifest, by_ref("qos-alerted", monitored.team, account, "QoS"))
    wanted = {"ThingSpaceLoginRejected", "ThingSpaceAccountNotAuthenticated"}
    firing = eventually(lambda: wanted <= set(monitored.firing()) and monitored.firing(), 90)
    for name in wanted:
        notes = firing[name]["annotations"]
        assert "<no value>" not in notes["description"]
        assert monitored.release.namespace in notes["description"]
        assert notes["runbook_url"].endswith(f"#{name.lower()}")
        assert "wrong-for-alerts" not in json.dumps(firing[name])
    assert firing["ThingSpaceAccountNotAuthenticated"]["labels"]["reason"] == "AuthenticationFailed"

    apply(plane, secret_manifest("alerted-credentials", namespace, DEMO_CREDENTIALS))
    eventually(lambda: not wanted & set(monitored.firing()), 90, "the alerts resolve")
    plane.kubectl("-n", monitored.team, "delete", "tscb", "qos-alerted", "--timeout=60s")
    plane.kubectl("delete", "tsa", account)


def test_thingspace_failures_fire_the_error_alert_until_they_stop(monitored: Monitored) -> None:
    plane, sim = monitored.plane, monitored.sim
    apply(plane, secret_manifest("thingspace-credentials", monitored.team, DEMO_CREDENTIALS))
    apply(plane, callback_manifest("qos-errors", monitored.team, "0000881188-00001"))
    wait_ready(plane, monitored.team, "qos-errors")
    until_cleared = {"endpoint": "list", "kind": "status", "status": 503, "count": None}
    sim.request("POST", "faults", until_cleared)
    try:
        alert = eventually(lambda: monitored.firing().get("ThingSpaceAPIErrors"), 90, "firing")
        assert alert["labels"]["endpoint"] == "list"
    finally:
        sim.request("DELETE", "faults")
    eventually(lambda: "ThingSpaceAPIErrors" not in monitored.firing(), 90, "resolved")


def test_every_dashboard_query_returns_data(monitored: Monitored) -> None:
    """Every panel's query, with the dashboard's variables set to this release, against
    the Prometheus scraping it: a mistyped metric or label would return nothing."""
    monitored.sim.request(
        "POST", "faults", {"endpoint": "list", "kind": "rate_limit", "retry_after": 1, "count": 2}
    )
    variables = {
        "$namespace": monitored.release.namespace,
        "$job": f"{monitored.release.name}-thingspace-operator-metrics",
        "${datasource}": "",
    }
    queries = _dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert queries
    empty: list[str] = []

    def all_answer() -> bool:
        empty.clear()
        for query in queries:
            promql = query
            for name, value in variables.items():
                promql = promql.replace(name, value)
            if not monitored.query(promql):
                empty.append(query)
        return not empty

    try:
        eventually(all_answer, 120, "every dashboard query answers")
    except AssertionError as failure:
        raise AssertionError(f"queries without data: {empty}") from failure


def _dashboard_queries(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and node["expr"].strip():
            found.append(node["expr"])
        for value in node.values():
            found += _dashboard_queries(value)
    elif isinstance(node, list):
        for value in node:
            found += _dashboard_queries(value)
    return [q for q in found if not re.fullmatch(r"label_values\(.*\)", q)]
