"""The main job on embedded defaults: ``make demo``.

Starts the ThingSpace simulator and an emulated Kubernetes API in this process, runs the
real ``thingspace-operator run`` as a child process against them, applies examples/ the
way ``kubectl apply`` would, waits until every resource has settled, and shows the result
as a user would see it. Exits 0 on success, 1 with an explanation otherwise.
"""

import asyncio
import os
import signal
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.harness.kube import emulated_kubernetes, load_crd
from tests.harness.printing import table
from thingspace_operator.simulator import SimulatorConfig, SimulatorServer

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = ROOT / ".demo"
NAMESPACE = "default"
TIMEOUT_SECONDS = 60
# A team registered DeviceUsage by hand long ago; the ObserveOnly example watches it.
HAND_MADE = ("0000123456-00001", "DeviceUsage", "https://listener.example.com/thingspace/usage")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(server: str) -> Path:
    WORKDIR.mkdir(exist_ok=True)
    return write_kubeconfig_to(WORKDIR / "kubeconfig", server)


def write_kubeconfig_to(path: Path, server: str) -> Path:
    """A kubeconfig for the emulated API server (any token; it checks none)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "demo",
        "clusters": [{"name": "demo", "cluster": {"server": server}}],
        "users": [{"name": "demo", "user": {"token": "demo"}}],
        "contexts": [
            {"name": "demo", "context": {"cluster": "demo", "user": "demo", "namespace": NAMESPACE}}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def example_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def api_path(doc: dict[str, Any]) -> str:
    if doc["apiVersion"] == "v1":
        return f"/api/v1/namespaces/{NAMESPACE}/{doc['kind'].lower()}s"
    plural = load_crd()["spec"]["names"]["plural"]
    return f"/apis/{doc['apiVersion']}/namespaces/{NAMESPACE}/{plural}"


async def apply(http: aiohttp.ClientSession, kube: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        async with http.post(kube + api_path(doc), json=doc) as response:
            if response.status >= 300:
                raise RuntimeError(f"applying {doc['kind']} failed: {await response.text()}")
        print(f"  {doc['kind'].lower()}/{doc['metadata']['name']} created")


def callbacks(emulator: Any) -> list[dict[str, Any]]:
    return [
        dict(obj.raw)
        for (resource, _, _), obj in emulator.objects.items()
        if resource.plural == "thingspacecallbacks" and not obj.deleted
    ]


def settled(obj: dict[str, Any]) -> bool:
    """Managed resources must be Ready; observe-only ones must have reported."""
    conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    if obj["spec"].get("managementPolicy") == "ObserveOnly":
        return conditions.get("Synced", {}).get("reason") == "ObserveOnly"
    return conditions.get("Ready", {}).get("status") == "True"


def start_operator(kubeconfig: Path, sim_url: str) -> asyncio.subprocess.Process:
    scripts = Path(sysconfig.get_path("scripts"))
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "THINGSPACE_API_URL": sim_url,
        "THINGSPACE_RESYNC_SECONDS": "30",
        "THINGSPACE_HEALTH_PORT": str(free_port()),
        "THINGSPACE_METRICS_PORT": str(free_port()),
    }
    log = (WORKDIR / "operator.log").open("w")
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        str(scripts / "thingspace-operator"),
        "run",
        "--all-namespaces",
        env=env,
        stdout=log,
        stderr=log,
    )


def show(emulator: Any, registrations: dict[str, Any]) -> None:
    objects = sorted(callbacks(emulator), key=lambda o: o["metadata"]["name"])
    print("\n$ kubectl get thingspacecallbacks")
    print(table(load_crd(), objects))
    print("\nConditions:")
    for obj in objects:
        for cond in obj.get("status", {}).get("conditions", []):
            print(
                f"  {obj['metadata']['name']:<24} {cond['type']:<7} {cond['status']:<6} "
                f"{cond['reason']:<17} {cond['message']}"
            )
    print("\nEvents:")
    for (resource, _, _), event in emulator.objects.items():
        if resource.plural == "events" and not event.deleted:
            raw = event.raw
            print(
                f"  {raw.get('type', ''):<8} {raw.get('reason', ''):<16} "
                f"{raw.get('involvedObject', {}).get('name', ''):<24} {raw.get('message', '')}"
            )
    print("\nThingSpace (simulator) registrations:")
    for account, items in registrations.items():
        for item in items:
            masked = " (callback credentials set)" if item.get("password") else ""
            print(f"  {account}  {item['serviceName']:<24} {item['url']}{masked}")


async def run_demo() -> int:
    async with SimulatorServer(SimulatorConfig()) as sim, emulated_kubernetes() as emulator:
        kube = str(emulator.url).rstrip("/")
        print(f"ThingSpace simulator:      {sim.url}")
        print(f"Emulated Kubernetes API:   {kube}")
        kubeconfig = write_kubeconfig(kube)
        async with aiohttp.ClientSession() as http:
            account, service, url = HAND_MADE
            await http.put(f"{sim.url}/_sim/registrations/{account}/{service}", json={"url": url})
            operator = await start_operator(kubeconfig, sim.url)
            print(f"Operator:                  pid {operator.pid}, log in {WORKDIR}/operator.log")
            print("\n$ kubectl apply -f examples/")
            await apply(http, kube, example_documents())
            ok = await wait_until_settled(emulator, operator)
            async with http.get(f"{sim.url}/_sim/registrations") as response:
                registrations = await response.json()
        show(emulator, registrations)
        await stop(operator)
    if not ok:
        print(
            "\nFAILED: not every resource settled within "
            f"{TIMEOUT_SECONDS} s; see {WORKDIR}/operator.log",
            file=sys.stderr,
        )
        print((WORKDIR / "operator.log").read_text()[-3000:], file=sys.stderr)
        return 1
    print("\nDemo OK: every ThingSpaceCallback is reconciled.")
    return 0


async def wait_until_settled(emulator: Any, operator: asyncio.subprocess.Process) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_SECONDS
    while loop.time() < deadline and operator.returncode is None:
        objects = callbacks(emulator)
        if objects and all(settled(obj) for obj in objects):
            return True
        await asyncio.sleep(0.2)
    return False


async def stop(operator: asyncio.subprocess.Process) -> None:
    if operator.returncode is None:
        operator.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(operator.wait(), 15)
        except TimeoutError:
            operator.kill()


def main() -> None:
    """On the real control plane when it can be built (Go installed), else on the emulator."""
    from tests.e2e.controlplane import ControlPlaneUnavailable, ensure_binary
    from tests.harness.demo_real import run_real_demo

    try:
        binary = ensure_binary()
    except ControlPlaneUnavailable:
        print("Go not found: this demo runs on the emulated Kubernetes API, not a real one.")
        sys.exit(asyncio.run(run_demo()))
    except RuntimeError as exc:
        print(f"{exc}: this demo runs on the emulated Kubernetes API, not a real one.")
        sys.exit(asyncio.run(run_demo()))
    sys.exit(run_real_demo(binary))


if __name__ == "__main__":
    main()
