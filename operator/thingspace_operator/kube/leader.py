"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's algorithm.

A standby only reads the Lease. It may take the Lease when nobody holds it, or when the
holder has not changed it for the lease duration *as measured on the standby's own clock*
(clocks of different machines are never compared). The leader renews every retry period;
every write carries the resourceVersion it read, so two candidates can never both win.

Fencing: the leader counts its lease from the moment it *sent* the last successful renewal,
which is before the API server stored it and so before any standby started counting. Once
``renew_deadline`` (shorter than the lease duration) has passed since then, the process ends
at once (``Fence``): no ThingSpace call or Kubernetes write can follow.
"""

import asyncio
import contextlib
import datetime
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .connection import KubeConnection
from .events import event_manifest

log = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
FENCED_EXIT_CODE = 3
"""The exit status of a leader that could not renew its lease in time."""


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, and its version for optimistic concurrency."""

    holder: str  # "": released, anyone may take it
    duration: float
    transitions: int
    acquired: str
    version: str
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, body: dict[str, Any]) -> "LeaseRecord":
        spec, meta = body.get("spec") or {}, body.get("metadata") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquired=str(spec.get("acquireTime") or ""),
            version=str(meta.get("resourceVersion") or ""),
            uid=str(meta.get("uid") or ""),
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        )


def takeable(record: LeaseRecord | None, unchanged_since: float, now: float, me: str) -> bool:
    """May ``me`` write itself into the Lease now? Yes when there is no Lease, nobody holds
    it, ``me`` holds it, or its holder has not touched it for its duration since this
    process saw it change (``unchanged_since``, on this process's monotonic clock)."""
    if record is None or not record.holder or record.holder == me:
        return True
    return now - unchanged_since >= record.duration


def micro_time(when: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime."""
    when = when or datetime.datetime.now(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def released_spec(record: LeaseRecord) -> dict[str, Any]:
    """client-go's release: nobody holds it, and its 1 s duration lets anyone take it."""
    now = micro_time()
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": record.transitions,
    }


def lease_spec(record: LeaseRecord | None, me: str, duration: float) -> dict[str, Any]:
    """The spec that makes ``me`` the holder of the Lease ``record`` describes."""
    now = micro_time()
    renewing = record is not None and record.holder == me
    transitions = 0 if record is None else record.transitions + (not renewing)
    return {
        "holderIdentity": me,
        # Rounded up: written shorter than configured, a standby could take over while this
        # leader, renewing against its own (longer) deadline, still acts.
        "leaseDurationSeconds": max(1, math.ceil(duration)),
        "acquireTime": record.acquired if renewing and record is not None else now,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


class LeaderElector:
    """Acquire, keep and release one Lease. Not reusable: one process, one term."""

    def __init__(
        self,
        connection: KubeConnection,
        config: LeaseConfig,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self._connection = connection
        self._on_change = on_change
        self._session: aiohttp.ClientSession | None = None
        self.observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic time the observed record was first seen
        self.renewed_at = float("-inf")  # monotonic send time of the last successful write
        self.leading = False
        self._changed = asyncio.Event()
        self._stop_renewing = asyncio.Event()
        self._wake = asyncio.Event()  # renew now: stopping, or an annotation to store
        self._known = asyncio.Event()  # the Lease has been read (or written) once
        # Annotations this process sets ("" removes one); written with every write.
        self._annotations: dict[str, str] = {}

    @property
    def leader(self) -> str:
        """The holder as last observed ("" if none)."""
        return self.observed.holder if self.observed is not None else ""

    @property
    def known(self) -> bool:
        """Whether the Lease has been read or written once: who leads is known."""
        return self._known.is_set()

    async def wait_known(self, seconds: float) -> bool:
        """``known``, waiting for it up to ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._known.wait()
        return self.known

    @property
    def deadline(self) -> float:
        """The monotonic time after which this process must no longer act."""
        return self.renewed_at + self.config.renew_deadline

    @property
    def names(self) -> tuple[str, str]:
        """Namespace and name of the Lease."""
        return self.config.namespace, self.config.name

    @property
    def _path(self) -> str:
        return LEASES.format(namespace=self.config.namespace)

    async def acquire(self) -> None:
        """Return once this process leads. A standby re-tries every retry period, and at
        once when the Lease changes (a released Lease is taken within a round trip)."""
        if await self._try_write():
            return
        watcher = asyncio.create_task(self._watch_changes(), name="lease watch")
        try:
            while True:
                await self._wait_for_change(self._jittered(self.config.retry_period))
                self._changed.clear()  # a change seen during the attempt wakes the next wait
                if await self._try_write():
                    return
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def keep(self) -> None:
        """Renew every retry period until ``stop_renewing``. Return early, with ``leading``
        false, as soon as leadership is lost: another holder took the Lease, the Lease is
        gone, or no renewal succeeded before the renew deadline."""
        while not await self._stopped_within(self.config.retry_period):
            while not await self._try_write():
                if not self.leading or time.monotonic() >= self.deadline:
                    self._set_leading(False)
                    return
                if await self._stopped_within(min(self.config.retry_period, _left(self.deadline))):
                    return

    def stop_renewing(self) -> None:
        """Let ``keep`` return after the attempt in progress (never cut a write halfway:
        the release that follows needs the Lease's current version)."""
        self._stop_renewing.set()
        self._wake.set()

    def annotate(self, key: str, value: str) -> None:
        """Store ``value`` in the Lease's annotation ``key`` ("" removes it) with the next
        renewal, which starts at once: the next holder reads it when it takes over."""
        self._annotations[key] = value
        self._wake.set()

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait for the next renewal: ``seconds``, or less when woken; True once stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()
        return self._stop_renewing.is_set()

    async def release(self) -> None:
        """Hand the Lease back (holder emptied, duration 1 s) so a standby takes it at
        once. Only called once this process has stopped acting. A leader past its deadline
        leaves the Lease alone (someone else may hold it by now); a standby stopped in the
        middle of taking it releases it too, as it never acted."""
        if self.leading and time.monotonic() >= self.deadline:
            return
        until = self.deadline if self.leading else time.monotonic() + self.config.retry_period
        try:
            for _ in range(2):  # a renewal may have landed since the Lease was last read
                record = await self._get(until)
                if record is None or record.holder != self.config.identity:
                    break
                try:
                    await self._put(record, released_spec(record), until)
                except LeaseConflict:
                    continue
                log.info("Released lease %s/%s", self.config.namespace, self.config.name)
                break
        except (aiohttp.ClientError, TimeoutError, LeaseRequestFailed) as exc:
            log.warning("Could not release the lease (%s); it expires by itself", exc)
        self._set_leading(False)

    async def announce(self, message: str) -> None:
        """An Event on the Lease (``kubectl describe lease`` shows who led when). Best
        effort: a failure is logged, never fatal."""
        namespace, name = self.names
        involved = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": name,
            "namespace": namespace,
            "uid": self.observed.uid if self.observed is not None else "",
        }
        event = event_manifest(
            namespace, involved, "Normal", "LeaderElection", message, self.config.identity
        )
        until = time.monotonic() + self.config.retry_period
        try:
            await self._request("POST", f"/api/v1/namespaces/{namespace}/events", until, event)
        except (aiohttp.ClientError, TimeoutError, LeaseRequestFailed, LeaseConflict) as exc:
            log.warning("Could not post the leader election Event: %s", exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one attempt ----------------------------------------------------------------------

    async def _try_write(self) -> bool:
        """One acquire-or-renew: read the Lease, and write ``me`` into it if allowed.
        True when this process holds the Lease afterwards."""
        sent = time.monotonic()
        # A leader's attempt must end by its deadline; a standby's within a retry period.
        until = self.deadline if self.leading else sent + self.config.retry_period
        me = self.config.identity
        try:
            record = await self._get(until)
            # A leader whose Lease changed hands or vanished has lost it: it never recreates
            # a Lease someone may have taken and deleted meanwhile.
            lost = self.leading and (record is None or record.holder != me)
            if lost or not takeable(record, self._observed_at, time.monotonic(), me):
                self._set_leading(False)
                return False
            spec = lease_spec(record, me, self.config.lease_duration)
            if record is None:
                written = await self._create(spec, None, until)
            else:
                written = await self._put(record, spec, until)
        except LeaseConflict:
            return False  # someone else wrote first; the next read tells who
        except (aiohttp.ClientError, TimeoutError, LeaseRequestFailed) as exc:
            log.warning("Lease %s/%s: %s", *self.names, exc)
            return False
        if written.holder != me or not written.version:
            log.warning("Lease %s/%s: the API server did not store this holder", *self.names)
            return False
        self.renewed_at = sent
        self._observe(written)
        self._set_leading(True)
        return True

    def _observe(self, record: LeaseRecord | None) -> None:
        previous = self.observed
        if record is None or previous is None or record.version != previous.version:
            self._observed_at = time.monotonic()
        self.observed = record
        if record is not None:
            self._known.set()
        if (previous.holder if previous else None) != (record.holder if record else None):
            holder = record.holder if record is not None else ""
            if holder != self.config.identity:
                log.info(
                    "Lease %s/%s is held by %s; %s waits as standby",
                    self.config.namespace,
                    self.config.name,
                    holder or "nobody",
                    self.config.identity,
                )
            self._on_change()

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self._known.set()
        if leading != self.leading:
            self.leading = leading
            self._on_change()

    @staticmethod
    def _jittered(period: float) -> float:
        return period * random.uniform(1.0, 1.2)  # client-go's jitter factor

    async def _wait_for_change(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    # --- HTTP -----------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._connection.session()
        return self._session

    async def _get(self, until: float) -> LeaseRecord | None:
        body = await self._request("GET", f"{self._path}/{self.config.name}", until)
        record = LeaseRecord.of(body) if body is not None else None
        self._observe(record)
        return record

    async def _create(
        self, spec: dict[str, Any], record: LeaseRecord | None, until: float
    ) -> LeaseRecord:
        body = await self._request("POST", self._path, until, self._lease(spec, record))
        return LeaseRecord.of(body or {})

    async def _put(self, record: LeaseRecord, spec: dict[str, Any], until: float) -> LeaseRecord:
        lease = self._lease(spec, record)
        lease["metadata"]["resourceVersion"] = record.version
        body = await self._request("PUT", f"{self._path}/{self.config.name}", until, lease)
        return LeaseRecord.of(body or {})

    def _lease(self, spec: dict[str, Any], record: LeaseRecord | None) -> dict[str, Any]:
        """The whole Lease (a PUT replaces it): the annotations it has, with this process's
        own set on top."""
        annotations = {**(record.annotations if record is not None else {}), **self._annotations}
        metadata: dict[str, Any] = {"name": self.config.name, "namespace": self.config.namespace}
        kept = {key: value for key, value in annotations.items() if value}
        if kept:
            metadata["annotations"] = kept
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": spec}  # fmt: skip

    async def _request(
        self, method: str, path: str, until: float, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """One API request that must end by the monotonic time ``until``; None when a GET
        finds nothing (a write that finds nothing is a failure, never a success)."""
        async with self._client().request(
            method,
            self._connection.url(path),
            json=body,
            headers=self._connection.headers(),
            timeout=aiohttp.ClientTimeout(total=_left(until)),
        ) as response:
            if response.status == 404 and method == "GET":
                return None
            return await self._json(response)

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
        if response.status == 409:
            raise LeaseConflict()
        if response.status >= 300:
            # The API server's message names the Lease and verb, never a credential.
            text = (await response.text())[:300]
            raise LeaseRequestFailed(f"HTTP {response.status}: {text}")
        return dict(await response.json())

    async def _watch_changes(self) -> None:
        """Wake the standby whenever the Lease changes. Best effort: without it (a failed
        watch), the standby still polls every retry period."""
        query = {"fieldSelector": f"metadata.name={self.config.name}", "watch": "true"}
        while True:
            if self.observed is not None:
                query["resourceVersion"] = self.observed.version
            try:
                async with self._client().get(
                    self._connection.url(self._path),
                    params={**query, "timeoutSeconds": "300"},
                    headers=self._connection.headers(),
                    timeout=aiohttp.ClientTimeout(total=330, sock_connect=10),
                ) as response:
                    if response.status != 200:
                        raise LeaseRequestFailed(f"HTTP {response.status}")
                    async for _line in response.content:
                        self._changed.set()
            except (aiohttp.ClientError, TimeoutError, LeaseRequestFailed) as exc:
                log.debug("Lease watch ended (%s); polling meanwhile", exc)
            await asyncio.sleep(self.config.retry_period)


def _left(until: float) -> float:
    """Seconds left until the monotonic time ``until`` (at least a sliver, for aiohttp)."""
    return max(0.1, until - time.monotonic())


class LeaseConflict(Exception):
    """Another candidate changed the Lease since it was read."""


class LeaseRequestFailed(Exception):
    """The API server refused or failed a Lease request."""


class Fence:
    """Ends the process the moment the leader's lease may have run out, from a thread of
    its own: a busy or stuck event loop cannot delay it."""

    def __init__(
        self,
        deadline: Callable[[], float],
        on_expired: Callable[[], None] | None = None,
    ) -> None:
        self._deadline = deadline
        self._on_expired = on_expired or exit_fenced
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._guard, name="lease fence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def trip(self) -> None:
        """Leadership is known to be lost: end now, without waiting for the deadline."""
        self._stopped.set()
        self._on_expired()

    def _guard(self) -> None:
        while not self._stopped.is_set():
            left = self._deadline() - time.monotonic()
            if left <= 0:
                self._on_expired()
                return
            self._stopped.wait(min(left, 0.05))


FENCED_MESSAGE = (
    b"CRITICAL thingspace_operator: lost the leader lease (not renewed before the renew "
    b"deadline): exiting at once so that no other call is made; the pod restarts as a "
    b"standby\n"
)


def exit_fenced() -> None:
    """Stop every ThingSpace call and Kubernetes write now: end the process. Written
    straight to stderr: a logging handler's lock, held by a stuck thread, must not delay
    the exit."""
    with contextlib.suppress(OSError):
        os.write(2, FENCED_MESSAGE)
    os._exit(FENCED_EXIT_CODE)
