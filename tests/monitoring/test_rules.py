"""The chart's alerts, as the chart renders them, through Prometheus' own promtool:
``check rules`` (syntax, annotation templates) and ``test rules`` (alerts_test.yaml: each
alert fires on the series that should trigger it, and stays silent on a healthy series
and on the edge just below its threshold or its ``for``)."""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import by_kind, render

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
ALERTS = ROOT / "charts" / "thingspace-operator" / "files" / "alerts.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def rules(*options: str) -> list[dict[str, Any]]:
    (rule,) = by_kind(render("--set", "metrics.prometheusRule.enabled=true", *options),
                      "PrometheusRule")  # fmt: skip
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def promtool(prometheus_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_bin / "promtool"), *args], capture_output=True, text=True, check=False
    )


def test_the_rules_pass_promtool_check(prometheus_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "t", "rules": rules()}]})
    )
    done = promtool(prometheus_bin, "check", "rules", str(tmp_path / "rules.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(yaml.safe_load(ALERTS.read_text()))} rules found" in done.stdout


def test_each_alert_fires_when_it_should_and_only_then(
    prometheus_bin: Path, tmp_path: Path
) -> None:
    # promtool compares annotations too; their wording is checked below and by the real
    # Prometheus test (tests/e2e/test_monitoring.py), here only when each alert fires.
    bare = [{k: v for k, v in rule.items() if k != "annotations"} for rule in rules()]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": bare}]}))
    (tmp_path / "alerts_test.yaml").write_text((HERE / "alerts_test.yaml").read_text())
    done = promtool(prometheus_bin, "test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    names = {f"ThingSpace{name}" for name in yaml.safe_load(ALERTS.read_text())}
    assert {c["alertname"] for c in checks if c["exp_alerts"]} == names
    assert {c["alertname"] for c in checks if not c["exp_alerts"]} == names


def test_every_alert_says_what_and_links_its_runbook() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.strip().lower().replace(" ", "-"))
        for heading in re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }
    for rule in rules():
        notes = rule["annotations"]
        assert notes["summary"], rule["alert"]
        assert notes["description"], rule["alert"]
        page, anchor = notes["runbook_url"].split("#")
        assert page.endswith("/docs/runbooks.md")
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/runbooks.md has no section {rule['alert']}"


def test_per_alert_settings_and_labels_come_from_values() -> None:
    found = {
        rule["alert"]: rule
        for rule in rules(
            "--set-json", "metrics.prometheusRule.alerts.APIErrors.threshold=0.25",
            "--set", "metrics.prometheusRule.alerts.APIErrors.for=30m",
            "--set", "metrics.prometheusRule.alerts.APIErrors.window=20s",
            "--set", "metrics.prometheusRule.alerts.APIErrors.severity=critical",
            "--set", "metrics.prometheusRule.alerts.AuthoritativePruned.enabled=false",
            "--set", "metrics.prometheusRule.alertLabels.team=iot",
            "--set", "metrics.prometheusRule.selector=job=\"custom\"",
        )
    }  # fmt: skip
    assert "ThingSpaceAuthoritativePruned" not in found
    errors = found["ThingSpaceAPIErrors"]
    assert errors["for"] == "30m"
    assert errors["labels"] == {"severity": "critical", "team": "iot"}
    assert errors["expr"].endswith("> 0.25")
    assert "[20s]" in errors["expr"]
    assert all('{job="custom"' in rule["expr"] for rule in found.values())
    placeholders = re.compile("SELECTOR|THRESHOLD|WINDOW")
    assert not [r["alert"] for r in found.values() if placeholders.search(r["expr"])]


@pytest.mark.parametrize("bad", ["for=soon", "threshold=-1"])
def test_a_malformed_alert_setting_is_refused_by_the_schema(bad: str) -> None:
    from tests.chart.test_chart import helm

    done = helm("template", "tso", str(ROOT / "charts" / "thingspace-operator"),
                "--set", f"metrics.prometheusRule.alerts.NoLeader.{bad}")  # fmt: skip
    assert done.returncode != 0
    assert "NoLeader" in done.stderr
