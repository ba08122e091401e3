"""Rejected credentials, remembered across processes on the leader's Lease.

A rejected UWS login must never be tried again with the same values: five failures lock
the user. One process remembers that in memory (``RejectedValues``); the next leader (a
handover, a restart, an upgrade) reads it from the Lease annotation
``thingspace.io/rejected-credentials`` before its first ThingSpace call. The annotation
names Secrets and their resourceVersion, never a value or anything derived from one:

    {"team-a/thingspace-credentials": {"resourceVersion": "4711", "stage": "login"}}

Any change of the Secret (a new resourceVersion) allows one new attempt, as a fix would.
"""

import json
import logging
from collections.abc import Mapping

from ..thingspace.client import RejectedValues
from ..thingspace.errors import AuthenticationFailed
from .leader import LeaderElector

log = logging.getLogger(__name__)

ANNOTATION = "thingspace.io/rejected-credentials"
STAGES = ("oauth", "login")


def render(rejected: RejectedValues) -> str:
    """The annotation's value ("" when nothing is rejected: the annotation goes)."""
    entries = {
        origin: {"resourceVersion": version, "stage": failure.stage}
        for origin, (version, failure) in sorted(rejected.by_origin.items())
    }
    return json.dumps(entries, separators=(",", ":")) if entries else ""


def parse(value: str, lease: str) -> dict[str, tuple[str, AuthenticationFailed]]:
    """What an earlier process recorded; an entry it cannot read is skipped (logged)."""
    try:
        entries = json.loads(value) if value else {}
    except ValueError:
        log.warning("Lease %s: annotation %s is not JSON; ignored", lease, ANNOTATION)
        return {}
    found = {}
    for origin, entry in entries.items() if isinstance(entries, Mapping) else ():
        version = entry.get("resourceVersion") if isinstance(entry, Mapping) else None
        stage = entry.get("stage") if isinstance(entry, Mapping) else None
        if isinstance(version, str) and version and stage in STAGES:
            found[str(origin)] = (version, recorded_failure(str(stage), str(origin), lease))
        else:
            log.warning("Lease %s: annotation %s: unreadable entry ignored", lease, ANNOTATION)
    return found


def recorded_failure(stage: str, origin: str, lease: str) -> AuthenticationFailed:
    what = "app key and secret" if stage == "oauth" else "UWS login"
    return AuthenticationFailed(
        stage,
        f"ThingSpace rejected the {what} of Secret {origin} at this version before "
        f"(an earlier operator process recorded it on Lease {lease})",
    )


def carry_over(elector: LeaderElector, rejected: RejectedValues) -> None:
    """Make the rejections the Lease records this process's own, and record its own there
    from now on. Called once the Lease is held, before the first ThingSpace call."""
    lease = "/".join(elector.names)
    annotations = elector.observed.annotations if elector.observed is not None else {}
    inherited = parse(annotations.get(ANNOTATION, ""), lease)
    for origin, (version, failure) in inherited.items():
        rejected.by_origin.setdefault(origin, (version, failure))
    if inherited:
        log.info(
            "Lease %s records rejected credentials in Secret(s) %s: no login with them "
            "until they change",
            lease,
            ", ".join(sorted(inherited)),
        )
    rejected.on_change = lambda: elector.annotate(ANNOTATION, render(rejected))
