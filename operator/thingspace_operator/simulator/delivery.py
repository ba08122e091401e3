"""Callback messages sent to registered listeners, the way ThingSpace sends them.

Section 7 of ../shared/reference/thingspace-api.md: an HTTP POST with a JSON body to the
URL registered for the account and service, the callback username and password echoed in
the body (no Authorization header: user-info in the URL is removed before the POST and
never reaches the history or the log); success only on 2xx; after a failure three more
attempts at an interval (five minutes), then the message is archived. Each attempt goes
to the URL registered at that moment, never to any other.
"""

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from ..thingspace.models import display_url
from .samples import sample_payload, utc_now
from .state import Registration, SimulatorState

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
#: The device of the reference's envelope example, for messages that name none.
DEFAULT_DEVICE_IDS = ({"id": "490154203237518", "kind": "IMEI"},)
#: Fields of every message that the simulator sets; a given payload cannot change them.
ENVELOPE_FIELDS = frozenset(
    {
        "username",
        "password",
        "requestId",
        "deviceIds",
        "status",
        "callbackCount",
        "maxCallbackThreshold",
    }
)

#: The coarse life cycle of a message: ``pending`` until delivered or archived.
Status = Literal["pending", "delivered", "archived"]
#: Where a message is now: ``queued`` (no attempt started yet), ``in_flight`` (an attempt
#: waits for the listener's answer), ``retrying`` (an attempt failed; the next one starts
#: at ``nextAttemptAt``), then ``delivered`` or ``archived`` for good.
DeliveryState = Literal["queued", "in_flight", "retrying", "delivered", "archived"]
#: One attempt: ``in_flight`` until the listener answers or it fails; ``delivered`` on a
#: 2xx; ``failed`` on any other status or no answer (``error`` says why).
AttemptState = Literal["in_flight", "delivered", "failed"]


class NotRegistered(LookupError):
    """Nothing is registered for the account and service: there is nowhere to deliver."""


@dataclass
class Attempt:
    number: int
    url: str
    at: str
    state: AttemptState = "in_flight"
    status: int | None = None
    error: str = ""
    finished_at: str = ""

    def answered(self, status: int) -> None:
        self.status = status
        self.finish("delivered" if 200 <= status < 300 else "failed")

    def failed(self, error: str) -> None:
        self.error = error
        self.finish("failed")

    def finish(self, state: AttemptState) -> None:
        self.state, self.finished_at = state, utc_now()

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "number": self.number,
            "url": self.url,
            "state": self.state,
            "status": self.status,
        }
        if self.error:
            item["error"] = self.error
        item["at"] = self.at
        if self.finished_at:
            item["finishedAt"] = self.finished_at
        return item


@dataclass
class Delivery:
    """One callback message and its attempts; ``requestId`` is the same on every attempt."""

    id: int
    account: str
    service: str
    payload: dict[str, Any] = field(repr=False)
    device_ids: list[dict[str, str]]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: Status = "pending"
    state: DeliveryState = "queued"
    reason: str = ""
    next_attempt_at: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    def message(self, registration: Registration, number: int) -> dict[str, Any]:
        """The JSON body of attempt ``number``, with the credentials registered now."""
        echoed = (("username", registration.username), ("password", registration.password))
        credentials = {key: value for key, value in echoed if value}
        return {
            **credentials,
            "requestId": self.request_id,
            "deviceIds": self.device_ids,
            **self.payload,
            "status": "Success",
            "callbackCount": number,
            "maxCallbackThreshold": MAX_ATTEMPTS,
        }

    def start(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.state, self.next_attempt_at = "in_flight", ""

    def wait(self, seconds: float) -> None:
        """The last attempt failed: the next one starts in ``seconds``."""
        self.state = "retrying"
        self.next_attempt_at = utc_now(seconds)

    def finish(self, status: Literal["delivered", "archived"], reason: str = "") -> None:
        self.status, self.state, self.reason, self.next_attempt_at = status, status, reason, ""
        log.info("delivery %d (%s %s): %s %s", self.id, self.account, self.service, status, reason)

    def as_json(self) -> dict[str, Any]:
        """The history entry. Never the message: that carries the callback credentials."""
        item: dict[str, Any] = {
            "id": self.id,
            "requestId": self.request_id,
            "account": self.account,
            "service": self.service,
            "status": self.status,
            "state": self.state,
        }
        if self.reason:
            item["reason"] = self.reason
        if self.next_attempt_at:
            item["nextAttemptAt"] = self.next_attempt_at
        return {
            **item,
            "maxAttempts": MAX_ATTEMPTS,
            "attempts": [attempt.as_json() for attempt in self.attempts],
        }


def service_part(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``payload`` goes into a message: everything but the envelope fields."""
    return {key: value for key, value in payload.items() if key not in ENVELOPE_FIELDS}


class Deliveries:
    """Sends callback messages, retries them and keeps their history.

    One HTTP session while the app serves (``context`` is an aiohttp cleanup context);
    each message is an asyncio task, cancelled on reset and when the app stops.
    """

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.history: dict[int, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        try:
            yield
        finally:
            await asyncio.gather(*self._cancel_pending(), return_exceptions=True)
            await self._http.close()
            self._http = None

    def send(
        self,
        account: str,
        service: str,
        payload: Mapping[str, Any] | None = None,
        device_ids: Sequence[Mapping[str, str]] = (),
    ) -> Delivery:
        """Start delivering one message to what is registered for ``account``/``service``."""
        if self.state.registration(account, service) is None:
            raise NotRegistered(f"nothing is registered for {service} of account {account}")
        if payload is None:
            payload = sample_payload(account, service)
        delivery = Delivery(
            next(self._ids),
            account,
            service,
            service_part(payload),
            [dict(device) for device in device_ids or DEFAULT_DEVICE_IDS],
        )
        self.history[delivery.id] = delivery
        task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    @property
    def running(self) -> int:
        """Messages still being sent or waiting for their next attempt."""
        return len(self._tasks)

    def forget_finished(self) -> None:
        self.history = {key: d for key, d in self.history.items() if d.status == "pending"}

    def reset(self) -> None:
        """Forget every message and cancel pending retries."""
        self._cancel_pending()
        self.history.clear()

    def _cancel_pending(self) -> list[asyncio.Task[None]]:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            for number in range(1, MAX_ATTEMPTS + 1):
                if number > 1:
                    wait = self.state.config.delivery_retry_seconds
                    delivery.wait(wait)
                    await asyncio.sleep(wait)
                registration = self.state.registration(delivery.account, delivery.service)
                if registration is None:
                    reason = f"{delivery.service} was deregistered before attempt {number}"
                    delivery.finish("archived", reason)
                    return
                if await self._attempt(delivery, number, registration):
                    delivery.finish("delivered")
                    return
            delivery.finish("archived", f"no 2xx answer in {MAX_ATTEMPTS} attempts")
        except asyncio.CancelledError:
            delivery.finish("archived", "the simulator was reset or stopped")
            raise
        except Exception:
            log.exception("delivery %d failed in the simulator", delivery.id)
            delivery.finish("archived", "simulator error")

    async def _attempt(self, delivery: Delivery, number: int, registration: Registration) -> bool:
        if self._http is None:
            raise RuntimeError("the simulator is not serving")
        # Without user-info: aiohttp would turn it into an Authorization header.
        url = display_url(registration.url)
        attempt = Attempt(number, url, utc_now())
        delivery.start(attempt)
        timeout = self.state.config.delivery_timeout_seconds
        try:
            async with self._http.post(
                url,
                json=delivery.message(registration, number),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                attempt.answered(response.status)
        except TimeoutError:
            attempt.failed(f"no answer within {timeout:g} s")
        except (aiohttp.ClientError, ValueError) as exc:
            attempt.failed(f"{type(exc).__name__}: {exc}")
        finally:
            if attempt.state == "in_flight":  # cancelled, or the simulator failed
                attempt.failed("not finished: the simulator stopped this attempt")
        log.info(
            "delivery %d (%s %s) attempt %d to %s: %s",
            delivery.id,
            delivery.account,
            delivery.service,
            number,
            url,
            attempt.status or attempt.error,
        )
        return attempt.state == "delivered"


DELIVERIES = web.AppKey("deliveries", Deliveries)
