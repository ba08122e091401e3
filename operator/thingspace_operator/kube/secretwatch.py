"""The watch of credential Secrets, filtered by the API server to the labelled ones.

A cluster holds thousands of Secrets the operator has no business with (Helm releases,
TLS certificates, tokens), often hundreds of KiB each. kopf cannot filter a watch on the
server, so watching Secrets through kopf received every byte of them. This watch asks the
API server for Secrets labelled ``thingspace.io/credentials=true`` only; an unlabelled
Secret never reaches the operator unless a ThingSpaceCallback references it, and then only
by a GET of that one Secret (kube/secrets.py).

The list and watch themselves are kube/listwatch.py's.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .connection import KubeConnection
from .listwatch import ListWatch, Scope, WatchEvent

CREDENTIALS_LABEL = "thingspace.io/credentials"
CREDENTIALS_SELECTOR = f"{CREDENTIALS_LABEL}=true"
PAGE_SIZE = 250


@dataclass(frozen=True)
class SecretEvent:
    namespace: str
    name: str
    version: str
    data: Mapping[str, str] | None = field(repr=False)
    """Base64-encoded data; None: deleted, or no longer labelled."""
    initial: bool = False
    """Part of the first listing: what was already there when the operator started."""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @classmethod
    def of(cls, obj: Mapping[str, Any], deleted: bool, initial: bool) -> "SecretEvent":
        meta = obj.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            version=str(meta.get("resourceVersion") or ""),
            data=None if deleted else dict(obj.get("data") or {}),
            initial=initial,
        )


Listener = Callable[[SecretEvent], Awaitable[None]]


class LabelledSecretWatch(ListWatch):
    """Keeps ``listener`` informed of every labelled Secret in scope, until stopped."""

    def __init__(
        self,
        connection: KubeConnection,
        listener: Listener,
        namespaces: tuple[str, ...] = (),
        server_timeout: float = 300.0,
        retry_max_seconds: float = 30.0,
    ) -> None:
        async def deliver(event: WatchEvent) -> None:
            deleted = event.type == "DELETED"
            await listener(SecretEvent.of(event.object, deleted, event.initial))

        super().__init__(
            connection,
            _secrets_path,
            deliver,
            namespaces,
            what="labelled Secrets",
            label_selector=CREDENTIALS_SELECTOR,
            page_size=PAGE_SIZE,
            server_timeout=server_timeout,
            retry_max_seconds=retry_max_seconds,
        )


def _secrets_path(scope: Scope) -> str:
    return f"/api/v1/namespaces/{scope}/secrets" if scope else "/api/v1/secrets"
