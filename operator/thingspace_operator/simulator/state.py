"""What the simulator knows: its configuration, registrations, tokens, sessions, faults."""

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from aiohttp import web

from .faults import Fault

DEMO_APPS = {"demo-app-key": "demo-app-secret"}
DEMO_USERS = {"demo-user": "demo-password"}

DuplicateRegister = Literal["upsert", "reject"]
EmptyListBody = Literal["array", "empty"]


@dataclass(frozen=True)
class SimulatorConfig:
    apps: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_APPS))
    users: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_USERS))
    accounts: frozenset[str] | None = None
    token_lifetime_seconds: float = 3600.0
    session_idle_seconds: float = 1200.0
    #: A second registration of a registered service: replace it, or refuse it.
    duplicate_register: DuplicateRegister = "upsert"
    #: The callback list with nothing registered: ``[]``, or a zero-length body.
    empty_list_body: EmptyListBody = "array"
    #: Refuse listener URLs on ports that ThingSpace does not allow (Url.PortNotAllowed).
    enforce_listener_ports: bool = True
    #: Delay before every ``/api`` answer.
    latency_seconds: float = 0.0
    lockout_after_failed_logins: int = 5
    #: Wait between two attempts to deliver a callback message (ThingSpace: five minutes).
    delivery_retry_seconds: float = 300.0
    #: How long one delivery attempt may take before it counts as failed.
    delivery_timeout_seconds: float = 10.0


#: Settings that ``thingspace-sim`` flags set at start and ``PUT /_sim/config`` changes
#: (and ``GET /_sim/config`` shows) while it runs.
LIVE_SETTINGS = (
    "latency_seconds",
    "session_idle_seconds",
    "duplicate_register",
    "empty_list_body",
    "enforce_listener_ports",
    "delivery_retry_seconds",
    "delivery_timeout_seconds",
)
NUMERIC_SETTINGS = (
    "latency_seconds",
    "session_idle_seconds",
    "delivery_retry_seconds",
    "delivery_timeout_seconds",
)
BOOLEAN_SETTINGS = ("enforce_listener_ports",)
CHOICE_SETTINGS: dict[str, tuple[str, ...]] = {
    "duplicate_register": get_args(DuplicateRegister),
    "empty_list_body": get_args(EmptyListBody),
}


@dataclass
class Registration:
    url: str
    username: str = ""
    password: str = field(default="", repr=False)

    def as_json(self, account: str | None, service: str) -> dict[str, str]:
        item = {"serviceName": service, "url": self.url}
        if account is not None:
            item = {"accountName": account, **item}
        if self.username:
            item["username"] = self.username
        if self.password:
            item["password"] = self.password
        return item


@dataclass
class SimulatorState:
    config: SimulatorConfig
    clock: Callable[[], float] = time.monotonic
    registrations: dict[str, dict[str, Registration]] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (app, expiry)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (user, seen)
    failed_logins: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    request_counts: Counter[tuple[str, str | None, int]] = field(default_factory=Counter)
    #: (clock time, endpoint, account) of recent requests, for rate assertions.
    request_log: deque[tuple[float, str, str | None]] = field(
        default_factory=lambda: deque(maxlen=100_000)
    )
    _fault_ids: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        for item in (self.registrations, self.tokens, self.sessions, self.failed_logins):
            item.clear()
        self.faults.clear()
        self.request_counts.clear()
        self.request_log.clear()

    def registration(self, account: str, service: str) -> Registration | None:
        return self.registrations.get(account, {}).get(service)

    def locked(self, user: str) -> bool:
        return self.failed_logins.get(user, 0) >= self.config.lockout_after_failed_logins

    def take_fault(self, endpoint: str, account: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(endpoint, account):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None


STATE = web.AppKey("state", SimulatorState)
