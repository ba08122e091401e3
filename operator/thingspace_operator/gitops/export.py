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
from ..thingspace.models import Callback

PLACEHOLDER = "REPLACE-ME"
PLACEHOLDER_NOTE = (
    "# Placeholder values: put the listener's real callback credentials here before applying,\n"
    "# or the operator re-registers the callback with these placeholders.\n"
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


def resource_name(callback: Callback) -> str:
    """A DNS-1123 name from the service and account: the same registration, the same name."""
    raw = f"{callback.service_name}-{callback.account_name}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:200]


def export(callbacks: Iterable[Callback], options: ExportOptions) -> list[Exported]:
    exported = []
    for callback in sorted(callbacks, key=lambda c: (c.account_name, c.service_name)):
        exported.append(_callback_manifest(callback, options))
        if callback.has_credentials:
            exported.append(_credentials_manifest(callback, options))
    return exported


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
    return Exported(f"{name}.thingspacecallback.yaml", manifest)


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
    return Exported(f"{name}.secret.yaml", manifest, has_placeholders=not live)
