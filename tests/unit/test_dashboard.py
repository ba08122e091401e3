"""The Grafana dashboard: charts/thingspace-operator/files/dashboard.json is what
tools/dashboard.py generates, loads back into the Grafana Foundation SDK's model, queries
only the operator's metrics of the chosen release, and ships in the chart (and docs/)."""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus, stat, timeseries
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel
from tools import dashboard as dashboard_tool

from tests.chart.test_chart import by_kind, render

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "dashboard.py"
DASHBOARD = ROOT / "charts" / "thingspace-operator" / "files" / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'namespace="$namespace", job="$job"'
METRICS = {
    "thingspace_callbacks",
    "thingspace_registrations_managed",
    "thingspace_accounts",
    "thingspace_rejected_credentials",
    "thingspace_api_requests_total",
    "thingspace_api_request_duration_seconds_bucket",
    "thingspace_logins_total",
    "thingspace_drift_corrections_total",
    "thingspace_registrations_pruned_total",
    "thingspace_reconciles_total",
    "thingspace_leader",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
}
ENABLED = ["--set", "grafana.dashboards.enabled=true"]


def tool() -> ModuleType:
    return dashboard_tool


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def data_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == tool().generate(), "stale: run python tools/dashboard.py"


def test_check_fails_on_a_stale_dashboard_naming_the_fix(tmp_path: Path) -> None:
    """The real command, run from a copy of the tree whose dashboard.json is stale."""
    copy = tmp_path / "tools" / "dashboard.py"
    copy.parent.mkdir()
    copy.write_text(TOOL.read_text())
    stale = tmp_path / DASHBOARD.relative_to(ROOT)
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    result = subprocess.run(
        [sys.executable, str(copy), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "dashboard.json is stale: run python tools/dashboard.py" in result.stderr
    current = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert current.returncode == 0, current.stderr


def test_generation_is_deterministic() -> None:
    module = tool()
    assert module.generate() == module.generate()
    assert DASHBOARD.read_text().endswith("}\n")


def test_the_sdk_model_loads_it_back_unchanged_with_typed_panels_and_queries() -> None:
    register_default_plugins()  # so panels' options and queries decode to their types
    model = Dashboard.from_json(dashboard())
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == dashboard()
    assert model.panels
    for panel in model.panels:
        if isinstance(panel, RowPanel):
            continue
        assert isinstance(panel, Panel)
        assert isinstance(panel.options, stat.Options | timeseries.Options), panel.title
        assert panel.targets
        assert all(isinstance(target, prometheus.Dataquery) for target in panel.targets)


def test_identity_and_variables() -> None:
    board = dashboard()
    assert board["title"] == "ThingSpace operator"
    assert board["uid"] == "thingspace-operator"
    assert board["tags"] == ["thingspace", "operator"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["query"] == "label_values(thingspace_leader, namespace)"
    assert (
        variables["job"]["query"] == 'label_values(thingspace_leader{namespace="$namespace"}, job)'
    )
    for name in ("namespace", "job"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE


def test_rows() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == [
        "Fleet",
        "ThingSpace calls",
        "Logins and drift",
        "Reconciles",
        "Leader and pods",
    ]


def test_every_panel_has_a_title_a_description_and_queries_on_the_chosen_datasource() -> None:
    panels = data_panels()
    assert len(panels) >= 18
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        assert panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_query_selects_the_chosen_release_and_only_known_metrics() -> None:
    used = set()
    for panel in data_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            selectors = re.findall(r"\{([^}]*)\}", expr)
            assert selectors, expr
            assert all(found.startswith(SELECTOR) for found in selectors), expr
            names = set(re.findall(r"\b(?:thingspace|process)_[a-z0-9_:]*", expr))
            assert names <= METRICS, names - METRICS
            used |= names
    assert used == METRICS


@pytest.mark.parametrize(
    ("title", "expr"),
    [
        ("Callbacks Ready", 'sum by (status) (thingspace_callbacks{SEL, condition="Ready"})'),
        ("Callbacks Synced", 'sum by (status) (thingspace_callbacks{SEL, condition="Synced"})'),
        ("Accounts", "sum by (status, reason) (thingspace_accounts{SEL})"),
        ("Rejected credentials", "max(thingspace_rejected_credentials{SEL})"),
        (
            "Requests",
            "sum by (endpoint, outcome) (rate(thingspace_api_requests_total{SEL}[5m]))",
        ),
        ("Logins", "sum by (result) (increase(thingspace_logins_total{SEL}[1h]))"),
        ("Reconciles by trigger", "sum by (trigger) (rate(thingspace_reconciles_total{SEL}[5m]))"),
        ("Restarts", "changes(process_start_time_seconds{SEL}[1h])"),
    ],
)
def test_panel_queries(title: str, expr: str) -> None:
    (panel,) = [panel for panel in data_panels() if panel["title"] == title]
    assert expr.replace("SEL", SELECTOR) in [target["expr"] for target in panel["targets"]]


def test_latency_shows_three_percentiles_per_endpoint() -> None:
    (panel,) = [panel for panel in data_panels() if panel["title"] == "Latency"]
    exprs = [target["expr"] for target in panel["targets"]]
    quantiles = [re.findall(r"^histogram_quantile\(([0-9.]+),", expr) for expr in exprs]
    assert quantiles == [["0.5"], ["0.95"], ["0.99"]]
    assert all("sum by (le, endpoint)" in expr for expr in exprs)
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_per_pod_panels_are_legended_by_instance() -> None:
    for title in ("Leader", "Memory", "CPU", "Restarts"):
        (panel,) = [panel for panel in data_panels() if panel["title"] == title]
        assert [target["legendFormat"] for target in panel["targets"]] == ["{{instance}}"]
    (memory,) = [panel for panel in data_panels() if panel["title"] == "Memory"]
    assert memory["fieldConfig"]["defaults"]["unit"] == "bytes"


def test_docs_dashboard_is_a_relative_symlink_to_the_chart_file() -> None:
    link = ROOT / "docs" / "dashboard.json"
    assert link.is_symlink()
    assert not Path(link.readlink()).is_absolute()
    assert link.resolve() == DASHBOARD.resolve()


def test_chart_ships_the_dashboard_in_a_configmap_for_the_grafana_sidecar() -> None:
    (configmap,) = by_kind(render(*ENABLED), "ConfigMap")
    metadata = configmap["metadata"]
    assert metadata["name"] == "tso-thingspace-operator-dashboard"
    assert metadata["namespace"] == "ops"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/instance"] == "tso"
    assert "annotations" not in metadata
    assert json.loads(configmap["data"]["thingspace-operator.json"]) == dashboard()


def test_dashboard_configmap_namespace_label_and_annotations_are_configurable() -> None:
    (configmap,) = by_kind(
        render(
            *ENABLED,
            "--set",
            "grafana.dashboards.namespace=monitoring",
            "--set",
            "grafana.dashboards.label=dashboards",
            "--set",
            "grafana.dashboards.labelValue=thingspace",
            "--set",
            "grafana.dashboards.annotations.grafana_folder=ThingSpace",
        ),
        "ConfigMap",
    )
    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "thingspace"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "ThingSpace"}


def test_no_dashboard_configmap_by_default() -> None:
    assert by_kind(render(), "ConfigMap") == []
