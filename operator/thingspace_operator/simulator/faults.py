"""Faults injected through ``/_sim/faults``: which requests they hit and what they do."""

import asyncio
from dataclasses import dataclass

from .errors import ApiError

#: The ThingSpace endpoints a fault can name (or ``*``).
ENDPOINTS = ("token", "revoke", "login", "logout", "list", "register", "deregister")
FAULT_KINDS = ("status", "rate_limit", "timeout", "latency")


@dataclass
class Fault:
    id: int
    endpoint: str
    kind: str
    status: int = 503
    retry_after: float = 1.0
    delay: float = 0.0
    count: int | None = 1
    account: str | None = None

    def matches(self, endpoint: str, account: str | None) -> bool:
        return self.endpoint in ("*", endpoint) and self.account in (None, account)


async def inject(injected: Fault) -> None:
    """Wait and/or raise the answer the fault stands for (``latency`` only waits)."""
    if injected.kind in ("latency", "timeout"):
        await asyncio.sleep(injected.delay)
        if injected.kind == "latency":
            return
        raise ApiError(504, {"fault": {"code": "101504", "message": "Gateway Timeout"}})
    if injected.kind == "rate_limit":
        raise ApiError(
            429,
            {
                "fault": {
                    "code": "900800",
                    "message": "Message throttled out",
                    "description": "You have exceeded your quota",
                }
            },
            {"Retry-After": f"{injected.retry_after:g}"},
        )
    raise ApiError(
        injected.status, {"fault": {"code": str(injected.status), "message": "Injected failure"}}
    )
