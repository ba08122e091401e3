"""kopf settings whose wrong value only shows at scale (the benchmark found them)."""

import gc

import kopf

from thingspace_operator.cli import tune_gc
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


def test_garbage_collection_keeps_pythons_thresholds_and_freezes_the_modules() -> None:
    """Rarer young collections let the garbage of a burst pile up: 151 MB instead of about
    130 MB at the peak of converging 10,000 resources (docs/performance.md)."""
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
