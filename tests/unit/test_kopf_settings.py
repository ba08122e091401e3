"""kopf settings whose wrong value only shows at scale (the benchmark found them)."""

import gc

import kopf

from thingspace_operator.cli import tune_gc
from thingspace_operator.config import OperatorConfig
from thingspace_operator.handlers import HandledConfiguration, configure_kopf


def test_no_worker_limit() -> None:
    """A limit barely lowered the peak of a burst (kopf queues the waiting objects' events
    with their bodies) and slowed convergence; with kopf indexes, 500 workers once hung a
    restart over 1000 resources (S6)."""
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
