#!/usr/bin/env python3
"""Generate charts/thingspace-operator/files/dashboard.json, the Grafana dashboard of the
operator's Prometheus metrics, with the Grafana Foundation SDK (grafana-foundation-sdk).

The chart ships it as a ConfigMap for Grafana's dashboard sidecar (grafana.dashboards.*);
docs/dashboard.json links to it for a manual import. Run after changing this file; a test
fails when the committed dashboard is stale.
"""

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

CHART = Path(__file__).resolve().parents[1] / "charts" / "thingspace-operator"
TARGET = CHART / "files" / "dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Every query selects the chosen release's series with this.
SELECTOR = 'namespace="$namespace", job="$job"'

Panel = stat.Panel | timeseries.Panel


def selector(extra: str = "") -> str:
    return "{" + SELECTOR + (f", {extra}" if extra else "") + "}"


def query(expr: str, legend: str = "", ref_id: str = "A") -> Dataquery:
    built = Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    return built.legend_format(legend) if legend else built


def thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def graph(title: str, description: str, width: int, unit: str, *queries: Dataquery) -> Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .unit(unit)
        .min(0)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    return panel.targets(list(queries))


def single(
    title: str,
    description: str,
    width: int,
    *queries: Dataquery,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    height: int = 5,
) -> Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .unit("none")
        .decimals(0)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.AUTO)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .targets(list(queries))
    )


def rows() -> list[tuple[str, list[Panel]]]:
    requests = f"rate(thingspace_api_requests_total{selector()}[5m])"
    ready, synced = selector('condition="Ready"'), selector('condition="Synced"')
    failed = selector('outcome=~"unavailable|error"')
    rate_limited = selector('outcome="rate_limited"')
    buckets = f"rate(thingspace_api_request_duration_seconds_bucket{selector()}[5m])"
    return [
        (
            "Fleet",
            [
                single(
                    "Callbacks Ready",
                    "ThingSpaceCallbacks by the status of their Ready condition.",
                    6,
                    query(
                        f"sum by (status) (thingspace_callbacks{ready})",
                        "{{status}}",
                    ),
                ),
                single(
                    "Callbacks Synced",
                    "ThingSpaceCallbacks by the status of their Synced condition.",
                    6,
                    query(
                        f"sum by (status) (thingspace_callbacks{synced})",
                        "{{status}}",
                    ),
                ),
                single(
                    "Accounts",
                    "ThingSpaceAccounts by Ready status and reason.",
                    6,
                    query(
                        f"sum by (status, reason) (thingspace_accounts{selector()})",
                        "{{status}} {{reason}}",
                    ),
                ),
                single(
                    "Registrations managed",
                    "Callback registrations the operator holds as declared.",
                    3,
                    query(f"sum(thingspace_registrations_managed{selector()})", "managed"),
                ),
                single(
                    "Rejected credentials",
                    "Credential Secrets whose app key or UWS login ThingSpace rejected: no "
                    "login is tried with them until they change.",
                    3,
                    query(f"max(thingspace_rejected_credentials{selector()})", "rejected"),
                    steps=((None, "green"), (1, "red")),
                ),
            ],
        ),
        (
            "ThingSpace calls",
            [
                graph(
                    "Requests",
                    "ThingSpace API calls per second by endpoint and outcome.",
                    12,
                    "reqps",
                    query(f"sum by (endpoint, outcome) ({requests})", "{{endpoint}} {{outcome}}"),
                ),
                graph(
                    "Error ratio",
                    "Share of ThingSpace calls per endpoint that failed as unavailable or "
                    "with an unexpected error.",
                    12,
                    "percentunit",
                    query(
                        "sum by (endpoint) (rate(thingspace_api_requests_total"
                        f"{failed}[5m]))"
                        f" / sum by (endpoint) ({requests})",
                        "{{endpoint}}",
                    ),
                ),
                graph(
                    "Rate limited",
                    "ThingSpace calls per second per endpoint that ThingSpace rate limited.",
                    12,
                    "reqps",
                    query(
                        "sum by (endpoint) (rate(thingspace_api_requests_total"
                        f"{rate_limited}[5m]))",
                        "{{endpoint}}",
                    ),
                ),
                graph(
                    "Latency",
                    "Duration of ThingSpace calls per endpoint: 50th, 95th and 99th percentile.",
                    12,
                    "s",
                    *(
                        query(
                            f"histogram_quantile({q}, sum by (le, endpoint) ({buckets}))",
                            f"p{p} {{{{endpoint}}}}",
                            ref_id,
                        )
                        for q, p, ref_id in (("0.5", 50, "A"), ("0.95", 95, "B"), ("0.99", 99, "C"))
                    ),
                ),
            ],
        ),
        (
            "Logins and drift",
            [
                graph(
                    "Logins",
                    "ThingSpace session logins in the last hour by result (ok, rejected, error).",
                    8,
                    "none",
                    query(
                        f"sum by (result) (increase(thingspace_logins_total{selector()}[1h]))",
                        "{{result}}",
                    ),
                ),
                graph(
                    "Drift corrections",
                    "Registrations re-registered in the last hour because the live one had "
                    "drifted.",
                    8,
                    "none",
                    query(
                        f"sum(increase(thingspace_drift_corrections_total{selector()}[1h]))",
                        "corrections",
                    ),
                ),
                graph(
                    "Registrations pruned",
                    "Registrations an Authoritative ThingSpaceAccount deregistered in the last "
                    "hour because no ThingSpaceCallback declares them.",
                    8,
                    "none",
                    query(
                        f"sum(increase(thingspace_registrations_pruned_total{selector()}[1h]))",
                        "pruned",
                    ),
                ),
            ],
        ),
        (
            "Reconciles",
            [
                graph(
                    "Reconciles by trigger",
                    "Reconciles per second by what triggered them.",
                    12,
                    "ops",
                    query(
                        f"sum by (trigger) (rate(thingspace_reconciles_total{selector()}[5m]))",
                        "{{trigger}}",
                    ),
                ),
                graph(
                    "Reconciles by result",
                    "Reconciles per second by the Synced reason they ended with.",
                    12,
                    "ops",
                    query(
                        f"sum by (result) (rate(thingspace_reconciles_total{selector()}[5m]))",
                        "{{result}}",
                    ),
                ),
            ],
        ),
        (
            "Leader and pods",
            [
                graph(
                    "Leader",
                    "1 on the pod that acts (holds the leader Lease), 0 on standbys.",
                    8,
                    "none",
                    query(f"thingspace_leader{selector()}", "{{instance}}"),
                ),
                single(
                    "Leaders",
                    "Pods acting as leader: exactly 1 when healthy.",
                    4,
                    query(f"sum(thingspace_leader{selector()})", "leaders"),
                    steps=((None, "red"), (1, "green"), (2, "red")),
                    height=8,
                ),
                graph(
                    "Memory",
                    "Resident memory of each operator pod.",
                    12,
                    "bytes",
                    query(f"process_resident_memory_bytes{selector()}", "{{instance}}"),
                ),
                graph(
                    "CPU",
                    "CPU used by each operator pod, in cores.",
                    12,
                    "none",
                    query(f"rate(process_cpu_seconds_total{selector()}[5m])", "{{instance}}"),
                ),
                graph(
                    "Restarts",
                    "Process restarts of each operator pod in the last hour.",
                    12,
                    "none",
                    query(f"changes(process_start_time_seconds{selector()}[1h])", "{{instance}}"),
                ),
            ],
        ),
    ]


def build() -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard("ThingSpace operator")
        .uid("thingspace-operator")
        .description("Callbacks, accounts, ThingSpace calls, reconciles and pods of the operator.")
        .tags(["thingspace", "operator"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone(common.TimeZoneBrowser)
        .refresh("1m")
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
        )
        .with_variable(
            dashboard_builders.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query("label_values(thingspace_leader, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dashboard_builders.QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query('label_values(thingspace_leader{namespace="$namespace"}, job)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
    )
    panel_id = 0
    for title, panels in rows():
        panel_id += 1
        board = board.with_row(dashboard_builders.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


def generate() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(
            0
            if TARGET.read_text() == generate()
            else "dashboard.json is stale: run python tools/dashboard.py"
        )
    TARGET.write_text(generate())
