"""Bad input and ThingSpace failures become clear conditions and Events, never crashes or
hot loops, and heal once the input is fixed."""

from collections.abc import Awaitable

import pytest

from tests.conftest import (
    ACCOUNT,
    DEMO_CREDENTIALS,
    Cluster,
    OperatorFactory,
    eventually,
    quiet_period,
)
from tests.simctl import SimControl


@pytest.fixture
def ctl(sim) -> SimControl:
    return SimControl(sim.url)


def synced(cluster: Cluster, name: str = "qos") -> tuple[str, str]:
    cond = cluster.condition(name, "Synced")
    return cond.get("status", ""), cond.get("reason", "")


def ready(cluster: Cluster, name: str = "qos") -> bool:
    return cluster.condition(name, "Ready").get("status") == "True"


async def test_missing_secret_then_created_heals(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await start_operator(resync_seconds=0.5)
    await cluster.create_callback("qos")
    await eventually(lambda: synced(cluster) == ("False", "CredentialsNotFound"))
    ready_cond = cluster.condition("qos", "Ready")
    assert (ready_cond["status"], ready_cond["reason"]) == ("False", "CredentialsNotFound")
    assert "iot/thingspace-credentials" in cluster.condition("qos", "Synced")["message"]
    await eventually(lambda: "CredentialsNotFound" in cluster.event_reasons("qos"))
    assert await ctl.calls("token") == 0

    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await eventually(lambda: ready(cluster), what="healed on the next drift check")
    assert synced(cluster) == ("True", "ReconcileSuccess")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({k: v for k, v in DEMO_CREDENTIALS.items() if k != "appSecret"}, "lacks key(s) appSecret"),
        ({**DEMO_CREDENTIALS, "password": ""}, "empty key(s) password"),
    ],
)
async def test_malformed_secret_is_credentials_invalid(
    start_operator: OperatorFactory,
    cluster: Cluster,
    ctl: SimControl,
    data: dict[str, str],
    words: str,
) -> None:
    await cluster.apply_secret("thingspace-credentials", data)
    await start_operator()
    await cluster.create_callback("qos")
    await eventually(lambda: synced(cluster) == ("False", "CredentialsInvalid"))
    assert words in cluster.condition("qos", "Synced")["message"]
    assert await ctl.calls("token") == 0


async def test_over_long_callback_credentials_never_reach_thingspace(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("listener", {"username": "u", "password": "x" * 41})
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "listener"})
    await eventually(lambda: synced(cluster) == ("False", "CredentialsInvalid"))
    assert "exceed ThingSpace's limit of 40" in cluster.condition("qos", "Synced")["message"]
    assert await ctl.calls("register") == 0


async def _more(count: Awaitable[int], than: int) -> bool:
    return await count > than


async def test_thingspace_rejection_is_reported_without_hot_loop(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(resync_seconds=0.5)
    await cluster.create_callback("qos", url="https://listener.example.com:8443/qos")
    await eventually(lambda: synced(cluster) == ("False", "Rejected"))
    assert "PortNotAllowed" in cluster.condition("qos", "Synced")["message"]
    assert cluster.condition("qos", "Ready")["reason"] == "Rejected"
    # Retried only by the drift check (every 0.5 s here), never in a tight loop, and the
    # Warning Event is posted once, not on every retry.
    first = await ctl.calls("register")
    await eventually(lambda: _more(ctl.calls("register"), first), what="a retry")
    loop_start = await ctl.calls("register")
    await quiet_period(2.0)
    assert await ctl.calls("register") - loop_start <= 6
    assert cluster.event_reasons("qos").count("Rejected") == 1

    await cluster.patch_callback("qos", {"spec": {"url": "https://listener.example.com/qos"}})
    await eventually(lambda: ready(cluster), what="fixed spec heals")


async def test_rejected_login_is_tried_once_and_heals_when_fixed(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret(
        "thingspace-credentials", {**DEMO_CREDENTIALS, "password": "wrong-password"}
    )
    await start_operator(resync_seconds=0.3)
    for name in ("qos", "carrier"):
        service = "QoS" if name == "qos" else "CarrierService"
        await cluster.create_callback(name, serviceName=service)
    await eventually(lambda: synced(cluster) == ("False", "AuthenticationFailed"))
    await eventually(lambda: synced(cluster, "carrier") == ("False", "AuthenticationFailed"))
    assert "five failed logins" in cluster.condition("qos", "Synced")["message"]
    await quiet_period(1.5)  # several drift periods
    assert await ctl.calls("login") == 1

    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await eventually(lambda: ready(cluster) and ready(cluster, "carrier"), what="healed")
    assert await ctl.calls("login") == 2


async def test_rejected_app_secret_is_authentication_failed(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret(
        "thingspace-credentials", {**DEMO_CREDENTIALS, "appSecret": "not-the-secret"}
    )
    await start_operator(resync_seconds=0.3)
    await cluster.create_callback("qos")
    await eventually(lambda: synced(cluster) == ("False", "AuthenticationFailed"))
    assert "appKey/appSecret" in cluster.condition("qos", "Synced")["message"]
    await quiet_period(1.0)
    assert await ctl.calls("token") == 1
    assert await ctl.calls("login") == 0


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("status", {"status": 503, "count": 2}),
        ("rate_limit", {"retry_after": 0.3, "count": 2}),
        ("timeout", {"delay": 3.0, "count": 1}),
    ],
)
async def test_transient_failures_are_retried_until_ready(
    operator, cluster: Cluster, ctl: SimControl, fault: str, options: dict[str, object]
) -> None:
    await ctl.fault("register", fault, **options)
    await cluster.create_callback("qos")
    await eventually(lambda: synced(cluster) == ("False", "Unavailable"), what="Unavailable")
    await eventually(lambda: ready(cluster), timeout=15, what="recovered")
    assert synced(cluster) == ("True", "ReconcileSuccess")


async def test_session_expiring_mid_run_is_renewed(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(resync_seconds=0.3)
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster))
    await ctl.request("POST", "sessions/expire")
    await ctl.delete_registration(ACCOUNT, "QoS")
    await eventually(lambda: ctl.calls("register"), what="first registration counted")
    await eventually(lambda: _registered(ctl), what="re-registered with a new session", timeout=10)
    assert await ctl.calls("login") == 2
    assert ready(cluster)


async def test_invalid_spec_is_reported_and_operator_keeps_running(
    operator, cluster: Cluster
) -> None:
    # The emulated API does not enforce the CRD schema, like a cluster where it was bypassed.
    await cluster.create_callback("broken", serviceName="CarrierService", url="ftp://nowhere")
    await cluster.create_callback("qos")
    await eventually(lambda: synced(cluster, "broken") == ("False", "InvalidSpec"))
    await eventually(lambda: ready(cluster), what="the healthy resource is unaffected")


async def _registered(ctl: SimControl) -> bool:
    return ACCOUNT in await ctl.registrations()
