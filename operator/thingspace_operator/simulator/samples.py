"""Sample callback payloads shipped in ``payloads/``: the service-specific part of a message.

``payloads/<service>.json`` for a service, ``payloads/generic.json`` for the others. The
string values ``${account}``, ``${service}`` and ``${now}`` are filled in when sent.
"""

import json
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

PAYLOADS = files("thingspace_operator.simulator").joinpath("payloads")
GENERIC = "generic"


def utc_now(after_seconds: float = 0.0) -> str:
    """The current time (plus ``after_seconds``) as ThingSpace writes it: ISO 8601, UTC,
    milliseconds."""
    try:
        moment = datetime.now(UTC) + timedelta(seconds=after_seconds)
    except OverflowError:
        moment = datetime.max.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_services() -> list[str]:
    """Services with a payload of their own."""
    names = (item.name.removesuffix(".json") for item in PAYLOADS.iterdir())
    return sorted(name for name in names if name != GENERIC)


def sample_payload(account: str, service: str) -> dict[str, Any]:
    name = service if service in sample_services() else GENERIC
    sample = json.loads(PAYLOADS.joinpath(f"{name}.json").read_text())
    values = {"${account}": account, "${service}": service, "${now}": utc_now()}
    filled: dict[str, Any] = _fill(sample, values)
    return filled


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, str):
        return values.get(value, value)
    return value
