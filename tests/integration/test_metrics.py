"""The /metrics endpoint after a scenario: the numbers match what happened."""

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Cluster, eventually
from tests.simctl import SimControl
from thingspace_operator.reconciler import Runtime


async def scrape(runtime: Runtime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{runtime.metrics_port}/metrics") as response,
    ):
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels`` (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


async def test_metrics_tell_what_happened(operator: Runtime, cluster: Cluster, sim) -> None:
    ctl = SimControl(sim.url)
    await cluster.apply_secret("cb", {"username": "listener", "password": "metric-secret-pw"})
    await cluster.create_callback("qos", callbackCredentialsSecretRef={"name": "cb"})
    await cluster.create_callback(
        "carrier", serviceName="CarrierService", url="https://listener.example.com:8443/c"
    )
    await cluster.create_callback(
        "usage", serviceName="DeviceUsage", managementPolicy="ObserveOnly"
    )
    await eventually(lambda: cluster.condition("qos", "Ready").get("status") == "True")
    await eventually(lambda: cluster.condition("carrier", "Synced").get("reason") == "Rejected")
    await eventually(lambda: cluster.condition("usage", "Synced").get("reason") == "ObserveOnly")

    samples = await scrape(operator)
    counts = await ctl.counts()
    assert (
        value(samples, "thingspace_api_requests_total", endpoint="register", outcome="ok")
        == (counts[("register", 200)])
    )
    assert (
        value(samples, "thingspace_api_requests_total", endpoint="register", outcome="rejected")
        == counts[("register", 400)]
    )
    assert value(samples, "thingspace_logins_total", result="ok") == 1
    assert (
        value(samples, "thingspace_api_request_duration_seconds_count", endpoint="list")
        == (counts[("list", 200)])
    )
    assert value(samples, "thingspace_callbacks", condition="Ready", status="True") == 1
    assert value(samples, "thingspace_callbacks", condition="Ready", status="False") == 2
    assert value(samples, "thingspace_callbacks", condition="Synced", status="False") == 1
    assert value(samples, "thingspace_callbacks", condition="Synced", reason="Rejected") == 1
    assert value(samples, "thingspace_rejected_credentials") == 0
    assert value(samples, "process_resident_memory_bytes") > 0  # the dashboard's per-pod memory
    assert value(samples, "thingspace_registrations_managed") == 1
    assert value(samples, "thingspace_reconciles_total", trigger="change", result="Rejected") >= 1

    await cluster.delete_callback("qos")
    await eventually(lambda: cluster.callback("qos") is None)
    samples = await scrape(operator)
    assert value(samples, "thingspace_registrations_managed") == 0
    assert "metric-secret-pw" not in repr(samples)
    assert "listener.example.com" not in repr(samples)
