"""Credentials lifecycle and resilience: Secret changes without restart, lockout safety,
rate budget, faults survived, crash safety, deletion without credentials."""

import asyncio

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
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

URL = "https://listener.example.com"
SERVICES = list(CALLBACK_SERVICE_NAMES[:10])


@pytest.fixture
def ctl(sim) -> SimControl:
    return SimControl(sim.url)


def reason(cluster: Cluster, name: str, type_: str = "Synced") -> str | None:
    return cluster.condition(name, type_).get("reason")


def ready(cluster: Cluster, name: str) -> bool:
    return cluster.condition(name, "Ready").get("status") == "True"


async def create_many(cluster: Cluster, count: int, **spec: object) -> list[str]:
    names = [f"cb-{i}" for i in range(count)]
    await asyncio.gather(
        *(
            cluster.create_callback(
                name,
                accountName=f"00000000{i // len(SERVICES):02d}-00001",
                serviceName=SERVICES[i % len(SERVICES)],
                url=f"{URL}/{i}",
                **spec,
            )
            for i, name in enumerate(names)
        )
    )
    return names


async def declared_equals_live(ctl: SimControl, cluster: Cluster, names: list[str]) -> bool:
    declared = {
        (obj["spec"]["accountName"], obj["spec"]["serviceName"]): obj["spec"]["url"]
        for obj in (cluster.callback(n) for n in names)
        if obj is not None
    }
    live = {
        (account, item["serviceName"]): item["url"]
        for account, items in (await ctl.registrations()).items()
        for item in items
    }
    return declared == live


# --- Secrets -----------------------------------------------------------------------------


async def test_callback_credentials_rotation_reregisters_without_waiting(
    operator, cluster: Cluster, ctl: SimControl, sim
) -> None:
    await cluster.apply_secret("cb", {"username": "listener", "password": "first"})
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(lambda: ready(cluster, "qos"))

    await cluster.apply_secret("cb", {"username": "listener", "password": "second"})
    # The drift period is 60 s here: only the Secret watch can make this happen in time.
    await eventually(
        lambda: sim.state.registrations[ACCOUNT]["QoS"].password == "second", timeout=5
    )
    # The Secret watch asked for the reconcile (the annotation's value was handled).
    await eventually(lambda: cluster.callback("qos")["status"].get("lastHandledReconcileAt"))


async def test_secret_created_after_its_resources_heals_them(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await start_operator()
    names = await create_many(cluster, 5)
    await eventually(lambda: all(reason(cluster, n) == "CredentialsNotFound" for n in names))
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=5)


async def test_deleted_secret_is_reported_and_registration_left_alone(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.create_callback("qos", url=f"{URL}/qos")
    await eventually(lambda: ready(cluster, "qos"))
    await cluster.delete_secret("thingspace-credentials")
    await eventually(lambda: reason(cluster, "qos") == "CredentialsNotFound", timeout=5)
    assert ready(cluster, "qos")  # not observed since: Ready keeps what it last knew
    assert (await ctl.registrations())[ACCOUNT][0]["url"] == f"{URL}/qos"
    assert await ctl.calls("deregister") == 0


async def test_app_credential_rotation_gets_new_token_and_session(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl, sim
) -> None:
    sim.state.config = type(sim.state.config)(
        apps={"demo-app-key": "demo-app-secret", "new-key": "new-secret"},
        users={"demo-user": "demo-password", "new-user": "new-password"},
    )
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    await cluster.apply_secret(
        "thingspace-credentials",
        {
            "appKey": "new-key",
            "appSecret": "new-secret",
            "username": "new-user",
            "password": "new-password",
        },
    )
    await eventually(lambda: _equals(ctl.calls("login"), 2), timeout=5, what="second login")
    assert await ctl.calls("token") == 2
    assert ready(cluster, "qos")
    # The new values were used, not the old ones again (the simulator accepts both).
    assert "new-user" in {user for user, _ in sim.state.sessions.values()}
    assert "new-key" in {app for app, _ in sim.state.tokens.values()}


async def _equals(awaitable, value) -> bool:
    return await awaitable == value


# --- lockout safety ----------------------------------------------------------------------


async def test_fifty_resources_on_one_bad_password_make_one_failed_login(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", {**DEMO_CREDENTIALS, "password": "wrong"})
    await start_operator(resync_seconds=0.5)
    names = await create_many(cluster, 50)
    await eventually(
        lambda: all(reason(cluster, n) == "AuthenticationFailed" for n in names), timeout=20
    )
    await quiet_period(2.0)  # four drift periods
    assert await ctl.calls("login") == 1
    assert (await ctl.request("GET", "logins"))["failed"] == {"demo-user": 1}

    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=20, what="healed")
    assert await ctl.calls("login") == 2
    assert await declared_equals_live(ctl, cluster, names)


# --- budget, faults ----------------------------------------------------------------------


async def test_mass_registration_never_exceeds_the_account_budget(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl, sim
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(max_calls_per_second_per_account=4.0)
    names = await create_many(cluster, 10)  # one account, ten services
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=10)
    times = sorted(
        t
        for t, endpoint, _account in sim.state.request_log
        if endpoint in ("list", "register", "deregister")
    )
    assert len(times) >= 11
    # Unlimited, all 11+ calls would land within a few milliseconds. The simulator sees
    # arrival times, which event-loop jitter can bunch by one call at most.
    for first in times:
        assert sum(1 for t in times if first <= t < first + 1.0) <= 4 + 1
    assert times[-1] - times[0] >= (len(times) - 1) / 4 - 0.5


@pytest.mark.parametrize(
    ("faults", "bound"),
    [
        (
            [
                ("register", "status", {"status": 503, "count": 5}),
                ("list", "status", {"status": 500, "count": 2}),
            ],
            10,
        ),
        ([("*", "rate_limit", {"retry_after": 0.5, "count": 6})], 10),
        ([("register", "timeout", {"delay": 3.0, "count": 3})], 10),
    ],
    ids=["5xx-burst", "429-storm", "slow-answers"],
)
async def test_faults_are_survived_with_bounded_calls(
    start_operator: OperatorFactory,
    cluster: Cluster,
    ctl: SimControl,
    faults: list[tuple[str, str, dict[str, object]]],
    bound: int,
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator()
    for endpoint, kind, options in faults:
        await ctl.fault(endpoint, kind, **options)
    names = await create_many(cluster, 10)
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=30)
    assert await declared_equals_live(ctl, cluster, names)
    injected = sum(int(options.get("count", 1)) for _, _, options in faults)  # type: ignore[call-overload]
    assert await ctl.calls("register") <= len(names) + injected
    assert await ctl.calls("list") <= bound + injected


async def test_an_outage_costs_one_list_per_account_and_drift_period(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    """Every check of the account in a period shares the period's failed list, and the
    reconcile each failing check asks for reuses it: not one list per resource."""
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    # Handler retries far off: only the drift checks (every 0.5 s) call ThingSpace.
    await start_operator(resync_seconds=0.5, retry_base_seconds=60, retry_max_seconds=60)
    names = await create_many(cluster, 10)  # one account, ten services
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=10)
    await ctl.fault("list", "status", status=503, count=None)
    await eventually(lambda: all(reason(cluster, n) == "Unavailable" for n in names), timeout=10)
    lists = await ctl.calls("list")
    await quiet_period(2.0)  # four drift periods
    assert await ctl.calls("list") - lists <= 4 + 1
    assert await ctl.calls("register") == len(names)


async def test_forced_session_expiry_and_token_revocation_mid_run(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await start_operator(resync_seconds=0.5)
    names = await create_many(cluster, 5)
    await eventually(lambda: all(ready(cluster, n) for n in names))
    await ctl.request("POST", "sessions/expire")
    await ctl.request("POST", "tokens/revoke")
    await ctl.delete_registration("0000000000-00001", SERVICES[0])
    await eventually(lambda: declared_equals_live(ctl, cluster, names), timeout=5)
    assert await ctl.calls("token") == 2
    assert await ctl.calls("login") == 2


# --- crash safety and deletion -----------------------------------------------------------


async def test_operator_restart_mid_reconcile_converges_without_losses(
    start_operator: OperatorFactory, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
    await ctl.fault("list", "latency", delay=1.0, count=None)  # verification hangs
    runtime = await start_operator()
    names = await create_many(cluster, 10)
    await eventually(lambda: _at_least(ctl.calls("register"), 3), what="writes under way")
    await start_operator.stop(runtime)  # stopped between a write and its status update
    await ctl.request("DELETE", "faults")

    await start_operator()
    await eventually(lambda: all(ready(cluster, n) for n in names), timeout=15)
    assert await declared_equals_live(ctl, cluster, names)


async def _at_least(awaitable, value) -> bool:
    return await awaitable >= value


async def test_deleting_without_credentials_explains_and_orphan_lets_go(
    operator, cluster: Cluster, ctl: SimControl
) -> None:
    await cluster.create_callback("qos")
    await eventually(lambda: ready(cluster, "qos"))
    await cluster.delete_secret("thingspace-credentials")
    await cluster.delete_callback("qos")
    await eventually(lambda: reason(cluster, "qos", "Ready") == "Deleting", timeout=5)
    assert reason(cluster, "qos") == "CredentialsNotFound"
    await eventually(lambda: "CredentialsNotFound" in cluster.event_reasons("qos"))

    await cluster.patch_callback("qos", {"spec": {"deletionPolicy": "Orphan"}})
    await eventually(lambda: cluster.callback("qos") is None, timeout=5, what="released")
    assert await ctl.calls("deregister") == 0
