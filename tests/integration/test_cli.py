"""The real ``thingspace-operator run`` command as a process: kubeconfig, liveness, metrics,
JSON logs, graceful stop."""

import asyncio
import json
import os
import signal
import sysconfig
from pathlib import Path

import aiohttp

from tests.conftest import DEMO_CREDENTIALS, Cluster, eventually
from tests.harness.demo import free_port, write_kubeconfig_to


async def get(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


async def test_run_command_serves_health_and_metrics_and_logs_json(
    k8s, sim, cluster: Cluster, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig_to(tmp_path / "kubeconfig", str(k8s.url).rstrip("/"))
    health, metrics = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "THINGSPACE_API_URL": sim.url}
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            str(Path(sysconfig.get_path("scripts")) / "thingspace-operator"),
            "run",
            "--health-port",
            str(health),
            "--metrics-port",
            str(metrics),
            "--log-format",
            "json",
            "--resync-seconds",
            "30",
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        await eventually(
            lambda: _is(get(f"http://127.0.0.1:{health}/healthz"), 200), timeout=20, what="liveness"
        )
        await cluster.apply_secret("thingspace-credentials", DEMO_CREDENTIALS)
        await cluster.create_callback("qos")
        await eventually(
            lambda: cluster.condition("qos", "Ready").get("status") == "True", timeout=20
        )
        assert await get(f"http://127.0.0.1:{metrics}/metrics") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert lines, log_path.read_text()[-2000:]
    about_qos = [line for line in lines if line.get("object", {}).get("name") == "qos"]
    assert about_qos
    assert all(line["object"]["namespace"] == "iot" for line in about_qos)
    assert all(
        (line.get("account"), line.get("service")) == ("0000123456-00001", "QoS")
        for line in about_qos
    )
    assert any("account=0000123456-00001 service=QoS iot/qos" in line["message"] for line in lines)
    assert "demo-password" not in log_path.read_text()


async def _is(awaitable, expected) -> bool:
    return await awaitable == expected
