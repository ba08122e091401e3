"""Operator settings: one frozen dataclass, filled from flags or the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_API_URL = "https://thingspace.verizon.com"


@dataclass(frozen=True)
class OperatorConfig:
    api_url: str = DEFAULT_API_URL
    """Root of the ThingSpace API (paths such as /api/m2m/v1 are appended)."""

    resync_seconds: float = 300.0
    """Drift check period: how often each registration is compared with ThingSpace."""

    request_timeout_seconds: float = 15.0
    """Total time one ThingSpace HTTP call may take."""

    observation_max_age_seconds: float = 2.0
    """How old a shared list of an account's callbacks may be for a change-triggered
    reconcile; bursts of changes within this window cost one list call."""

    max_concurrent_calls_per_account: int = 4
    """ThingSpace calls in flight at once for one account."""

    max_calls_per_second_per_account: float = 10.0
    """Budget of ThingSpace calls per second for one account, never exceeded."""

    retry_base_seconds: float = 5.0
    """First delay after a transient failure (5xx, timeout); doubles up to the cap."""

    retry_max_seconds: float = 300.0
    """Longest delay between retries after transient failures."""

    sync_time_refresh_seconds: float = 3600.0
    """A drift check that finds nothing to do writes no status, except that lastSyncTime is
    refreshed when it is older than this."""

    secret_watch: bool = True
    """Watch Secrets labelled thingspace.io/credentials=true, so their changes apply at
    once. Off: the operator needs only ``get`` on Secrets, and every change applies within
    one drift period."""

    leader_elect: bool = False
    """Run as one of several replicas: act only while holding the leader Lease."""

    leader_election_namespace: str = ""
    """Namespace of the Lease; empty: the operator's namespace (POD_NAMESPACE, the service
    account's, the kubeconfig context's), else ``default``."""

    leader_election_id: str = "thingspace-operator"
    """Name of the Lease."""

    lease_duration_seconds: float = 15.0
    """How long a standby waits, after the Lease last changed, before taking it over."""

    renew_deadline_seconds: float = 10.0
    """How long a leader keeps acting without a successful renewal; then it exits."""

    retry_period_seconds: float = 2.0
    """How often the leader renews and a standby tries to acquire."""

    namespaced_secrets: bool = True
    """Read Secrets in the namespaces of callbacks (the inline credentialsSecretRef and
    callbackCredentialsSecretRef). Off: only the operator's own namespace is read (the
    Secrets of ThingSpaceAccounts), and callbacks must use spec.accountRef."""

    metrics_port: int = 8080
    health_port: int = 8081
    log_level: str = "INFO"
    log_format: str = "text"
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    """Namespaces to watch; empty means all namespaces."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: Any) -> "OperatorConfig":
        """Settings from THINGSPACE_* variables; keyword overrides (flags) win."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(f"THINGSPACE_{item.name.upper()}")
            if raw is None or item.name == "namespaces":
                continue
            values[item.name] = _convert(item.name, raw, getattr(cls(), item.name))
        watched = env.get("THINGSPACE_NAMESPACES", "")
        if watched.strip():
            values["namespaces"] = tuple(ns.strip() for ns in watched.split(",") if ns.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values).validated()

    def validated(self) -> "OperatorConfig":
        if self.resync_seconds <= 0 or self.request_timeout_seconds <= 0:
            raise ValueError("resync and timeout settings must be positive")
        if self.max_calls_per_second_per_account <= 0:
            raise ValueError("max_calls_per_second_per_account must be positive")
        if self.max_concurrent_calls_per_account < 1:
            raise ValueError("max_concurrent_calls_per_account must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ValueError("log format must be 'text' or 'json'")
        if not (
            self.lease_duration_seconds
            > self.renew_deadline_seconds
            > 1.2 * self.retry_period_seconds
            > 0
        ):
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0"
            )
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError("THINGSPACE_API_URL must be an http(s) URL")
        return self


def _convert(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"THINGSPACE_{name.upper()}={raw!r} is not true or false")
    try:
        return type(default)(raw)
    except ValueError:
        raise ValueError(f"THINGSPACE_{name.upper()}={raw!r} is not a valid value") from None
