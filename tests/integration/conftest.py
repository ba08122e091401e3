"""Every integration test also checks that no secret it wrote reached logs, Events or the
status of any ThingSpaceCallback (the dedicated scenario is test_secrets_stay_secret.py)."""

import base64
import logging
from collections.abc import Iterator

import pytest

#: Shorter values are too likely to occur in ordinary words ("second", "first").
MIN_CHECKED_LENGTH = 8


@pytest.fixture(autouse=True)
def secrets_stay_secret(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("cluster")  # now set up before, torn down after us
    caplog.set_level(logging.DEBUG)
    yield
    plain = {v for v in cluster.secret_values if len(v) >= MIN_CHECKED_LENGTH}
    # As a Secret's data holds them: base64 hides nothing.
    secrets = plain | {base64.b64encode(v.encode()).decode() for v in plain}
    places = {
        "logs": "\n".join(
            f"{r.getMessage()} {r.exc_text or ''}"
            for phase in ("setup", "call")
            for r in caplog.get_records(phase)
        ),
        "events and resources": repr(
            [
                version
                for (resource, _, _), obj in cluster.k8s.objects.items()
                if resource.plural in ("events", "thingspacecallbacks")
                for version in obj.history
            ]
        ),
    }
    for where, text in places.items():
        leaked = sorted(secret for secret in secrets if secret in text)
        assert not leaked, f"secret values leaked into {where}"
