"""Talk to the simulator's /_sim/ control surface over HTTP, as tests and the demo do."""

from typing import Any

import aiohttp


class SimControl:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.url}/_sim/{path}", json=body) as response,
        ):
            assert response.status < 300, (method, path, response.status, await response.text())
            text = await response.text()
            return await response.json() if text else None

    async def fault(self, endpoint: str, kind: str, **options: Any) -> None:
        await self.request("POST", "faults", {"endpoint": endpoint, "kind": kind, **options})

    async def set_registration(self, account: str, service: str, **fields: str) -> None:
        await self.request("PUT", f"registrations/{account}/{service}", fields)

    async def delete_registration(self, account: str, service: str) -> None:
        await self.request("DELETE", f"registrations/{account}/{service}")

    async def registrations(self) -> dict[str, list[dict[str, Any]]]:
        return await self.request("GET", "registrations")  # type: ignore[no-any-return]

    async def counts(self) -> dict[tuple[str, int], int]:
        """Requests per (endpoint, status), summed over accounts."""
        totals: dict[tuple[str, int], int] = {}
        for row in (await self.request("GET", "requests"))["counts"]:
            key = (row["endpoint"], row["status"])
            totals[key] = totals.get(key, 0) + row["count"]
        return totals

    async def calls(self, endpoint: str) -> int:
        """Requests to one endpoint, whatever their status."""
        return sum(n for (name, _), n in (await self.counts()).items() if name == endpoint)

    async def deliver(self, account: str, service: str, **fields: Any) -> dict[str, Any]:
        """Have the simulator send a callback message: answers ``{id, requestId}``."""
        body = {"account": account, "service": service, **fields}
        return await self.request("POST", "deliveries", body)  # type: ignore[no-any-return]

    async def delivery(self, delivery_id: int) -> dict[str, Any]:
        return await self.request("GET", f"deliveries/{delivery_id}")  # type: ignore[no-any-return]
