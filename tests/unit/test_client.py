"""The ThingSpace client against the simulator over real HTTP: shapes, tokens, every error."""

import asyncio
import traceback
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from tests.simctl import SimControl
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer
from thingspace_operator.thingspace.accounts import AccountView
from thingspace_operator.thingspace.client import ClientPool, ThingSpaceClient
from thingspace_operator.thingspace.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    Unavailable,
)
from thingspace_operator.thingspace.http import ThingSpaceHTTP
from thingspace_operator.thingspace.models import AppCredentials, Callback, CredentialsSource
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

ACCOUNT = "0000123456-00001"
GOOD = AppCredentials("demo-app-key", "demo-app-secret", "demo-user", "demo-password")
QOS = Callback(ACCOUNT, "QoS", "https://listener.example.com/qos")


@pytest.fixture
async def http(sim: SimulatorServer) -> AsyncIterator[ThingSpaceHTTP]:
    async with aiohttp.ClientSession() as session:
        yield ThingSpaceHTTP(sim.url, session, timeout_seconds=0.5)


@pytest.fixture
def ctl(sim: SimulatorServer) -> SimControl:
    return SimControl(sim.url)


def client(http: ThingSpaceHTTP, credentials: AppCredentials = GOOD) -> ThingSpaceClient:
    return ThingSpaceClient(http, credentials)


async def test_register_list_deregister_round_trip(http: ThingSpaceHTTP) -> None:
    ts = client(http)
    assert await ts.list_callbacks(ACCOUNT) == []
    with_credentials = Callback(ACCOUNT, "CarrierService", "https://l.example/c", "u", "p")
    await ts.register(QOS)
    await ts.register(with_credentials)
    listed = {cb.service_name: cb for cb in await ts.list_callbacks(ACCOUNT)}
    assert listed == {"QoS": QOS, "CarrierService": with_credentials}
    await ts.deregister(ACCOUNT, "QoS")
    assert [cb.service_name for cb in await ts.list_callbacks(ACCOUNT)] == ["CarrierService"]


async def test_empty_list_may_be_an_empty_body(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    await ctl.request("PUT", "config", {"empty_list_body": "empty"})
    assert await client(http).list_callbacks(ACCOUNT) == []


async def test_token_and_session_are_reused(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(http)
    for _ in range(5):
        await ts.list_callbacks(ACCOUNT)
    assert await ctl.calls("token") == 1
    assert await ctl.calls("login") == 1
    assert await ctl.calls("list") == 5


async def test_concurrent_callers_share_one_login(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(http)
    await asyncio.gather(*(ts.list_callbacks(ACCOUNT) for _ in range(20)))
    assert (await ctl.calls("token"), await ctl.calls("login")) == (1, 1)


async def test_expired_session_logs_in_again_once(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(http)
    await ts.list_callbacks(ACCOUNT)
    await ctl.request("POST", "sessions/expire")
    await asyncio.gather(*(ts.list_callbacks(ACCOUNT) for _ in range(5)))
    assert await ctl.calls("login") == 2
    assert (await ctl.counts())[("list", 400)] >= 1


async def test_revoked_token_is_replaced_once(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(http)
    await ts.list_callbacks(ACCOUNT)
    await ctl.request("POST", "tokens/revoke")
    await ts.list_callbacks(ACCOUNT)
    assert await ctl.calls("token") == 2
    assert (await ctl.counts())[("list", 401)] == 1


async def test_rejected_app_secret_is_never_retried(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(
        http, AppCredentials("demo-app-key", "wrong-secret-x", "demo-user", "demo-password")
    )
    for _ in range(3):
        with pytest.raises(AuthenticationFailed) as caught:
            await ts.list_callbacks(ACCOUNT)
        assert caught.value.stage == "oauth"
        assert "wrong-secret-x" not in str(caught.value)
    assert await ctl.calls("token") == 1
    assert await ctl.calls("login") == 0


async def test_rejected_login_is_never_retried(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    ts = client(http, AppCredentials("demo-app-key", "demo-app-secret", "demo-user", "bad-pw-x"))
    results = await asyncio.gather(
        *(ts.list_callbacks(ACCOUNT) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, AuthenticationFailed) and r.stage == "login" for r in results)
    assert all("bad-pw-x" not in str(r) for r in results)
    assert await ctl.calls("login") == 1
    logins = await ctl.request("GET", "logins")
    assert logins["failed"] == {"demo-user": 1}


async def test_bad_request_is_rejected_with_error_code(http: ThingSpaceHTTP) -> None:
    with pytest.raises(RequestRejected) as caught:
        await client(http).register(Callback(ACCOUNT, "QoS", "https://l.example:8443/q"))
    assert caught.value.error_code.endswith("Url.PortNotAllowed")
    assert caught.value.status == 400


async def test_over_long_callback_password_is_rejected_without_echo(http: ThingSpaceHTTP) -> None:
    secret = "p" * 41
    with pytest.raises(RequestRejected) as caught:
        await client(http).register(Callback(ACCOUNT, "QoS", "https://l.example/q", "u", secret))
    assert secret not in str(caught.value)


async def test_deregistering_what_is_absent_is_rejected(http: ThingSpaceHTTP) -> None:
    with pytest.raises(RequestRejected):
        await client(http).deregister(ACCOUNT, "QoS")


async def test_rate_limit_carries_retry_after(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    await ctl.fault("list", "rate_limit", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await client(http).list_callbacks(ACCOUNT)
    assert caught.value.retry_after == 7


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_unavailable(
    ctl: SimControl, http: ThingSpaceHTTP, status: int
) -> None:
    await ctl.fault("register", "status", status=status)
    with pytest.raises(Unavailable, match=str(status)):
        await client(http).register(QOS)


async def test_slow_answers_time_out(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    await ctl.fault("list", "timeout", delay=2.0)
    with pytest.raises(Unavailable, match="timed out"):
        await client(http).list_callbacks(ACCOUNT)


async def test_connection_refused_is_unavailable() -> None:
    async with aiohttp.ClientSession() as session:
        dead = ThingSpaceHTTP("http://127.0.0.1:9", session, timeout_seconds=0.5)
        with pytest.raises(Unavailable):
            await client(dead).list_callbacks(ACCOUNT)


async def test_rejected_values_are_never_tried_again_by_another_credential_set() -> None:
    """Teams with their own app keys but one UWS user: a wrong password is one failed
    login, not one per app key (five lock the user). A wrong app secret is asked once."""
    apps = {f"app-{team}": f"secret-{team}" for team in "abcde"}
    config = SimulatorConfig(apps=apps, users={"shared-user": "right", "other": "right"})
    async with SimulatorServer(config) as sim:
        ctl, pool = SimControl(sim.url), ClientPool(sim.url, timeout_seconds=2.0)
        try:
            for team in "abcde":
                wrong = AppCredentials(f"app-{team}", f"secret-{team}", "shared-user", "wrong")
                with pytest.raises(AuthenticationFailed):
                    await pool.client_for(wrong).list_callbacks(ACCOUNT)
            assert (await ctl.request("GET", "logins"))["failed"] == {"shared-user": 1}
            assert await ctl.calls("login") == 1
            fixed = AppCredentials("app-a", "secret-a", "shared-user", "right")
            assert await pool.client_for(fixed).list_callbacks(ACCOUNT) == []

            for user in ("shared-user", "other"):
                bad_app = AppCredentials("app-a", "not-its-secret", user, "right")
                with pytest.raises(AuthenticationFailed):
                    await pool.client_for(bad_app).list_callbacks(ACCOUNT)
            assert (await ctl.counts()).get(("token", 401), 0) == 1
        finally:
            await pool.close()


def from_secret(credentials: AppCredentials, secret: str, version: str) -> AppCredentials:
    return replace(credentials, source=CredentialsSource(secret, version))


async def test_a_new_process_does_not_try_what_an_earlier_one_saw_rejected() -> None:
    """The record by source is all that survives a process: a new pool handed it sends no
    login with that version of that Secret; a new version is tried, and its success
    clears the record."""
    async with SimulatorServer(SimulatorConfig()) as sim:
        ctl = SimControl(sim.url)
        wrong = replace(GOOD, password="wrong")
        first = ClientPool(sim.url, timeout_seconds=2.0)
        try:
            with pytest.raises(AuthenticationFailed):
                await first.client_for(from_secret(wrong, "team/creds", "7")).list_callbacks(
                    ACCOUNT
                )
        finally:
            await first.close()
        assert set(first.rejected.by_origin) == {"team/creds"}

        second, changes = ClientPool(sim.url, timeout_seconds=2.0), []
        second.rejected.by_origin.update(first.rejected.by_origin)  # what the Lease carries
        second.rejected.on_change = lambda: changes.append(dict(second.rejected.by_origin))
        try:
            same = from_secret(wrong, "team/creds", "7")
            with pytest.raises(AuthenticationFailed, match=r"rejected"):
                await second.client_for(same).list_callbacks(ACCOUNT)
            assert await ctl.calls("login") == 1
            fixed = from_secret(GOOD, "team/creds", "8")
            assert await second.client_for(fixed).list_callbacks(ACCOUNT) == []
            assert await ctl.calls("login") == 2
            assert second.rejected.by_origin == {}
            assert changes == [{}]
        finally:
            await second.close()


async def test_a_rejection_is_recorded_for_every_secret_holding_the_values() -> None:
    """Two Secrets with the same wrong values: whichever one a new process reads first,
    the record names it."""
    async with SimulatorServer(SimulatorConfig()) as sim:
        pool = ClientPool(sim.url, timeout_seconds=2.0)
        wrong = replace(GOOD, password="wrong")
        try:
            with pytest.raises(AuthenticationFailed):
                await pool.client_for(from_secret(wrong, "a/creds", "1")).list_callbacks(ACCOUNT)
            with pytest.raises(AuthenticationFailed):
                await pool.client_for(from_secret(wrong, "b/creds", "5")).list_callbacks(ACCOUNT)
            pool.client_for(from_secret(wrong, "a/creds", "2"))  # a metadata-only change
            recorded = {o: v for o, (v, _) in pool.rejected.by_origin.items()}
            assert recorded == {"a/creds": "2", "b/creds": "5"}
            assert await SimControl(sim.url).calls("login") == 1
        finally:
            await pool.close()


async def test_a_login_the_gateway_refused_blocks_no_other_credential_set() -> None:
    """A WSO2 fault on the login (an app not subscribed, say) judged the app, not the UWS
    user: another app key with the same user and password still logs in."""
    config = SimulatorConfig(apps={"app-a": "secret-a", "app-b": "secret-b"})
    async with SimulatorServer(config) as sim:
        ctl, pool = SimControl(sim.url), ClientPool(sim.url, timeout_seconds=2.0)
        try:
            await ctl.fault("login", "status", status=403, count=1)
            refused = AppCredentials("app-a", "secret-a", "demo-user", "demo-password")
            with pytest.raises(AuthenticationFailed):
                await pool.client_for(refused).list_callbacks(ACCOUNT)
            other = AppCredentials("app-b", "secret-b", "demo-user", "demo-password")
            assert await pool.client_for(other).list_callbacks(ACCOUNT) == []
            with pytest.raises(AuthenticationFailed):  # the refused set is not asked again
                await pool.client_for(refused).list_callbacks(ACCOUNT)
            assert await ctl.calls("login") == 2
        finally:
            await pool.close()


async def test_a_remembered_rejection_does_not_grow_with_each_call(http: ThingSpaceHTTP) -> None:
    """Raised again for every check of every resource, period after period: one object
    re-raised as it is would carry every earlier raise in its traceback."""
    ts = client(http, AppCredentials("demo-app-key", "demo-app-secret", "demo-user", "wrong"))
    depths = []
    for _ in range(50):
        with pytest.raises(AuthenticationFailed) as caught:
            await ts.list_callbacks(ACCOUNT)
        depths.append(len(traceback.extract_tb(caught.value.__traceback__)))
    assert depths[-1] == depths[1]


# --- the shared per-account view ---------------------------------------------------------


async def test_account_view_coalesces_concurrent_observations(
    ctl: SimControl, http: ThingSpaceHTTP
) -> None:
    view = AccountView(client(http), ACCOUNT, max_concurrent_calls=2)
    await ctl.request("PUT", "config", {"latency_seconds": 0.05})
    now = view.now()
    await asyncio.gather(*(view.observe(now) for _ in range(25)))
    assert await ctl.calls("list") == 1
    await view.observe(now)  # fresh enough: served from cache
    assert await ctl.calls("list") == 1
    await view.observe(view.now())  # must start after now: a new call
    assert await ctl.calls("list") == 2


async def test_account_view_verifies_a_burst_of_writes_with_one_list(
    ctl: SimControl, http: ThingSpaceHTTP
) -> None:
    view = AccountView(client(http), ACCOUNT, max_concurrent_calls=4)
    services = list(CALLBACK_SERVICE_NAMES[:6])

    async def register_and_verify(service: str) -> bool:
        written = await view.register(Callback(ACCOUNT, service, f"https://l.example/{service}"))
        return service in await view.observe(written)

    assert all(await asyncio.gather(*(register_and_verify(s) for s in services)))
    assert await ctl.calls("register") == len(services)
    assert await ctl.calls("list") <= 2


async def test_a_failed_list_answers_every_caller_it_is_fresh_enough_for(
    ctl: SimControl, http: ThingSpaceHTTP
) -> None:
    """An outage costs one list per account and period, not one per resource checked."""
    view = AccountView(client(http), ACCOUNT, max_concurrent_calls=4)
    await ctl.fault("list", "status", status=503, count=1)
    period_start = view.now()
    for _ in range(10):
        with pytest.raises(Unavailable):
            await view.observe(period_start)
    assert await ctl.calls("list") == 1
    assert await view.observe(view.now()) == {}  # wants a newer list: asks again
    assert await ctl.calls("list") == 2


async def test_a_429_holds_every_caller_of_the_account_off_for_its_retry_after(
    ctl: SimControl, http: ThingSpaceHTTP
) -> None:
    now = [1000.0]
    view = AccountView(client(http), ACCOUNT, max_concurrent_calls=4, clock=lambda: now[0])
    await ctl.fault("list", "rate_limit", retry_after=7, count=1)
    with pytest.raises(RateLimited):
        await view.observe(now[0])
    now[0] += 6.5
    with pytest.raises(RateLimited):
        await view.observe(now[0])  # newer than the failure, but within its Retry-After
    assert await ctl.calls("list") == 1
    now[0] += 1.0
    assert await view.observe(now[0]) == {}
    assert await ctl.calls("list") == 2


async def test_token_is_refreshed_before_it_expires(ctl: SimControl, http: ThingSpaceHTTP) -> None:
    now = [0.0]
    ts = ThingSpaceClient(http, GOOD, clock=lambda: now[0])
    await ts.list_callbacks(ACCOUNT)
    now[0] += 3600 - 60  # inside the refresh margin, still valid at ThingSpace
    await ts.list_callbacks(ACCOUNT)
    assert await ctl.calls("token") == 2
    assert (await ctl.counts()).get(("list", 401), 0) == 0  # never used an expired token
