"""The drift sweep's bookkeeping: what is due, who owns what, one check per resource."""

import asyncio
from types import SimpleNamespace
from typing import Any

from tests.conftest import quiet_period
from thingspace_operator.drift import DriftSweep, Tracked, window_start
from thingspace_operator.handlers import _rival

PERIOD = 10.0


def body(name: str, account: str = "0000000001-00001", service: str = "QoS", **meta: Any) -> dict:
    return {
        "metadata": {
            "namespace": "iot",
            "name": name,
            "generation": 1,
            "creationTimestamp": meta.pop("created", "2026-01-01T00:00:00Z"),
            **meta,
        },
        "spec": {"accountName": account, "serviceName": service, "url": "https://x.example/"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def settled(name: str, **meta: Any) -> dict:
    """A resource a handler finished with before a restart: its status has its generation."""
    raw = body(name, **meta)
    raw["status"]["observedGeneration"] = raw["metadata"]["generation"]
    return raw


CONTESTED = [
    body("old", created="2026-01-01T00:00:00Z"),
    body("young", created="2026-02-01T00:00:00Z"),
]


def test_window_start_is_aligned_to_the_period() -> None:
    assert window_start(PERIOD, now=1234.5) == 1230.0
    assert window_start(PERIOD, now=1240.0) == 1240.0


def test_tracked_holds_a_detached_copy() -> None:
    raw = body("a")
    tracked = Tracked.of(raw)
    raw["spec"]["url"] = "https://changed.example/"
    raw["status"]["conditions"].clear()
    assert tracked.spec["url"] == "https://x.example/"
    assert tracked.status["conditions"] == [{"type": "Ready", "status": "True"}]
    assert tracked.key == ("iot", "a")
    assert tracked.account == "0000000001-00001"


def test_tracked_keeps_only_the_status_a_check_compares() -> None:
    """kopf's handled configuration repeats the spec: not kept for every resource."""
    raw = body("a")
    raw["status"].update(lastHandledConfiguration='{"spec": {}}', lastHandledReconcileAt="x")
    assert Tracked.of(raw).status == {"conditions": [{"type": "Ready", "status": "True"}]}


def test_due_skips_deleting_new_and_recently_handled_resources() -> None:
    sweep = DriftSweep(PERIOD)
    for name in ("early", "late", "new"):
        sweep.track(body(name))
    sweep.track(body("deleting", deletionTimestamp="2026-01-02T00:00:00Z"))
    sweep.handled("iot", "early", at=90.0)
    sweep.handled("iot", "late", at=100.0)
    sweep.handled("iot", "deleting", at=0.0)
    # "new" waits for its create handler; "late" was reconciled less than a period ago.
    assert [t.name for t in sweep.due(105.0)] == ["early"]
    assert [t.name for t in sweep.due(110.0)] == ["early", "late"]


def test_forget_drops_the_resource_and_its_bookkeeping() -> None:
    sweep = DriftSweep(PERIOD)
    sweep.track(body("a"))
    sweep.handled("iot", "a", at=100.0)
    sweep.forget("iot", "a")
    assert len(sweep) == 0
    sweep.track(body("a"))  # created again: a new resource, its handler has not run
    assert sweep.due(200.0) == []


def test_a_request_is_taken_once() -> None:
    sweep = DriftSweep(PERIOD)
    sweep.request(("iot", "a"), 120.0)
    assert sweep.take_request(("iot", "a")) == 120.0
    assert sweep.take_request(("iot", "a")) is None


def test_a_request_is_dropped_with_its_resource() -> None:
    sweep = DriftSweep(PERIOD)
    sweep.track(body("a"))
    sweep.request(("iot", "a"), 120.0)
    sweep.forget("iot", "a")
    assert sweep.take_request(("iot", "a")) is None


async def test_sweep_checks_each_due_resource_once() -> None:
    sweep = DriftSweep(PERIOD)
    sweep.track(body("old", created="2026-01-01T00:00:00Z"))
    sweep.track(body("young", created="2026-02-01T00:00:00Z"))
    sweep.track(body("other", account="0000000002-00001"))
    for name in ("old", "young", "other"):
        sweep.handled("iot", name, at=0.0)
    seen: list[tuple[str, float]] = []

    async def check(tracked: Tracked, since: float, resuming: bool) -> None:
        seen.append((tracked.name, since))

    await sweep.sweep(check, 200.0)
    assert sorted(seen) == [("old", 200.0), ("other", 200.0), ("young", 200.0)]
    assert sweep.sweeps == 1


def test_drift_checks_take_ownership_from_the_claims_index() -> None:
    """The sweep's checks and the handlers ask the same index who owns a registration."""
    tracked = {t.name: t for t in map(Tracked.of, CONTESTED)}
    index = {tracked["old"].registration: [t.claim for t in tracked.values()]}
    runtime: Any = SimpleNamespace(account_names=dict)
    assert _rival(runtime, index, tracked["old"].registration, tracked["old"].claim) is None
    rival = _rival(runtime, index, tracked["young"].registration, tracked["young"].claim)
    assert rival is not None
    assert rival.ref == "iot/old"
    other = Tracked.of(body("other", account="0000000002-00001"))
    assert _rival(runtime, index, other.registration, other.claim) is None
    assert _rival(runtime, index, None, other.claim) is None  # an invalid spec contests nothing


async def test_one_failing_check_does_not_stop_the_sweep() -> None:
    sweep = DriftSweep(PERIOD)
    for name in ("a", "b", "c"):
        sweep.track(body(name, service=f"Service{name}"))
        sweep.handled("iot", name, at=-PERIOD)
    checked = []

    async def check(tracked: Tracked, since: float, resuming: bool) -> None:
        checked.append(tracked.name)
        if tracked.name == "a":
            raise RuntimeError("boom")

    await sweep.sweep(check, 0.0)
    assert sorted(checked) == ["a", "b", "c"]


def test_a_resource_is_settled_when_its_status_has_its_generation_and_kopf_no_progress() -> None:
    assert Tracked.of(settled("a")).current
    assert not Tracked.of(body("new")).current  # never reported
    changed = settled("changed")
    changed["metadata"]["generation"] = 2  # its spec changed while nobody watched
    assert not Tracked.of(changed).current
    retried = settled("retried", annotations={"kopf.thingspace.io/reconcile": "{}"})
    assert not Tracked.of(retried).current  # kopf retries its handler
    earlier = settled(
        "upgraded", annotations={"kopf.thingspace.io/last-handled-configuration": "{}"}
    )
    assert Tracked.of(earlier).current  # the handled configuration of earlier versions


async def test_the_first_sweep_resumes_settled_resources_and_leaves_new_ones_to_handlers() -> None:
    sweep = DriftSweep(PERIOD)
    sweep.track(settled("unchanged"))
    sweep.track(body("created-meanwhile"))
    sweep.track(settled("deleting", deletionTimestamp="2026-01-02T00:00:00Z"))
    assert sweep.due(100.0) == []  # a later sweep: never handled, not due
    resumed: list[tuple[str, bool]] = []

    async def check(tracked: Tracked, since: float, resuming: bool) -> None:
        resumed.append((tracked.name, resuming))

    await sweep.sweep(check, 100.0, resuming=True)
    assert resumed == [("unchanged", True)]
    # From now on every resource is checked once per period, even one whose handler never
    # ran after all, unless a handler reconciles it meanwhile.
    sweep.handled("iot", "unchanged", at=105.0)
    assert [t.name for t in sweep.due(110.0)] == ["created-meanwhile"]
    assert [t.name for t in sweep.due(115.0)] == ["unchanged", "created-meanwhile"]


async def test_run_resumes_once_the_start_up_is_complete() -> None:
    sweep = DriftSweep(3600.0)
    sweep.track(settled("a"))
    complete = asyncio.Event()
    resumed = asyncio.Event()
    seen: list[tuple[bool, bool]] = []

    async def check(tracked: Tracked, since: float, resuming: bool) -> None:
        seen.append((complete.is_set(), resuming))
        resumed.set()

    sweep.start(check, first=complete.wait)
    try:
        await quiet_period(0.05)  # time enough to check, were it not waiting
        assert not resumed.is_set()
        complete.set()
        await asyncio.wait_for(resumed.wait(), 5)
    finally:
        await sweep.stop()
    assert seen == [(True, True)]  # once, as the resuming sweep, after the start-up
