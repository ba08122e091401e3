"""kopf settings whose wrong value only shows at scale (the benchmark found them)."""

import kopf

from thingspace_operator.config import OperatorConfig
from thingspace_operator.handlers import HandledConfiguration, configure_kopf


def test_no_worker_limit_so_a_restart_over_a_large_fleet_cannot_deadlock() -> None:
    """At startup each object's worker files it in the inventory, then waits until every
    object is filed: with fewer workers than objects, a restart over the fleet never
    resumes (S6 hung at 1000 resources with 500 workers)."""
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    assert settings.queueing.worker_limit is None


def test_the_handled_configuration_rides_on_the_status_patch() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    assert isinstance(settings.persistence.diffbase_storage, HandledConfiguration)
