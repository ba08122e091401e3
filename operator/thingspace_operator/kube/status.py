"""Status conditions in the ``metav1.Condition`` shape, and the status patch built from them.

``lastTransitionTime`` moves only when a condition's ``status`` flips, so it tells when a
resource last became (un)ready, not when it was last looked at.
"""

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def utc_timestamp(now: datetime.datetime | None = None) -> str:
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def older_than(timestamp: str | None, seconds: float) -> bool:
    """Whether the status timestamp is missing, unreadable or at least ``seconds`` old.
    Any RFC 3339 form is read (someone else may have written it): fractions, offsets."""
    if not isinstance(timestamp, str) or not timestamp:
        return True
    try:
        then = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return True  # rewritten with the operator's own form at the next status write
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds() >= seconds


def merge_conditions(
    current: Iterable[Mapping[str, Any]],
    updates: Iterable[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``current``, keeping lastTransitionTime unless status flips."""
    merged = {str(c.get("type")): dict(c) for c in current if c.get("type")}
    for update in updates:
        previous = merged.get(update.type, {})
        flipped = previous.get("status") != update.status
        merged[update.type] = {
            "type": str(update.type),
            "status": str(update.status),
            "reason": str(update.reason),
            "message": update.message,
            "lastTransitionTime": now if flipped else previous.get("lastTransitionTime", now),
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    return list(merged.values())


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    """The condition of ``type_`` in a status, or an empty mapping."""
    for item in status.get("conditions") or ():
        if item.get("type") == type_:
            return dict(item)
    return {}


def changed_fields(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs: only these are patched."""
    return {key: value for key, value in desired.items() if current.get(key) != value}
