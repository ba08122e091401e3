"""Spec parsing: a spec that slipped past the CRD schema becomes a clear InvalidSpec."""

import pytest

from thingspace_operator.model import CallbackSpec, DeletionPolicy, InvalidSpec, ManagementPolicy

GOOD = {
    "accountName": "0000123456-00001",
    "serviceName": "QoS",
    "url": "https://listener.example.com/qos",
    "credentialsSecretRef": {"name": "thingspace-credentials"},
}


def test_defaults() -> None:
    spec = CallbackSpec.parse(GOOD)
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.management_policy is ManagementPolicy.MANAGE
    assert spec.callback_credentials_secret is None
    assert spec.suspend is False


def test_all_fields() -> None:
    spec = CallbackSpec.parse(
        {
            **GOOD,
            "callbackCredentialsSecretRef": {"name": "cb"},
            "deletionPolicy": "Orphan",
            "managementPolicy": "ObserveOnly",
            "suspend": True,
        }
    )
    assert (spec.callback_credentials_secret, spec.deletion_policy, spec.management_policy) == (
        "cb",
        DeletionPolicy.ORPHAN,
        ManagementPolicy.OBSERVE_ONLY,
    )
    assert spec.suspend is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"accountName": None}, "accountName"),
        ({"accountName": "12 34"}, "accountName"),
        ({"accountName": "-1"}, "accountName"),
        ({"serviceName": "Nope"}, "serviceName"),
        ({"url": "ftp://x"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": 42}, "url"),
        ({"url": "https://listener.example.com/qos\n"}, "url"),  # the API server refuses it
        ({"url": "https://listener.example.com/q os"}, "url"),
        ({"accountName": "0000123456-00001\n"}, "accountName"),
        ({"credentialsSecretRef": None}, "credentialsSecretRef"),
        ({"credentialsSecretRef": {"name": ""}}, "credentialsSecretRef"),
        ({"callbackCredentialsSecretRef": "cb"}, "callbackCredentialsSecretRef"),
        ({"deletionPolicy": "Keep"}, "deletionPolicy"),
        ({"managementPolicy": "Read"}, "managementPolicy"),
        ({"suspend": "yes"}, "suspend"),
    ],
)
def test_invalid_specs_name_the_field(change: dict[str, object], field: str) -> None:
    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(InvalidSpec, match=f"spec.{field}"):
        CallbackSpec.parse(spec)


def test_a_url_with_unicode_space_is_accepted_as_the_api_server_accepts_it() -> None:
    """Go's \\s (the CRD's pattern, checked by the API server) is ASCII only: a URL the
    API server stored must not become InvalidSpec here (ThingSpace judges it)."""
    assert CallbackSpec.parse({**GOOD, "url": GOOD["url"] + "\u00a0"}).url.endswith("\u00a0")
