"""thingspace-sim delivers callback messages as ThingSpace does (reference section 7), to
real listeners on local ports over real HTTP: envelope, echoed credentials, retries,
archive, history, and the ``thingspace-sim send`` command."""

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.harness.demo import free_port
from tests.simctl import SimControl
from thingspace_operator.simulator import (
    DEMO_APPS,
    DEMO_USERS,
    SimulatorConfig,
    SimulatorServer,
    cli,
)
from thingspace_operator.simulator.samples import sample_services
from thingspace_operator.thingspace.services import ALLOWED_LISTENER_PORTS

ACCOUNT = "0000123456-00001"
SCRIPT = Path(sys.executable).parent / "thingspace-sim"
FAST = SimulatorConfig(delivery_retry_seconds=0.05, delivery_timeout_seconds=2)


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Listener:
    """A callback listener: answers with ``statuses`` in turn (then 200), records requests."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    #: Runs inside the handler, before it answers (e.g. to deregister between attempts).
    on_request: Callable[[], Awaitable[None]] | None = None
    #: Set when the test ends: answers held back (status 0) go out then.
    released: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by every request the listener receives (the test clears it to wait for the next).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: When given: each answer waits until the test sets it (or the test ends).
    hold: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(dict(request.headers), await request.json()))
        self.arrived.set()
        if self.on_request is not None:
            await self.on_request()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 0:  # no answer until the test ends: the simulator's attempt times out
            await self.released.wait()
        headers = {"Location": self.url + "/elsewhere"} if 300 <= status < 400 else None
        return web.Response(status=status, headers=headers)

    def bodies(self, key: str) -> list[Any]:
        return [item.body[key] for item in self.received]

    def release_all(self) -> None:
        self.released.set()
        if self.hold is not None:
            self.hold.set()


@pytest.fixture
async def new_listener() -> AsyncIterator[Callable[[], Awaitable[Listener]]]:
    async with AsyncExitStack() as stack:

        async def start() -> Listener:
            listener = Listener()
            app = web.Application()
            app.router.add_post("/{tail:.*}", listener.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            stack.callback(listener.release_all)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            listener.url = f"http://127.0.0.1:{runner.addresses[0][1]}/callbacks"
            return listener

        yield start


@pytest.fixture
async def listener(new_listener: Callable[[], Awaitable[Listener]]) -> Listener:
    return await new_listener()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(FAST) as server:
        yield server


@pytest.fixture
def ctl(sim: SimulatorServer) -> SimControl:
    return SimControl(sim.url)


async def finished(ctl: SimControl, delivery_id: int) -> dict[str, Any]:
    async def entry() -> dict[str, Any] | None:
        item = await ctl.delivery(delivery_id)
        return item if item["status"] != "pending" else None

    result: dict[str, Any] = await eventually(entry, what=f"delivery {delivery_id} finished")
    return result


async def post_trigger(sim: SimulatorServer, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sim.url}/_sim/deliveries", json=body) as response,
    ):
        return response.status, await response.json()


# --- the message -------------------------------------------------------------------------


async def test_message_has_the_envelope_and_echoes_the_callback_credentials(
    ctl: SimControl, listener: Listener
) -> None:
    await ctl.set_registration(
        ACCOUNT, "QoS", url=listener.url, username="cb-user", password="cb-secret"
    )
    accepted = await ctl.deliver(ACCOUNT, "QoS")
    entry = await finished(ctl, accepted["id"])
    assert entry["status"] == "delivered"
    [received] = listener.received
    body = received.body
    assert (body["username"], body["password"]) == ("cb-user", "cb-secret")
    assert "Authorization" not in received.headers
    assert received.headers["Content-Type"].startswith("application/json")
    assert body["requestId"] == accepted["requestId"] == str(uuid.UUID(body["requestId"]))
    assert body["deviceIds"] == [{"id": "490154203237518", "kind": "IMEI"}]
    assert (body["status"], body["callbackCount"], body["maxCallbackThreshold"]) == (
        "Success",
        1,
        4,
    )
    [qos] = body["deviceResponse"]["qoS"]
    assert qos["accountName"] == ACCOUNT
    assert {"qosSubscriptionId", "reportedTime", "qosEvent"} <= set(qos)
    assert entry["requestId"] == accepted["requestId"]
    assert (entry["account"], entry["service"]) == (ACCOUNT, "QoS")
    assert (entry["status"], entry["state"], entry["maxAttempts"]) == ("delivered", "delivered", 4)
    [attempt] = entry["attempts"]
    assert (attempt["number"], attempt["url"], attempt["status"]) == (1, listener.url, 200)
    assert attempt["state"] == "delivered"
    assert attempt["at"] <= attempt["finishedAt"]
    assert "error" not in attempt
    assert not {"reason", "nextAttemptAt"} & set(entry)


async def test_without_credentials_none_are_echoed(ctl: SimControl, listener: Listener) -> None:
    await ctl.set_registration(ACCOUNT, "DeviceUsage", url=listener.url)
    await finished(ctl, (await ctl.deliver(ACCOUNT, "DeviceUsage"))["id"])
    assert not {"username", "password"} & set(listener.received[0].body)


async def test_a_given_payload_replaces_the_service_part_but_not_the_envelope(
    ctl: SimControl, listener: Listener
) -> None:
    await ctl.set_registration(ACCOUNT, "SMSDeliveryConfirmation", url=listener.url, password="p1")
    sms = {"smsResponse": {"messageStatus": "Expired"}}
    forged = {"requestId": "forged", "password": "forged", "callbackCount": 9}
    devices = [{"id": "5551234567", "kind": "MDN"}]
    accepted = await ctl.deliver(
        ACCOUNT, "SMSDeliveryConfirmation", payload={**sms, **forged}, deviceIds=devices
    )
    await finished(ctl, accepted["id"])
    body = listener.received[0].body
    assert body == {
        "password": "p1",
        "requestId": accepted["requestId"],
        "deviceIds": devices,
        **sms,
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }


@pytest.mark.parametrize("service", [*sample_services(), "DeviceService"])
async def test_samples_and_the_generic_payload(
    ctl: SimControl, listener: Listener, service: str
) -> None:
    await ctl.set_registration(ACCOUNT, service, url=listener.url)
    await finished(ctl, (await ctl.deliver(ACCOUNT, service))["id"])
    body = listener.received[0].body
    [payload_key] = (
        set(body) - {"requestId", "deviceIds", "status", "callbackCount"} - {"maxCallbackThreshold"}
    )
    assert payload_key in ("deviceResponse", "smsResponse")
    assert "${" not in json.dumps(body)
    if service == "DeviceService":
        assert body["deviceResponse"]["serviceName"] == "DeviceService"


def test_the_required_samples_ship() -> None:
    assert {"QoS", "CarrierService", "DeviceUsage", "SMSDeliveryConfirmation"} <= set(
        sample_services()
    )


# --- retries and archive -----------------------------------------------------------------


async def test_retries_after_failures_with_the_same_request_id(listener: Listener) -> None:
    async with SimulatorServer() as sim:  # five minutes between attempts, until changed live
        ctl = SimControl(sim.url)
        settings = await ctl.request("PUT", "config", {"delivery_retry_seconds": 0.05})
        assert settings["delivery_retry_seconds"] == 0.05
        await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
        listener.statuses = [500, 503]
        accepted = await ctl.deliver(ACCOUNT, "QoS")
        entry = await finished(ctl, accepted["id"])
    assert entry["status"] == "delivered"
    assert [a["status"] for a in entry["attempts"]] == [500, 503, 200]
    assert [a["number"] for a in entry["attempts"]] == [1, 2, 3]
    assert listener.bodies("requestId") == [accepted["requestId"]] * 3
    assert listener.bodies("callbackCount") == [1, 2, 3]
    assert listener.bodies("maxCallbackThreshold") == [4] * 3


async def test_archived_after_four_failed_attempts(ctl: SimControl, listener: Listener) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    listener.statuses = [500, 502, 404, 500]  # a fifth attempt would succeed
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert (entry["status"], entry["state"]) == ("archived", "archived")
    assert "4 attempts" in entry["reason"]
    assert [a["status"] for a in entry["attempts"]] == [500, 502, 404, 500]
    assert [a["state"] for a in entry["attempts"]] == ["failed"] * 4
    assert "nextAttemptAt" not in entry
    assert len(listener.received) == 4
    assert listener.bodies("callbackCount") == [1, 2, 3, 4]


async def test_timeouts_redirects_and_refused_connections_are_failures(
    sim: SimulatorServer, ctl: SimControl, listener: Listener
) -> None:
    await ctl.request("PUT", "config", {"delivery_timeout_seconds": 0.2})
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    listener.statuses = [0, 302]  # no answer in time, then a redirect that is not followed
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert entry["status"] == "delivered"
    first, second, third = entry["attempts"]
    assert (first["state"], first["status"]) == ("failed", None)
    assert first["error"] == "no answer within 0.2 s"
    assert (second["state"], second["status"]) == ("failed", 302)
    assert (third["state"], third["status"]) == ("delivered", 200)
    assert len(listener.received) == 3

    closed = f"http://127.0.0.1:{free_port()}/callbacks"
    await ctl.set_registration(ACCOUNT, "CarrierService", url=closed)
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "CarrierService"))["id"])
    assert entry["status"] == "archived"
    assert [(a["state"], a["status"]) for a in entry["attempts"]] == [("failed", None)] * 4
    assert all(a["error"] for a in entry["attempts"])


async def test_each_attempt_goes_to_the_url_registered_at_that_moment(
    ctl: SimControl, listener: Listener, new_listener: Callable[[], Awaitable[Listener]]
) -> None:
    moved = await new_listener()
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url, password="old")

    async def move() -> None:
        await ctl.set_registration(ACCOUNT, "QoS", url=moved.url, password="new")

    listener.on_request, listener.statuses = move, [500]
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert [a["url"] for a in entry["attempts"]] == [listener.url, moved.url]
    assert (listener.bodies("password"), moved.bodies("password")) == (["old"], ["new"])
    assert moved.bodies("callbackCount") == [2]


async def test_a_deregistration_between_attempts_archives_without_a_request(
    ctl: SimControl, listener: Listener
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)

    async def deregister() -> None:
        await ctl.delete_registration(ACCOUNT, "QoS")

    listener.on_request, listener.statuses = deregister, [500]
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert entry["status"] == "archived"
    assert "deregistered" in entry["reason"]
    assert len(entry["attempts"]) == len(listener.received) == 1


# --- where a message is: queued, in flight, retrying, delivered, archived -----------------

WAIT = 10.0  # seconds a test waits for the listener, at most


async def test_an_attempt_without_an_answer_yet_is_in_flight_then_final(
    ctl: SimControl, listener: Listener
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    listener.hold = asyncio.Event()
    accepted = await ctl.deliver(ACCOUNT, "QoS")
    await asyncio.wait_for(listener.arrived.wait(), WAIT)  # the listener holds its answer

    waiting = await ctl.delivery(accepted["id"])
    assert (waiting["status"], waiting["state"]) == ("pending", "in_flight")
    [attempt] = waiting["attempts"]
    assert (attempt["state"], attempt["status"]) == ("in_flight", None)
    assert attempt["url"] == listener.url
    assert not {"error", "finishedAt"} & set(attempt)
    [listed] = await ctl.request("GET", "deliveries")
    assert listed == waiting

    listener.hold.set()
    entry = await finished(ctl, accepted["id"])
    assert (entry["status"], entry["state"]) == ("delivered", "delivered")
    [attempt] = entry["attempts"]
    assert (attempt["state"], attempt["status"]) == ("delivered", 200)
    assert "finishedAt" in attempt


async def test_after_a_failed_attempt_the_message_is_retrying_until_the_next(
    sim: SimulatorServer, ctl: SimControl, listener: Listener
) -> None:
    await ctl.request("PUT", "config", {"delivery_retry_seconds": 300})
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    listener.statuses = [503]
    accepted = await ctl.deliver(ACCOUNT, "QoS")

    async def retrying() -> dict[str, Any] | None:
        entry = await ctl.delivery(accepted["id"])
        return entry if entry["state"] == "retrying" else None

    entry = await eventually(retrying, timeout=WAIT, what="first attempt failed")
    assert entry["status"] == "pending"
    [attempt] = entry["attempts"]
    assert (attempt["state"], attempt["status"]) == ("failed", 503)
    failed_at = datetime.fromisoformat(attempt["finishedAt"])
    next_at = datetime.fromisoformat(entry["nextAttemptAt"])
    assert 299 <= (next_at - failed_at).total_seconds() <= 301
    assert sim.deliveries.running == 1


async def test_a_message_is_queued_until_its_first_attempt_starts(
    sim: SimulatorServer, ctl: SimControl, listener: Listener
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    delivery = sim.deliveries.send(ACCOUNT, "QoS")  # no await: its task has not run yet
    entry = delivery.as_json()
    assert (entry["status"], entry["state"], entry["attempts"]) == ("pending", "queued", [])
    assert (await finished(ctl, delivery.id))["state"] == "delivered"


async def test_stopping_the_simulator_ends_an_attempt_in_flight(listener: Listener) -> None:
    listener.hold = asyncio.Event()
    async with SimulatorServer(FAST) as sim:
        ctl = SimControl(sim.url)
        await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
        accepted = await ctl.deliver(ACCOUNT, "QoS")
        await asyncio.wait_for(listener.arrived.wait(), WAIT)
        delivery = sim.deliveries.history[accepted["id"]]
    entry = delivery.as_json()
    assert (entry["status"], entry["state"]) == ("archived", "archived")
    assert entry["reason"] == "the simulator was reset or stopped"
    [attempt] = entry["attempts"]
    assert (attempt["state"], attempt["status"]) == ("failed", None)
    assert attempt["error"].startswith("not finished")


# --- the listener port rule --------------------------------------------------------------


async def register_through_the_api(sim_url: str, url: str) -> tuple[int, dict[str, Any]]:
    """Token, login and register with the demo credentials, as a listener author does."""
    async with aiohttp.ClientSession() as http:
        key_secret = ":".join(next(iter(DEMO_APPS.items())))
        async with http.post(
            f"{sim_url}/api/ts/v1/oauth2/token",
            headers={"Authorization": "Basic " + base64.b64encode(key_secret.encode()).decode()},
            data={"grant_type": "client_credentials"},
        ) as answer:
            bearer = {"Authorization": f"Bearer {(await answer.json())['access_token']}"}
        user, password = next(iter(DEMO_USERS.items()))
        async with http.post(
            f"{sim_url}/api/m2m/v1/session/login",
            headers=bearer,
            json={"username": user, "password": password},
        ) as answer:
            session = {**bearer, "VZ-M2M-Token": (await answer.json())["sessionToken"]}
        async with http.post(
            f"{sim_url}/api/m2m/v1/callbacks/{ACCOUNT}",
            headers=session,
            json={"name": "QoS", "url": url, "username": "cb-user", "password": "cb-secret"},
        ) as answer:
            return answer.status, await answer.json()


async def test_a_listener_on_a_random_port_needs_allow_any_listener_port(
    new_listener: Callable[[], Awaitable[Listener]],
) -> None:
    listener = await new_listener()
    while urlsplit(listener.url).port in ALLOWED_LISTENER_PORTS:  # a random high port
        listener = await new_listener()
    parse = cli.serve_parser().parse_args

    async with SimulatorServer(cli.config_from_args(parse([]))) as sim:
        status, answer = await register_through_the_api(sim.url, listener.url)
        assert (status, answer["errorCode"]) == (
            400,
            "UnifiedWebService.INPUT_INVALID.Url.PortNotAllowed",
        )
        assert await SimControl(sim.url).registrations() == {}

    flags = ["--allow-any-listener-port", "--delivery-retry-seconds", "0.05"]
    async with SimulatorServer(cli.config_from_args(parse(flags))) as sim:
        status, answer = await register_through_the_api(sim.url, listener.url)
        assert (status, answer) == (200, {"accountName": ACCOUNT, "serviceName": "QoS"})
        ctl = SimControl(sim.url)
        listener.statuses = [500]
        entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert [a["status"] for a in entry["attempts"]] == [500, 200]
    assert listener.bodies("password") == ["cb-secret"] * 2


# --- triggers and history ----------------------------------------------------------------


async def test_nothing_registered_means_404_and_no_request(
    sim: SimulatorServer, ctl: SimControl, listener: Listener
) -> None:
    status, body = await post_trigger(sim, {"account": ACCOUNT, "service": "QoS"})
    assert status == 404
    assert "nothing is registered for QoS of account 0000123456-00001" in body["error"]
    await ctl.set_registration(ACCOUNT, "DeviceUsage", url=listener.url)
    status, _ = await post_trigger(sim, {"account": ACCOUNT, "service": "QoS"})
    assert status == 404
    assert await ctl.request("GET", "deliveries") == []
    assert listener.received == []


@pytest.mark.parametrize(
    "body",
    [
        {"account": ACCOUNT, "service": "QoS", "url": "http://127.0.0.1:1/elsewhere"},
        {"account": ACCOUNT},
        {"account": ACCOUNT, "service": "QoS", "payload": [1]},
        {"account": ACCOUNT, "service": "QoS", "deviceIds": [{"id": "1"}]},
        [ACCOUNT, "QoS"],
    ],
)
async def test_bad_triggers_are_refused(
    sim: SimulatorServer, ctl: SimControl, listener: Listener, body: Any
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    status, answer = await post_trigger(sim, body)
    assert status == 400
    assert answer["error"]
    assert await ctl.request("GET", "deliveries") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", []),
        ("payload", 0),
        ("payload", ""),
        ("payload", None),
        ("payload", "{}"),
        ("deviceIds", []),
        ("deviceIds", 0),
        ("deviceIds", ""),
        ("deviceIds", None),
        ("deviceIds", {"id": "1", "kind": "IMEI"}),
        ("deviceIds", ["1"]),
        ("deviceIds", [{"id": "1", "kind": 7}]),
        ("deviceIds", [{"id": "", "kind": "IMEI"}]),
        ("deviceIds", [{"id": "1", "kind": "IMEI", "extra": "x"}]),
    ],
)
async def test_payload_and_device_ids_of_a_wrong_type_are_a_clear_400(
    sim: SimulatorServer, ctl: SimControl, listener: Listener, field: str, value: Any
) -> None:
    await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
    status, answer = await post_trigger(sim, {"account": ACCOUNT, "service": "QoS", field: value})
    assert status == 400
    assert answer["error"].startswith(f"{field} must be")
    assert await ctl.request("GET", "deliveries") == []


async def test_history_and_logs_never_carry_the_callback_credentials(
    ctl: SimControl, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await ctl.set_registration(
        ACCOUNT, "QoS", url=listener.url, username="cb-user-4711", password="cb-pass-4711"
    )
    listener.statuses = [500]
    first = await ctl.deliver(ACCOUNT, "QoS")
    second = await ctl.deliver(ACCOUNT, "QoS", payload={"password": "cb-pass-4711"})
    for accepted in (first, second):
        await finished(ctl, accepted["id"])
    assert listener.bodies("password") == ["cb-pass-4711"] * 3
    history = json.dumps(
        [
            await ctl.request("GET", "deliveries"),
            await ctl.request("GET", f"deliveries?account={ACCOUNT}&service=QoS"),
            await ctl.delivery(first["id"]),
        ]
    )
    for secret in ("cb-user-4711", "cb-pass-4711"):
        assert secret not in history
        assert secret not in caplog.text


async def test_url_user_info_is_neither_sent_nor_kept(
    ctl: SimControl, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """ThingSpace echoes credentials only in the body: user-info in a registered URL must
    not become an Authorization header, nor reach the history or the log."""
    caplog.set_level("DEBUG")
    with_user_info = listener.url.replace("http://", "http://bob:hunter2@")
    await ctl.set_registration(ACCOUNT, "QoS", url=with_user_info, password="cb-pass")
    listener.statuses = [500]
    entry = await finished(ctl, (await ctl.deliver(ACCOUNT, "QoS"))["id"])
    assert entry["status"] == "delivered"
    for received in listener.received:
        assert "Authorization" not in received.headers
    assert listener.bodies("password") == ["cb-pass"] * 2
    assert [a["url"] for a in entry["attempts"]] == [listener.url] * 2
    history = json.dumps(await ctl.request("GET", "deliveries"))
    for leaked in ("hunter2", "bob"):
        assert leaked not in history
        assert leaked not in caplog.text


async def test_history_filters_forgets_and_resets(
    sim: SimulatorServer, ctl: SimControl, listener: Listener
) -> None:
    for service in ("QoS", "DeviceUsage"):
        await ctl.set_registration(ACCOUNT, service, url=listener.url)
    delivered = await ctl.deliver(ACCOUNT, "QoS")
    await finished(ctl, delivered["id"])
    await ctl.request("PUT", "config", {"delivery_retry_seconds": 300})
    listener.statuses = [500]
    pending = await ctl.deliver(ACCOUNT, "DeviceUsage")
    await eventually(lambda: len(listener.received) == 2, what="first attempt")

    only_qos = await ctl.request("GET", "deliveries?service=QoS")
    assert [d["id"] for d in only_qos] == [delivered["id"]]
    assert await ctl.request("GET", "deliveries?account=0000999999-00001") == []
    await ctl.request("DELETE", "deliveries")  # forgets finished messages, keeps pending ones
    [kept] = await ctl.request("GET", "deliveries")
    assert (kept["id"], kept["status"]) == (pending["id"], "pending")
    assert sim.deliveries.running == 1

    await ctl.request("POST", "reset")  # cancels the pending retry
    assert await ctl.request("GET", "deliveries") == []
    await eventually(lambda: sim.deliveries.running == 0, what="retry cancelled")
    async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/_sim/deliveries/1") as r:
        assert r.status == 404


async def test_stopping_the_simulator_cancels_pending_retries(listener: Listener) -> None:
    async with SimulatorServer() as sim:
        ctl = SimControl(sim.url)
        await ctl.set_registration(ACCOUNT, "QoS", url=listener.url)
        listener.statuses = [500]
        await ctl.deliver(ACCOUNT, "QoS")
        await eventually(lambda: listener.received, what="first attempt")
        assert sim.deliveries.running == 1
    assert sim.deliveries.running == 0
    assert len(listener.received) == 1


# --- thingspace-sim send -----------------------------------------------------------------


async def run_script(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def up(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_sim/deliveries") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize("serve", [[], ["serve"]], ids=["no-subcommand", "serve"])
async def test_send_command_against_a_simulator_process(
    listener: Listener, serve: list[str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *serve,
        "--port",
        str(port),
        "--delivery-retry-seconds",
        "0.05",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: up(url), timeout=20, what="thingspace-sim up")
        await SimControl(url).set_registration(ACCOUNT, "QoS", url=listener.url, password="pw")
        listener.statuses = [500]
        code, out, err = await run_script(
            "send", "--account", ACCOUNT, "--service", "QoS", "--sim-url", url, "--wait"
        )
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
    assert code == 0, err
    accepted, final = (json.loads(line) for line in out.splitlines())
    assert set(accepted) == {"id", "requestId"}
    assert (final["status"], len(final["attempts"])) == ("delivered", 2)
    progress = [line for line in err.splitlines() if "retrying" not in line]  # maybe unseen
    number = accepted["id"]
    assert progress == [
        f"delivery {number}: attempt 1 of 4 to {listener.url} started {final['attempts'][0]['at']}",
        f"delivery {number}: attempt 1 failed: HTTP 500",
        f"delivery {number}: attempt 2 of 4 to {listener.url} started {final['attempts'][1]['at']}",
        f"delivery {number}: attempt 2 delivered: HTTP 200",
        f"delivery {number}: delivered",
    ]
    assert listener.bodies("requestId") == [accepted["requestId"]] * 2
    assert listener.bodies("password") == ["pw", "pw"]


async def test_send_command_payload_devices_and_failures(
    sim: SimulatorServer, ctl: SimControl, listener: Listener, tmp_path: Path
) -> None:
    await ctl.set_registration(ACCOUNT, "SMSDeliveryConfirmation", url=listener.url)
    payload = tmp_path / "sms.json"
    payload.write_text(json.dumps({"smsResponse": {"messageStatus": "Expired"}}))
    base = ["send", "--account", ACCOUNT, "--sim-url", sim.url]
    code, out, _ = await run_script(
        *base,
        "--service",
        "SMSDeliveryConfirmation",
        "--payload",
        str(payload),
        "--device",
        "MDN:5551234567",
    )
    assert code == 0
    accepted = json.loads(out)
    await finished(ctl, accepted["id"])
    body = listener.received[0].body
    assert body["smsResponse"] == {"messageStatus": "Expired"}
    assert body["deviceIds"] == [{"id": "5551234567", "kind": "MDN"}]

    code, out, err = await run_script(*base, "--service", "QoS")
    assert (code, out) == (1, "")
    assert "404" in err
    assert "nothing is registered for QoS" in err

    listener.statuses = [500] * 4
    code, out, _ = await run_script(*base, "--service", "SMSDeliveryConfirmation", "--wait")
    assert code == 1
    assert json.loads(out.splitlines()[-1])["status"] == "archived"
    assert len(listener.received) == 5
