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

from .delivery import Deliveries, Delivery
from .server import SimulatorServer, create_app, run_simulator
from .state import DEMO_APPS, DEMO_USERS, Registration, SimulatorConfig, SimulatorState

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
