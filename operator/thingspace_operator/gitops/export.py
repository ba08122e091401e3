"""Live registrations as ready-to-apply manifests (pure: no I/O).

Applying the output adopts every registration with no ThingSpace write: each
ThingSpaceCallback declares exactly what is live. Callback credentials go into Secrets
with placeholder values unless the caller asks for the live ones explicitly.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..kube.secretwatch import CREDENTIALS_LABEL
from ..model import GROUP, KIND, VERSION
from ..thingspace.models import Callback, display_url
from ..thingspace.services import CALLBACK_SERVICE_NAMES

#: Empty on purpose: the operator refuses empty callback credentials (CredentialsInvalid,
#: no write), so a Secret applied before it is filled in cannot overwrite the live ones.
PLACEHOLDER = ""
PLACEHOLDER_NOTE = (
    "# Fill in the listener's callback credentials before applying. Until then the\n"
    "# ThingSpaceCallback reports CredentialsInvalid and ThingSpace is left untouched.\n"
)


@dataclass(frozen=True)
class ExportOptions:
    namespace: str | None = None
    credentials_secret: str = "thingspace-credentials"  # inline form's credentialsSecretRef
    account_refs: dict[str, str] = field(default_factory=dict)  # account -> ThingSpaceAccount
    include_credentials: bool = False


@dataclass(frozen=True)
class Exported:
    """One manifest with the file name it is written to (stable across runs)."""

    file_name: str
    manifest: dict[str, Any] = field(repr=False)
    has_placeholders: bool = False
    holds_secrets: bool = False
    """Live callback credentials: a Secret's values, or a user:password@ in a URL."""


def resource_name(callback: Callback) -> str:
    """A DNS-1123 name from the service and account: the same registration, the same name."""
    raw = f"{callback.service_name}-{callback.account_name}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:200]


def export(
    callbacks: Iterable[Callback], options: ExportOptions
) -> tuple[list[Exported], list[str]]:
    """The manifests, and why any live registration was left out."""
    exported, skipped = [], []
    named: dict[str, str] = {}  # resource name -> the account that took it
    for callback in sorted(callbacks, key=lambda c: (c.account_name, c.service_name)):
        why = _not_exportable(callback, options)
        taken_by = named.setdefault(resource_name(callback), callback.account_name)
        if not why and taken_by != callback.account_name:
            # Names are lowercase: accounts that differ only in case would share a file.
            why = f"it would have the name of account {taken_by}'s; export it on its own"
        if why:
            skipped.append(f"{callback.service_name} of account {callback.account_name}: {why}")
            continue
        exported.append(_callback_manifest(callback, options))
        if callback.has_credentials:
            exported.append(_credentials_manifest(callback, options))
    return exported, skipped


def _not_exportable(callback: Callback, options: ExportOptions) -> str:
    if callback.service_name not in CALLBACK_SERVICE_NAMES:
        return "not a service name the CRD accepts"
    if _url_carries_credentials(callback) and not options.include_credentials:
        return "its URL carries credentials (user:password@); export with --include-credentials"
    return ""


def _metadata(name: str, options: ExportOptions) -> dict[str, Any]:
    if options.namespace:
        return {"name": name, "namespace": options.namespace}
    return {"name": name}


def _callback_manifest(callback: Callback, options: ExportOptions) -> Exported:
    name = resource_name(callback)
    account_ref = options.account_refs.get(callback.account_name)
    spec: dict[str, Any] = (
        {"accountRef": {"name": account_ref}}
        if account_ref
        else {
            "accountName": callback.account_name,
            "credentialsSecretRef": {"name": options.credentials_secret},
        }
    )
    spec.update(serviceName=callback.service_name, url=callback.url)
    if callback.has_credentials:
        spec["callbackCredentialsSecretRef"] = {"name": _credentials_name(callback)}
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": _metadata(name, options),
        "spec": spec,
    }
    holds_secrets = _url_carries_credentials(callback)
    return Exported(f"{name}.thingspacecallback.yaml", manifest, holds_secrets=holds_secrets)


def _url_carries_credentials(callback: Callback) -> bool:
    return display_url(callback.url) != callback.url


def _credentials_name(callback: Callback) -> str:
    return f"{resource_name(callback)}-callback-credentials"


def _credentials_manifest(callback: Callback, options: ExportOptions) -> Exported:
    name = _credentials_name(callback)
    live = options.include_credentials
    metadata = _metadata(name, options)
    metadata["labels"] = {CREDENTIALS_LABEL: "true"}
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": {
            "username": callback.username if live else PLACEHOLDER,
            "password": callback.password if live else PLACEHOLDER,
        },
    }
    return Exported(f"{name}.secret.yaml", manifest, has_placeholders=not live, holds_secrets=live)
