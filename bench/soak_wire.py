"""What the chaos soak puts on the wire between the operator and the rest: a recording
proxy in front of the simulator that keeps each call's sender, answer, login key and (for a
deregistration) the URL ThingSpace held just before it, and can lose a register's answer
after the simulator applied it; a cuttable TCP proxy to the API server that can heal.
"""

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.e2e.cluster import SCRIPTS, Simulator, SimulatorApi, eventually
from tests.e2e.controlplane import die_with_parent, free_port
from tests.e2e.proxies import CuttableTcpProxy, LoopThread, ReverseProxy

CALLBACKS = "/api/m2m/v1/callbacks/"


@dataclass(frozen=True)
class Sent:
    """One ThingSpace call as the proxy saw it."""

    at: float  # time.monotonic() when the proxy received it
    done: float
    sender: str  # the operator incarnation ("a#2": pod a, third start)
    endpoint: str  # token, login, list, register, deregister, logout, revoke, other
    account: str
    service: str
    url: str  # a register's URL; a deregister's: the one live just before it
    status: int  # 0: the answer was lost on purpose
    key: str  # hash of the credentials a token or login call carried
    rejected: bool  # ThingSpace refused those credentials


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class SoakSimulator(Simulator):
    """``thingspace-sim`` accepting the soak's credential sets (passed in its environment,
    never its command line)."""

    def __init__(self, workdir: Path, apps: list[str], users: list[str]) -> None:
        self.port = free_port()
        SimulatorApi.__init__(self, f"http://127.0.0.1:{self.port}")
        self._log = (workdir / "sim.log").open("wb")
        env = {"THINGSPACE_SIM_APPS": ",".join(apps), "THINGSPACE_SIM_USERS": ",".join(users)}
        self._process = subprocess.Popen(  # noqa: S603 - our own simulator
            [str(SCRIPTS / "thingspace-sim"), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log,
            stderr=self._log,
            env={**_base_env(), **env},
            preexec_fn=die_with_parent,
        )
        eventually(lambda: self.request("GET", "registrations") is not None, 20, "simulator up")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("THINGSPACE_")}


class SoakProxy(ReverseProxy):
    """Reverse proxy to the simulator for one operator pod; ``sender`` names the process
    incarnation running behind it now (set by the supervisor before each start)."""

    def __init__(self, loop: LoopThread, upstream: str, pod: str) -> None:
        self.sender = f"{pod}#0"
        self.sent: list[Sent] = []
        self.lose_registers = 0  # answers of the next successful registers to drop
        super().__init__(loop, upstream, timeout=120)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        at, sender = time.monotonic(), self.sender
        body = await request.read()
        endpoint, account, service, url, key = _classify(request, body)
        if endpoint == "deregister":  # what is about to go (the operator holds its lock)
            url = await self._live_url(account, service)
        answer = await self.relay(request, body)
        text = answer.body.decode(errors="replace")
        rejected = (endpoint == "token" and "invalid_client" in text) or (
            endpoint == "login" and ("Password.Invalid" in text or "User.Locked" in text)
        )
        lose = endpoint == "register" and answer.status == 200 and self.lose_registers > 0
        if lose:
            self.lose_registers -= 1
        self.sent.append(
            Sent(at, time.monotonic(), sender, endpoint, account, service, url,
                 0 if lose else answer.status, key, rejected)
        )  # fmt: skip
        if lose:
            # ThingSpace applied it; the operator never hears back (a cut connection). The
            # answer written after the abort fails quietly (aiohttp logs only an exception).
            assert request.transport is not None
            request.transport.abort()
        return answer.response()

    async def _live_url(self, account: str, service: str) -> str:
        assert self._session is not None
        with contextlib.suppress(aiohttp.ClientError, ValueError):
            async with self._session.get(f"{self._upstream}/_sim/registrations") as answer:
                live = await answer.json()
            for item in live.get(account, []):
                if item["serviceName"] == service:
                    return str(item["url"])
        return ""


def _classify(request: web.Request, body: bytes) -> tuple[str, str, str, str, str]:
    """(endpoint, account, service, url, credentials key) of one ThingSpace request."""
    path, method = request.path, request.method
    if path.endswith("/oauth2/token"):
        return "token", "", "", "", digest(request.headers.get("Authorization", ""))
    if path.endswith("/session/login"):
        fields: dict[str, str] = {}
        with contextlib.suppress(ValueError):
            fields = json.loads(body)
        return "login", "", "", "", digest(fields.get("username", ""), fields.get("password", ""))
    if CALLBACKS in path:
        rest = path.split(CALLBACKS, 1)[1].split("/")
        account = rest[0]
        if method == "GET":
            return "list", account, "", "", ""
        if method == "POST":
            data: dict[str, str] = {}
            with contextlib.suppress(ValueError):
                data = json.loads(body)
            return "register", account, data.get("name", ""), data.get("url", ""), ""
        if method == "DELETE":
            return "deregister", account, rest[-1], "", ""
    for name in ("logout", "revoke"):
        if path.endswith(name):
            return name, "", "", "", ""
    return "other", "", "", "", ""


class HealableProxy(CuttableTcpProxy):
    """The e2e suite's cuttable pipe, plus ``heal()``: the partition ends, held bytes flow."""

    def heal(self) -> None:
        self.cut_at = None
        self._loop.loop.call_soon_threadsafe(self._open.set)
