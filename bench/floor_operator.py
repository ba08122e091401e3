"""The least a kopf operator of this resource does (for bench/floor.py): the operator's kopf
settings and connection pool, a finalizer, and one handler that writes Ready and posts one
Event. No ThingSpace call, no Secret, no drift view: three Kubernetes writes and three watch
events per resource, as the operator makes, and nothing else.

    python -m bench.floor_operator        # KUBECONFIG names the cluster
"""

import asyncio
import logging
from typing import Any

import kopf

from thingspace_operator.cli import block_kubernetes
from thingspace_operator.config import OperatorConfig
from thingspace_operator.handlers import configure_kopf
from thingspace_operator.kube.login import KOPF_CONNECTIONS, bounded_session
from thingspace_operator.kube.status import utc_timestamp
from thingspace_operator.model import GROUP, PLURAL, VERSION

RESOURCE = (GROUP, VERSION, PLURAL)


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        """The operator's bounded pool (kube/login.py), one watch stream."""
        info = kopf.login_with_kubeconfig(**kwargs)
        return bounded_session(info, KOPF_CONNECTIONS + 1) if info else None

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, OperatorConfig())

    @kopf.on.create(*RESOURCE, registry=registry)
    def ready(patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        patch.status["conditions"] = [
            {"type": "Ready", "status": "True", "reason": "Floor", "message": "",
             "lastTransitionTime": utc_timestamp()}
        ]  # fmt: skip
        kopf.event(body, type="Normal", reason="Registered", message="floor")

    @kopf.on.delete(*RESOURCE, registry=registry)
    def let_go(**_: Any) -> None:
        """Only so that kopf keeps a finalizer, as the operator does."""

    return registry


def main() -> None:
    block_kubernetes()  # as the operator does: kopf then skips the client's import
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(kopf.operator(registry=build_registry(), clusterwide=True, standalone=True))


if __name__ == "__main__":
    main()
