"""No credential or callback password in logs (any level), Events, status or error text."""

import logging

import pytest

from tests.conftest import ACCOUNT, Cluster, OperatorFactory, eventually
from tests.simctl import SimControl
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer

APP_SECRET = "S3cr3t-app-6d1f0c"
UWS_PASSWORD = "S3cr3t-uws-9a2b7e"
WRONG_PASSWORD = "S3cr3t-wrong-44e1aa"
CALLBACK_PASSWORD = "S3cr3t-cb-0f9e3d"
ROTATED_CALLBACK_PASSWORD = "S3cr3t-cb2-77aa01"
SECRETS = (APP_SECRET, UWS_PASSWORD, WRONG_PASSWORD, CALLBACK_PASSWORD, ROTATED_CALLBACK_PASSWORD)


@pytest.fixture
async def sim():  # overrides the default: distinctive credentials
    config = SimulatorConfig(apps={"leak-app": APP_SECRET}, users={"leak-user": UWS_PASSWORD})
    async with SimulatorServer(config) as server:
        yield server


async def test_no_secret_reaches_logs_events_or_status(
    start_operator: OperatorFactory, cluster: Cluster, sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctl = SimControl(sim.url)
    good = {"appKey": "leak-app", "appSecret": APP_SECRET, "username": "leak-user"}
    await cluster.apply_secret("thingspace-credentials", {**good, "password": WRONG_PASSWORD})
    await cluster.apply_secret("cb", {"username": "listener", "password": CALLBACK_PASSWORD})
    await start_operator(resync_seconds=0.3)

    # A rejected login, then a good one; callback credentials registered, drifted, rotated.
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await eventually(
        lambda: cluster.condition("qos", "Synced").get("reason") == "AuthenticationFailed"
    )
    await cluster.apply_secret("thingspace-credentials", {**good, "password": UWS_PASSWORD})
    await eventually(lambda: cluster.condition("qos", "Ready").get("status") == "True")
    await ctl.set_registration(ACCOUNT, "QoS", url="https://x.example/", password="other")
    await eventually(lambda: "DriftCorrected" in cluster.event_reasons("qos"))
    await cluster.apply_secret(
        "cb", {"username": "listener", "password": ROTATED_CALLBACK_PASSWORD}
    )
    await eventually(
        lambda: sim.state.registrations[ACCOUNT]["QoS"].password == ROTATED_CALLBACK_PASSWORD
    )
    # ThingSpace rejects an over-long value; the error path must not echo it either.
    await cluster.apply_secret("cb", {"username": "listener", "password": CALLBACK_PASSWORD * 3})
    await eventually(
        lambda: cluster.condition("qos", "Synced").get("reason") == "CredentialsInvalid"
    )
    await cluster.delete_callback("qos")
    await eventually(lambda: cluster.callback("qos") is None)

    texts = {
        "logs": "\n".join(
            f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
        ),
        "events": repr(cluster.events()),
        "every version of the resources": repr(
            [
                version
                for (resource, _, _), obj in cluster.k8s.objects.items()
                if resource.plural == "thingspacecallbacks"
                for version in obj.history
            ]
        ),
    }
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into {where}"
    assert len(caplog.records) > 10  # the logs were really captured
