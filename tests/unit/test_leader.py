"""Leader election: the pure rules (who may take a Lease, what a write says), the fence,
the settings, and the health endpoints. The elector's requests themselves run against a real
kube-apiserver in tests/e2e/test_leader_election.py."""

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request

import pytest

from thingspace_operator import runner as runner_module
from thingspace_operator.config import OperatorConfig
from thingspace_operator.kube.leader import Fence, LeaseConfig, LeaseRecord, lease_spec, takeable
from thingspace_operator.runner import lease_config, own_identity, serve_health


def record(holder: str = "other", duration: float = 15, version: str = "7") -> LeaseRecord:
    return LeaseRecord(holder, duration, transitions=3, acquired="2026-11-27T10:00:00.000000Z",
                       version=version)  # fmt: skip


@pytest.mark.parametrize(
    ("lease", "seen_for", "expected"),
    [
        (None, 0, True),  # no Lease yet: create it
        (record(holder=""), 0, True),  # released
        (record(holder="me"), 0, True),  # mine: renew
        (record(), 14.9, False),  # held, and changed less than its duration ago
        (record(), 15.0, True),  # unchanged for its whole duration, on my clock
        (record(duration=1), 1.0, True),  # a released-then-held short lease
    ],
)
def test_who_may_take_the_lease(lease: LeaseRecord | None, seen_for: float, expected: bool) -> None:
    assert takeable(lease, unchanged_since=100.0, now=100.0 + seen_for, me="me") is expected


def test_taking_a_lease_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = lease_spec(record(holder="other"), "me", 15)
    assert taken["holderIdentity"] == "me"
    assert taken["leaseTransitions"] == 4
    assert taken["leaseDurationSeconds"] == 15
    assert taken["acquireTime"] == taken["renewTime"]
    renewed = lease_spec(record(holder="me"), "me", 15)
    assert renewed["leaseTransitions"] == 3
    assert renewed["acquireTime"] == "2026-11-27T10:00:00.000000Z"
    assert renewed["renewTime"] != renewed["acquireTime"]
    assert lease_spec(None, "me", 15)["leaseTransitions"] == 0


@pytest.mark.parametrize(("duration", "written"), [(10.4, 11), (10.5, 11), (0.2, 1), (15.0, 15)])
def test_the_lease_duration_written_is_never_shorter_than_configured(
    duration: float, written: int
) -> None:
    """A renew deadline of 10.4 s passes validation under a 10.5 s lease: written as 10,
    a standby could take over 0.4 s before the old leader stops acting."""
    assert lease_spec(None, "me", duration)["leaseDurationSeconds"] == written


def test_a_lease_body_is_read_with_its_version() -> None:
    body = {
        "metadata": {"resourceVersion": "42", "uid": "u-1"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "leaseTransitions": 2},
    }
    assert LeaseRecord.of(body) == LeaseRecord("pod-a", 15.0, 2, "", "42", "u-1")
    assert LeaseRecord.of({"metadata": {"resourceVersion": "1"}}).holder == ""


def test_the_fence_fires_at_the_deadline_even_if_the_loop_is_blocked() -> None:
    fired = threading.Event()
    deadline = time.monotonic() + 0.2
    fence = Fence(lambda: deadline, on_expired=fired.set)
    fence.start()
    time.sleep(0.4)  # a stuck event loop: this thread does nothing else meanwhile
    assert fired.wait(5)


def test_the_fence_moves_with_each_renewal_and_stops_cleanly() -> None:
    fired = threading.Event()
    deadline = [time.monotonic() + 0.3]
    fence = Fence(lambda: deadline[0], on_expired=fired.set)
    fence.start()
    deadline[0] = time.monotonic() + 60  # renewed
    assert not fired.wait(0.5)
    fence.stop()
    deadline[0] = 0  # past, but the fence is stopped
    assert not fired.wait(0.2)


def test_a_known_loss_trips_the_fence_at_once() -> None:
    fired = threading.Event()
    fence = Fence(lambda: time.monotonic() + 60, on_expired=fired.set)
    fence.trip()
    assert fired.is_set()


def test_leader_election_settings_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "THINGSPACE_LEADER_ELECT": "true",
            "THINGSPACE_LEADER_ELECTION_ID": "my-lease",
            "THINGSPACE_LEADER_ELECTION_NAMESPACE": "ops",
            "THINGSPACE_LEASE_DURATION_SECONDS": "30",
            "THINGSPACE_RENEW_DEADLINE_SECONDS": "20",
            "THINGSPACE_RETRY_PERIOD_SECONDS": "4",
        }
    )
    lease = lease_config(config, {"POD_NAME": "tso-abc"})
    assert config.leader_elect is True
    assert (lease.namespace, lease.name, lease.identity) == ("ops", "my-lease", "tso-abc")
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (30, 20, 4)


def test_leader_election_is_off_by_default_with_client_go_timings() -> None:
    config = OperatorConfig.from_env({})
    assert config.leader_elect is False
    assert (
        config.lease_duration_seconds,
        config.renew_deadline_seconds,
        config.retry_period_seconds,
    ) == (15, 10, 2)
    assert lease_config(config, {"POD_NAMESPACE": "ops"}).namespace == "ops"


@pytest.mark.parametrize(
    ("lease", "renew", "retry"), [(10, 10, 2), (15, 10, 9), (15, 10, 0), (5, 10, 2)]
)
def test_inconsistent_timings_are_refused(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        OperatorConfig(
            lease_duration_seconds=lease, renew_deadline_seconds=renew, retry_period_seconds=retry
        ).validated()


def test_outside_a_pod_two_processes_never_share_an_identity() -> None:
    assert own_identity({}) != own_identity({})
    assert own_identity({"POD_NAME": "tso-abc"}) == "tso-abc"


def test_health_answers_without_leader_election() -> None:
    async def scenario() -> tuple[int, bytes, int]:
        runner = await serve_health(0, None)
        port = runner.addresses[0][1]
        try:
            health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
            ready = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
        finally:
            await runner.cleanup()
        return health[0], ready[1], ready[0]

    health_status, ready_body, ready_status = asyncio.run(scenario())
    assert health_status == 200
    assert ready_status == 200
    assert b'"leading": true' in ready_body


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


class _Elector:
    """What /readyz reads of the leader elector; the Lease becomes known when told."""

    def __init__(self) -> None:
        self.config = LeaseConfig(namespace="ops", name="tso", identity="pod-a")
        self.leader, self.leading = "pod-b", False
        self.known = asyncio.Event()

    async def wait_known(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.known.wait()
        return self.known.is_set()


def test_readyz_waits_for_the_first_lease_read_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe in the first instants is answered 200 once the Lease is read (a failed probe
    is a Warning Event); one that waits longer than the probe's timeout allows gets 503."""

    async def scenario(learn_after: float | None) -> int:
        elector = _Elector()
        runner = await serve_health(0, elector)  # type: ignore[arg-type]
        port = runner.addresses[0][1]
        if learn_after is not None:
            asyncio.get_running_loop().call_later(learn_after, elector.known.set)
        try:
            status, _ = await asyncio.to_thread(_get_any, f"http://127.0.0.1:{port}/readyz")
        finally:
            await runner.cleanup()
        return status

    monkeypatch.setattr(runner_module, "READYZ_WAIT_SECONDS", 1.0)
    assert asyncio.run(scenario(0.3)) == 200
    assert asyncio.run(scenario(None)) == 503


def _get_any(url: str) -> tuple[int, bytes]:
    try:
        return _get(url)
    except urllib.error.HTTPError as error:
        return error.code, error.read()
