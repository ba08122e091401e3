"""Show resources the way ``kubectl get`` does, from the CRD's additionalPrinterColumns."""

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any

_FILTER = re.compile(r'^(\w+)\[\?\(@\.(\w+)=="([^"]*)"\)\]$')
_SEGMENT = re.compile(r'\w+\[\?\(@\.\w+=="[^"]*"\)\]|\w+')


def json_path(obj: Any, path: str) -> Any:
    """The small JSONPath subset printer columns use: .a.b and .list[?(@.k=="v")].c"""
    current = obj
    for part in _SEGMENT.findall(path):
        match = _FILTER.match(part)
        if match:
            key, field, value = match.groups()
            items = (current or {}).get(key) or []
            current = next((i for i in items if str(i.get(field)) == value), None)
        else:
            current = (current or {}).get(part) if isinstance(current, Mapping) else None
        if current is None:
            return None
    return current


def _age(timestamp: str, now: datetime.datetime) -> str:
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def table(crd: Mapping[str, Any], objects: Iterable[Mapping[str, Any]]) -> str:
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    columns = [c for c in version.get("additionalPrinterColumns", []) if not c.get("priority")]
    now = datetime.datetime.now(datetime.UTC)
    header = ["NAME", *(c["name"].upper() for c in columns)]
    rows = [header]
    for obj in objects:
        row = [obj["metadata"]["name"]]
        for column in columns:
            value = json_path(obj, column["jsonPath"])
            if value and column.get("type") == "date":
                value = _age(str(value), now)
            row.append("" if value is None else str(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
