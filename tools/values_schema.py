#!/usr/bin/env python3
"""Generate charts/thingspace-operator/values.schema.json from values.yaml.

Types come from the defaults, descriptions from the ``# --`` comments; unknown keys are
rejected everywhere except in the free-form Kubernetes fields listed in FREE_FORM.
Run after changing values.yaml; a test fails when the committed schema is stale.
"""

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "thingspace-operator"
FREE_FORM = {
    "imagePullSecrets",
    "resources",
    "podSecurityContext",
    "securityContext",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
    "tolerations",
    "affinity",
    "extraEnv",
    "serviceAccount.annotations",
    "metrics.serviceMonitor.labels",
    "metrics.prometheusRule.labels",
    "metrics.prometheusRule.alertLabels",
    "grafana.dashboards.annotations",
    "simulator.resources",
    "simulator.networkPolicy.from",
}
ENUMS = {
    "logging.level": ["DEBUG", "INFO", "WARNING", "ERROR"],
    "logging.format": ["text", "json"],
    "image.pullPolicy": ["Always", "IfNotPresent", "Never"],
}
POSITIVE = {
    "thingspace.resyncSeconds",
    "thingspace.requestTimeoutSeconds",
    "thingspace.maxCallsPerSecondPerAccount",
    "thingspace.retryBaseSeconds",
    "thingspace.retryMaxSeconds",
}
#: Settings of each alert (metrics.prometheusRule.alerts.<name>.<setting>).
ALERT_SETTINGS = {
    "threshold": {"type": "number", "minimum": 0},
    "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
    "window": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
}
#: Ports and their lowest allowed number: a non-root container cannot bind one below 1024.
PORTS = {"metrics.port": 1, "health.port": 1, "simulator.port": 1024}


def descriptions(text: str) -> dict[str, str]:
    """Map dotted keys to the ``# --`` comment right above them (plain ``#`` lines right
    after it continue it)."""
    found, stack, pending = {}, [], None
    for line in text.splitlines():
        comment = re.match(r"\s*# -- (.*)", line)
        if comment:
            pending = comment.group(1)
            continue
        more = re.match(r"\s*# (.*)", line)
        if more and pending:
            pending = f"{pending} {more.group(1)}"
            continue
        key = re.match(r"(\s*)([A-Za-z][\w]*):", line)
        if not key:
            continue
        depth = len(key.group(1)) // 2
        stack = [*stack[:depth], key.group(2)]
        if pending:
            found[".".join(stack)] = pending
        pending = None
    return found


def schema_for(value: Any, path: str, notes: dict[str, str]) -> dict[str, Any]:
    node: dict[str, Any]
    if path in FREE_FORM:
        node = {"type": "array"} if isinstance(value, list) else {"type": "object"}
    elif isinstance(value, bool):
        node = {"type": "boolean"}
    elif isinstance(value, int):
        node = (
            {"type": "integer", "minimum": PORTS[path], "maximum": 65535}
            if path in PORTS
            else {"type": "integer", "minimum": 1}
        )
    elif isinstance(value, float):
        node = {"type": "number", "exclusiveMinimum": 0}
    elif isinstance(value, str):
        node = {"type": "string"}
    elif isinstance(value, list):
        node = {"type": "array", "items": {"type": "string"}}
    else:
        properties = {
            key: schema_for(child, f"{path}.{key}" if path else key, notes)
            for key, child in value.items()
        }
        if not path:  # Helm gives every subchart the parent's "global" values
            properties["global"] = {"type": "object"}
        node = {"type": "object", "additionalProperties": False, "properties": properties}
    alert_setting = re.fullmatch(r"metrics\.prometheusRule\.alerts\.\w+\.(\w+)", path)
    if alert_setting and alert_setting.group(1) in ALERT_SETTINGS:
        node = dict(ALERT_SETTINGS[alert_setting.group(1)])
    if path in ENUMS:
        node["enum"] = ENUMS[path]
    if path in POSITIVE:
        node = {"type": "number", "exclusiveMinimum": 0}
    if path in notes:
        node["description"] = notes[path]
    return node


def generate() -> str:
    text = (CHART / "values.yaml").read_text()
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        **schema_for(yaml.safe_load(text), "", descriptions(text)),
    }
    return json.dumps(schema, indent=2) + "\n"


if __name__ == "__main__":
    target = CHART / "values.schema.json"
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if target.read_text() == generate() else "values.schema.json is stale")
    target.write_text(generate())
