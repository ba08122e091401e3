"""Log levels with kopf's real reactor: a state someone chose or must change (suspended, in
conflict) is logged once as it starts and never at ERROR; a fault still is. The same read
from a real operator process on a real API server: tests/e2e/test_operator_messages.py."""

import logging

import pytest

from tests.conftest import ACCOUNT, NAMESPACE, Cluster, eventually


def handled(cluster: Cluster, name: str) -> bool:
    obj = cluster.callback(name) or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return bool(generation and obj.get("status", {}).get("observedGeneration") == generation)


def about(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """kopf's records about the callback ``name`` and the operator's own."""
    return [
        record
        for record in caplog.records
        if (getattr(record, "k8s_ref", None) or {}).get("name") == name
        or f" {NAMESPACE}/{name}]" in record.getMessage()
    ]


async def test_a_suspended_or_conflicting_callback_logs_its_state_once_and_no_error(
    operator, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.create_callback("older", metadata={"creationTimestamp": "2026-01-01T00:00:00Z"})
    await eventually(lambda: cluster.condition("older", "Ready").get("status") == "True")
    await cluster.create_callback("younger", url="https://listener.example.com/younger")
    await cluster.create_callback("paused", serviceName="DeviceUsage", suspend=True)
    for name, reason in (("younger", "Conflict"), ("paused", "Suspended")):
        await eventually(lambda n=name, r=reason: cluster.condition(n, "Synced")["reason"] == r)
        # A change that finds the same state: kopf's update handler runs again (the patch
        # is stored when it returns: generation 2, handled once observedGeneration says so).
        await cluster.patch_callback(name, {"spec": {"url": f"https://x.example.com/{name}"}})
        await eventually(lambda n=name: handled(cluster, n))

    for name, service, reason, level in (
        ("younger", "QoS", "Conflict", logging.WARNING),
        ("paused", "DeviceUsage", "Suspended", logging.INFO),
    ):
        records = about(caplog, name)
        assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
        stated = [r for r in records if r.getMessage().startswith(f"{reason} [")]
        assert [r.levelno for r in stated] == [level], [r.getMessage() for r in records]
        prefix = f"{reason} [account={ACCOUNT} service={service} {NAMESPACE}/{name}]"
        assert stated[0].getMessage().startswith(prefix)


async def test_a_fault_is_still_an_error(
    operator, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.create_callback("lost", credentialsSecretRef={"name": "absent"})
    await eventually(
        lambda: cluster.condition("lost", "Synced").get("reason") == "CredentialsNotFound"
    )
    errors = [r.getMessage() for r in about(caplog, "lost") if r.levelno >= logging.ERROR]
    assert any("failed permanently" in message for message in errors), errors
