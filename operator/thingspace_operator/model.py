"""The ThingSpaceCallback resource as the operator reads it: names, spec parsing, policies.

The CRD schema already enforces most rules, but the operator never trusts that: a spec
that slipped past validation becomes an ``InvalidSpec`` condition, not a crash.
"""

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .thingspace.services import (
    ACCOUNT_NAME_MAX_LENGTH,
    ACCOUNT_NAME_RE,
    CALLBACK_SERVICE_NAMES,
)

GROUP = "thingspace.io"
VERSION = "v1alpha1"
PLURAL = "thingspacecallbacks"
KIND = "ThingSpaceCallback"
FINALIZER = "thingspace.io/deregister"
RECONCILE_REQUESTED_ANNOTATION = "thingspace.io/reconcile-requested-at"
# kopf's own bookkeeping; kept apart from thingspace.io/ so user annotations there count.
KOPF_ANNOTATION_PREFIX = "kopf.thingspace.io"
KOPF_EARLIER_DIFFBASE_KEY = "last-handled-configuration"  # before it moved into status

E = TypeVar("E", bound=enum.StrEnum)

# Whitespace spelled out: Python's \s also matches Unicode spaces, Go's (the API server's)
# does not; and fullmatch, as Python's $ also matches before a final newline.
URL_RE = re.compile(r"^https?://[^\t\n\f\r /?#]+[^\t\n\f\r ]*$")
URL_MAX_LENGTH = 2048


class DeletionPolicy(enum.StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class ManagementPolicy(enum.StrEnum):
    MANAGE = "Manage"
    OBSERVE_ONLY = "ObserveOnly"


class InvalidSpec(ValueError):
    """The resource's spec cannot be acted on; the message says which field and why."""


@dataclass(frozen=True)
class CallbackSpec:
    account_name: str  # with account_ref: "" until resolved from the ThingSpaceAccount
    service_name: str
    url: str
    credentials_secret: str  # "" with account_ref: the account holds the credentials
    callback_credentials_secret: str | None = None
    account_ref: str | None = None
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    management_policy: ManagementPolicy = ManagementPolicy.MANAGE
    suspend: bool = False

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> "CallbackSpec":
        account_ref = _secret_name(spec, "accountRef")
        if account_ref is not None:
            if "accountName" in spec or "credentialsSecretRef" in spec:
                raise InvalidSpec(
                    "spec.accountRef replaces spec.accountName and spec.credentialsSecretRef: "
                    "give one form or the other"
                )
            account, credentials = "", ""
        else:
            account = _required_string(spec, "accountName")
            credentials = _secret_name(spec, "credentialsSecretRef", required=True) or ""
        if account_ref is None and (
            len(account) > ACCOUNT_NAME_MAX_LENGTH or not ACCOUNT_NAME_RE.fullmatch(account)
        ):
            raise InvalidSpec(
                "spec.accountName must be a billing account name such as 0000123456-00001"
            )
        service = _required_string(spec, "serviceName")
        if service not in CALLBACK_SERVICE_NAMES:
            raise InvalidSpec(f"spec.serviceName {service!r} is not a known callback service")
        url = _required_string(spec, "url")
        if len(url) > URL_MAX_LENGTH or not URL_RE.fullmatch(url):
            raise InvalidSpec("spec.url must be an http:// or https:// URL")
        suspend = spec.get("suspend", False)
        if not isinstance(suspend, bool):
            raise InvalidSpec("spec.suspend must be true or false")
        return cls(
            account_name=account,
            service_name=service,
            url=url,
            credentials_secret=credentials,
            callback_credentials_secret=_secret_name(spec, "callbackCredentialsSecretRef"),
            account_ref=account_ref,
            deletion_policy=_choice(spec, "deletionPolicy", DeletionPolicy, DeletionPolicy.DELETE),
            management_policy=_choice(
                spec, "managementPolicy", ManagementPolicy, ManagementPolicy.MANAGE
            ),
            suspend=suspend,
        )


def _required_string(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"spec.{key} is required")
    return value


def _secret_name(spec: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    ref = spec.get(key)
    if ref is None and not required:
        return None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"spec.{key}.name is required")
    return name


def _choice(spec: Mapping[str, Any], key: str, choices: type[E], default: E) -> E:
    value = spec.get(key)
    if value is None:
        return default
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(choice.value for choice in choices)
        raise InvalidSpec(f"spec.{key} must be one of {allowed}") from None
