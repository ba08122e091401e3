"""The ``/_sim/`` control surface: JSON over HTTP, no authentication (tests, demo, bench)."""

import math
from dataclasses import replace
from typing import Any

from aiohttp import web

from .delivery import DELIVERIES, Deliveries, NotRegistered
from .faults import ENDPOINTS, FAULT_KINDS, Fault
from .state import (
    BOOLEAN_SETTINGS,
    CHOICE_SETTINGS,
    LIVE_SETTINGS,
    NUMERIC_SETTINGS,
    STATE,
    Registration,
    SimulatorState,
)

TRIGGER_FIELDS = ("account", "service", "payload", "deviceIds")


def _state(request: web.Request) -> SimulatorState:
    state: SimulatorState = request.app[STATE]
    return state


def _deliveries(request: web.Request) -> Deliveries:
    deliveries: Deliveries = request.app[DELIVERIES]
    return deliveries


def _refused(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def sim_registrations(request: web.Request) -> web.Response:
    state = _state(request)
    account = request.match_info.get("account")
    if account is not None:
        items = state.registrations.get(account, {})
        return web.json_response([r.as_json(None, s) for s, r in sorted(items.items())])
    return web.json_response(
        {
            acct: [r.as_json(None, s) for s, r in sorted(items.items())]
            for acct, items in sorted(state.registrations.items())
            if items
        }
    )


async def sim_set_registration(request: web.Request) -> web.Response:
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return _refused("body must be {url, username?, password?}")
    account, service = request.match_info["account"], request.match_info["service"]
    registration = Registration(body["url"], body.get("username") or "", body.get("password") or "")
    _state(request).registrations.setdefault(account, {})[service] = registration
    return web.json_response(registration.as_json(account, service), status=200)


async def sim_delete_registration(request: web.Request) -> web.Response:
    account, service = request.match_info["account"], request.match_info["service"]
    if _state(request).registrations.get(account, {}).pop(service, None) is None:
        return _refused("not registered", 404)
    return web.json_response({"accountName": account, "serviceName": service})


async def sim_add_fault(request: web.Request) -> web.Response:
    state = _state(request)
    body = await request.json()
    endpoint, kind = body.get("endpoint", "*"), body.get("kind", "status")
    if endpoint not in (*ENDPOINTS, "*") or kind not in FAULT_KINDS:
        return _refused(f"endpoint must be one of {ENDPOINTS} or *; kind one of {FAULT_KINDS}")
    injected = Fault(
        id=next(state._fault_ids),
        endpoint=endpoint,
        kind=kind,
        status=int(body.get("status", 503)),
        retry_after=float(body.get("retry_after", 1)),
        delay=float(body.get("delay", 0)),
        count=body.get("count", 1),
        account=body.get("account"),
    )
    state.faults.append(injected)
    return web.json_response({"id": injected.id}, status=201)


async def sim_list_faults(request: web.Request) -> web.Response:
    return web.json_response([vars(f) for f in _state(request).faults])


async def sim_clear_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.json_response({})


async def sim_expire_sessions(request: web.Request) -> web.Response:
    _state(request).sessions.clear()
    return web.json_response({})


async def sim_revoke_tokens(request: web.Request) -> web.Response:
    _state(request).tokens.clear()
    return web.json_response({})


async def sim_requests(request: web.Request) -> web.Response:
    counts = _state(request).request_counts
    rows = [
        {"endpoint": endpoint, "account": account, "status": status, "count": count}
        for (endpoint, account, status), count in sorted(
            counts.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2])
        )
    ]
    return web.json_response({"total": sum(counts.values()), "counts": rows})


async def sim_reset_requests(request: web.Request) -> web.Response:
    _state(request).request_counts.clear()
    return web.json_response({})


async def sim_logins(request: web.Request) -> web.Response:
    state = _state(request)
    locked = sorted(user for user in state.failed_logins if state.locked(user))
    return web.json_response({"failed": dict(state.failed_logins), "locked": locked})


async def sim_reset(request: web.Request) -> web.Response:
    _state(request).reset()
    _deliveries(request).reset()
    return web.json_response({})


async def sim_config(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    problem = _config_problem(body)
    if problem:
        return _refused(problem)
    state.config = replace(state.config, **body)
    return await sim_show_config(request)


async def sim_show_config(request: web.Request) -> web.Response:
    config = _state(request).config
    return web.json_response({name: getattr(config, name) for name in LIVE_SETTINGS})


def _config_problem(body: Any) -> str:
    if not isinstance(body, dict):
        return f"body must be a JSON object with some of {list(LIVE_SETTINGS)}"
    unknown = set(body) - set(LIVE_SETTINGS)
    if unknown:
        return f"cannot change {sorted(unknown)}; settings: {list(LIVE_SETTINGS)}"
    for name, value in body.items():
        if name in NUMERIC_SETTINGS and (not _is_number(value) or value < 0):
            return f"{name} must be a number of seconds, 0 or more"
        if name in BOOLEAN_SETTINGS and not isinstance(value, bool):
            return f"{name} must be true or false"
        if name in CHOICE_SETTINGS and value not in CHOICE_SETTINGS[name]:
            return f"{name} must be one of {list(CHOICE_SETTINGS[name])}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- deliveries ------------------------------------------------------------------------


async def sim_deliver(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    problem = _trigger_problem(body)
    if problem:
        return _refused(problem)
    try:
        delivery = _deliveries(request).send(
            body["account"], body["service"], body.get("payload"), body.get("deviceIds", ())
        )
    except NotRegistered as exc:
        return _refused(f"{exc}; deliveries go only to a registered URL", 404)
    return web.json_response({"id": delivery.id, "requestId": delivery.request_id}, status=202)


def _trigger_problem(body: Any) -> str:
    if not isinstance(body, dict):
        return "body must be a JSON object {account, service, payload?, deviceIds?}"
    unknown = sorted(set(body) - set(TRIGGER_FIELDS))
    if unknown:
        return f"unknown fields {unknown}; deliveries go only to the registered URL"
    if not all(isinstance(body.get(key), str) and body[key] for key in ("account", "service")):
        return "account and service are required strings"
    if "payload" in body and not isinstance(body["payload"], dict):
        return (
            "payload must be a JSON object (the service-specific part of the message); "
            "leave it out for the sample"
        )
    if "deviceIds" in body and not _is_device_list(body["deviceIds"]):
        return (
            'deviceIds must be a non-empty list of {"id": string, "kind": string}; '
            "leave it out for the sample IMEI"
        )
    return ""


def _is_device_list(devices: Any) -> bool:
    return (
        isinstance(devices, list)
        and bool(devices)
        and all(
            isinstance(device, dict)
            and set(device) == {"id", "kind"}
            and all(isinstance(value, str) and value for value in device.values())
            for device in devices
        )
    )


async def sim_deliveries(request: web.Request) -> web.Response:
    account, service = request.query.get("account"), request.query.get("service")
    return web.json_response(
        [
            delivery.as_json()
            for delivery in _deliveries(request).history.values()
            if account in (None, delivery.account) and service in (None, delivery.service)
        ]
    )


async def sim_delivery(request: web.Request) -> web.Response:
    history = _deliveries(request).history
    key = request.match_info["id"]
    delivery = history.get(int(key)) if key.isdigit() else None
    if delivery is None:
        return _refused(f"no delivery {key}", 404)
    return web.json_response(delivery.as_json())


async def sim_forget_deliveries(request: web.Request) -> web.Response:
    _deliveries(request).forget_finished()
    return web.json_response({})


ROUTES = [
    web.get("/_sim/registrations", sim_registrations),
    web.get("/_sim/registrations/{account}", sim_registrations),
    web.put("/_sim/registrations/{account}/{service}", sim_set_registration),
    web.delete("/_sim/registrations/{account}/{service}", sim_delete_registration),
    web.post("/_sim/faults", sim_add_fault),
    web.get("/_sim/faults", sim_list_faults),
    web.delete("/_sim/faults", sim_clear_faults),
    web.post("/_sim/sessions/expire", sim_expire_sessions),
    web.post("/_sim/tokens/revoke", sim_revoke_tokens),
    web.get("/_sim/requests", sim_requests),
    web.delete("/_sim/requests", sim_reset_requests),
    web.get("/_sim/logins", sim_logins),
    web.post("/_sim/reset", sim_reset),
    web.get("/_sim/config", sim_show_config),
    web.put("/_sim/config", sim_config),
    web.post("/_sim/deliveries", sim_deliver),
    web.get("/_sim/deliveries", sim_deliveries),
    web.get("/_sim/deliveries/{id}", sim_delivery),
    web.delete("/_sim/deliveries", sim_forget_deliveries),
]
