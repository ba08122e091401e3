"""Prometheus metrics. Labels carry names of endpoints, outcomes and conditions only:
never an account credential, a URL or a callback password."""

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from .thingspace.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    ThingSpaceError,
    Unavailable,
)
from .thingspace.http import BearerRejected, SessionRejected

ERROR_OUTCOMES: tuple[tuple[type[ThingSpaceError], str], ...] = (
    (AuthenticationFailed, "auth_failed"),
    (SessionRejected, "session_expired"),
    (BearerRejected, "token_rejected"),
    (RateLimited, "rate_limited"),
    (RequestRejected, "rejected"),
    (Unavailable, "unavailable"),
)


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    return next((label for kind, label in ERROR_OUTCOMES if isinstance(error, kind)), "error")


@dataclass(frozen=True)
class ResourceState:
    ready: str
    synced: str
    managed: bool  # registration held by this resource (Ready, Manage, not in conflict)
    ready_reason: str = ""
    synced_reason: str = ""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.api_requests = Counter(
            "thingspace_api_requests_total",
            "ThingSpace API calls by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "thingspace_api_request_duration_seconds",
            "Duration of ThingSpace API calls.",
            ["endpoint"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.logins = Counter(
            "thingspace_logins_total",
            "ThingSpace session logins by result (ok, rejected, error).",
            ["result"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            "thingspace_reconciles_total",
            "Reconciles by trigger and resulting Synced reason.",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.drift_corrections = Counter(
            "thingspace_drift_corrections_total",
            "Registrations re-registered because the live one had drifted.",
            registry=self.registry,
        )
        self.resources = Gauge(
            "thingspace_callbacks",
            "ThingSpaceCallback resources by condition type, status and reason.",
            ["condition", "status", "reason"],
            registry=self.registry,
        )
        self.registrations_managed = Gauge(
            "thingspace_registrations_managed",
            "Registrations the operator currently holds as declared.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "thingspace_leader",
            "1 while this process acts (holds the leader Lease, or runs without leader "
            "election); 0 on a standby.",
            registry=self.registry,
        )
        self.leader.set(1)
        self.accounts = Gauge(
            "thingspace_accounts",
            "ThingSpaceAccounts whose status this process reports, by Ready status and reason.",
            ["status", "reason"],
            registry=self.registry,
        )
        self.pruned = Counter(
            "thingspace_registrations_pruned_total",
            "Registrations an Authoritative ThingSpaceAccount deregistered because no "
            "ThingSpaceCallback declares them.",
            registry=self.registry,
        )
        self.rejected_credentials = Gauge(
            "thingspace_rejected_credentials",
            "Credential Secrets (at their current version) whose app key or UWS login "
            "ThingSpace rejected: no login is tried with them until they change.",
            registry=self.registry,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, process_start_time_seconds
        ProcessCollector(registry=self.registry)
        self._states: dict[str, ResourceState] = {}
        self._account_states: dict[str, tuple[str, str]] = {}
        self._server: WSGIServer | None = None

    def observe_call(self, endpoint: str, error: BaseException | None, seconds: float) -> None:
        outcome = outcome_of(error)
        self.api_requests.labels(endpoint, outcome).inc()
        self.api_latency.labels(endpoint).observe(seconds)
        if endpoint == "login":
            result = {"ok": "ok", "auth_failed": "rejected"}.get(outcome, "error")
            self.logins.labels(result).inc()

    def observe_reconcile(self, trigger: str, result: str, drift_corrected: bool) -> None:
        self.reconciles.labels(trigger, result).inc()
        if drift_corrected:
            self.drift_corrections.inc()

    def set_state(self, uid: str, state: ResourceState | None) -> None:
        """Record a resource's current conditions (``None``: it is gone)."""
        previous = self._states.pop(uid, None)
        if state is not None:
            self._states[uid] = state
        if previous != state:
            self._count(previous, -1)
            self._count(state, +1)

    def set_accounts(self, states: dict[str, tuple[str, str]]) -> None:
        """Every reported account's Ready (status, reason), by account name."""
        for status, reason in set(self._account_states.values()) - set(states.values()):
            self.accounts.remove(status, reason)
        counts: dict[tuple[str, str], int] = {}
        for state in states.values():
            counts[state] = counts.get(state, 0) + 1
        for (status, reason), count in counts.items():
            self.accounts.labels(status, reason).set(count)
        self._account_states = dict(states)

    def _count(self, state: ResourceState | None, delta: int) -> None:
        if state is None:
            return
        self.resources.labels("Ready", state.ready, state.ready_reason).inc(delta)
        self.resources.labels("Synced", state.synced, state.synced_reason).inc(delta)
        self.registrations_managed.inc(delta * state.managed)

    def serve(self, port: int) -> int:
        """Serve /metrics on ``port`` (0: any free port) in a thread; returns the port."""
        if self._server is None:  # the CLI serves it before leader election; kopf again
            self._server, _thread = start_http_server(port, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
