"""thingspace-sim: a faithful simulator of the ThingSpace API parts the operator uses.

Real paths, JSON shapes, error envelopes, token lifetimes and callback deliveries (see
../shared/reference/thingspace-api.md), plus the ``/_sim/`` control surface. Codes that
ThingSpace does not document are invented here and listed as simulator-only in
docs/simulator.md. It may use ``thingspace.services`` (names and limits); nothing
Kubernetes.

Modules: ``state`` (configuration and what the simulator knows), ``errors`` and
``faults`` (answers other than 200), ``api`` (ThingSpace routes and auth), ``delivery``
and ``samples`` (callback messages to listeners), ``control`` (``/_sim/``), ``server``
(the app) and ``cli`` (the ``thingspace-sim`` command).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .delivery import Deliveries, Delivery
    from .server import SimulatorServer, create_app, run_simulator
    from .state import DEMO_APPS, DEMO_USERS, Registration, SimulatorConfig, SimulatorState

# Imported on first use, not with the package: ``thingspace-sim`` (cli.py) installs its
# SIGTERM handler before aiohttp and the rest load.
_MODULES = {
    "Deliveries": "delivery",
    "Delivery": "delivery",
    "SimulatorServer": "server",
    "create_app": "server",
    "run_simulator": "server",
    "DEMO_APPS": "state",
    "DEMO_USERS": "state",
    "Registration": "state",
    "SimulatorConfig": "state",
    "SimulatorState": "state",
}

__all__ = [
    "DEMO_APPS",
    "DEMO_USERS",
    "Deliveries",
    "Delivery",
    "Registration",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorState",
    "create_app",
    "run_simulator",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value
