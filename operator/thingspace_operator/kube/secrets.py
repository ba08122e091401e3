"""Credential Secrets: read by a GET of their own, parsed, never revealed.

See kube/secretwatch.py for how changes reach the operator.

Error messages name the Secret and the key, never a value.
"""

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from ..thingspace.models import AppCredentials, CredentialsSource
from ..thingspace.services import CALLBACK_CREDENTIAL_MAX_LENGTH
from .connection import KubeApiError, KubeConnection
from .secretwatch import CREDENTIALS_LABEL

APP_CREDENTIAL_KEYS = ("appKey", "appSecret", "username", "password")
CALLBACK_CREDENTIAL_KEYS = ("username", "password")


class CredentialsNotFound(Exception):
    """The referenced Secret does not exist (or cannot be read)."""


class CredentialsInvalid(Exception):
    """The Secret exists but a key is missing, empty, not UTF-8 or too long."""


@dataclass(slots=True)
class _Known:
    version: str
    data: dict[str, str | bytes] = field(repr=False)  # as the API serves it: base64
    watched: bool = False  # kept fresh by the labelled-Secret watch
    fetched_at: float = 0.0  # monotonic time the read started (or of the watch event)


class SecretReader:
    """Reads referenced Secrets in the resource's namespace through the Kubernetes API.

    Only Secrets a ThingSpaceCallback references are ever read, each by a GET of its own.
    What was read is kept in memory: a labelled Secret (``thingspace.io/credentials=true``)
    is then kept fresh by the Secret watch, any other is read again when a reconcile asks
    for data newer than its read (the drift check does, once per period).
    """

    def __init__(self, connection: KubeConnection) -> None:
        self._connection = connection
        self._known: dict[tuple[str, str], _Known] = {}
        # One GET in flight per Secret, with the time it started.
        self._fetching: dict[tuple[str, str], tuple[float, asyncio.Future[_Known]]] = {}
        # Secrets a read found missing (or forbidden): when that read started, and why. A
        # drift period's checks of many resources waiting on one Secret then cost one GET.
        self._absent: dict[tuple[str, str], tuple[float, str]] = {}
        self.tracked: Callable[[tuple[str, str], str], bool] = lambda _key, _version: False
        """Whether the Secret watch follows a Secret now: only then is what a GET read of it
        kept fresh without reading again (set when the watch starts)."""

    def knows(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._known

    def cached(self) -> set[tuple[str, str]]:
        """The Secrets whose data the operator holds."""
        return set(self._known)

    def remember(
        self,
        namespace: str,
        name: str,
        version: str,
        data: Mapping[str, str | bytes],
        watched: bool = False,
        at: float | None = None,
    ) -> None:
        """Keep the Secret's (encoded) data unless a newer version is already known."""
        known = self._known.get((namespace, name))
        self._absent.pop((namespace, name), None)
        if known is None or not _older(version, known.version):
            at = time.monotonic() if at is None else at
            if known is not None and known.version == version:
                at = max(at, known.fetched_at)  # an older read of the same version
            self._known[(namespace, name)] = _Known(version, dict(data), watched, at)

    def forget(self, namespace: str, name: str) -> None:
        self._known.pop((namespace, name), None)

    def unwatch_all(self) -> None:
        """The watch broke: changes may go unseen, so every Secret is read each period
        until the watch reports it again."""
        for known in self._known.values():
            known.watched = False

    def unwatched(self) -> list[tuple[str, str]]:
        """Known Secrets no watch keeps fresh."""
        return [key for key, known in self._known.items() if not known.watched]

    async def refresh(self, namespace: str, name: str, fresh_after: float | None = None) -> bool:
        """Read the Secret again (a read started after ``fresh_after``); True if its data
        changed or it is gone."""
        before = self._known.get((namespace, name))
        try:
            after = await self._fetch_once(namespace, name, fresh_after)
        except CredentialsNotFound:
            return before is not None
        return before is None or before.data != after.data

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Drop every Secret not in ``keys`` (those no resource references any longer)."""
        keep = set(keys)
        for key in set(self._known) - keep:
            del self._known[key]
        for key in set(self._absent) - keep:
            del self._absent[key]

    async def read(
        self, namespace: str, name: str, fresh_after: float | None = None
    ) -> dict[str, str]:
        """The Secret's data, decoded; raises ``CredentialsNotFound`` if it is absent.

        ``fresh_after`` (monotonic time): an unwatched Secret read before then is read again.
        """
        known = await self._read_known(namespace, name, fresh_after)
        return decode_secret_data(known.data, f"{namespace}/{name}")

    async def _read_known(self, namespace: str, name: str, fresh_after: float | None) -> _Known:
        known = self._known.get((namespace, name))
        absent = self._absent.get((namespace, name))
        if known is None and absent and fresh_after is not None and absent[0] >= fresh_after:
            raise CredentialsNotFound(absent[1])  # found missing recently enough: no GET again
        if known is None or not (
            known.watched or fresh_after is None or known.fetched_at >= fresh_after
        ):
            known = await self._fetch_once(namespace, name, fresh_after)
        return known

    async def _fetch_once(
        self, namespace: str, name: str, fresh_after: float | None = None
    ) -> _Known:
        """One GET at a time per Secret: resources that want the same Secret at once share
        a read, if it started late enough for them."""
        key = (namespace, name)
        started, pending = self._fetching.get(key, (0.0, None))
        if pending is None or (fresh_after is not None and started < fresh_after):
            started = time.monotonic()
            pending = asyncio.ensure_future(self._fetch(namespace, name, started))
            self._fetching[key] = (started, pending)
            pending.add_done_callback(lambda done: self._forget_fetch(key, done))
        return await asyncio.shield(pending)

    def _forget_fetch(self, key: tuple[str, str], done: "asyncio.Future[_Known]") -> None:
        if self._fetching.get(key, (0.0, None))[1] is done:
            del self._fetching[key]

    async def _fetch(self, namespace: str, name: str, started: float) -> _Known:
        try:
            secret = await self._connection.get_json(
                f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
            )
        except KubeApiError as exc:
            if exc.status not in (404, 403):
                raise
            message = (
                f"Secret {namespace}/{name} not found"
                if exc.status == 404
                else f"the operator may not read Secret {namespace}/{name} (HTTP 403)"
            )
            self.forget(namespace, name)  # what is gone, or may no longer be read, is not used
            self._absent[(namespace, name)] = (started, message)
            raise CredentialsNotFound(message) from None
        meta = secret.get("metadata") or {}
        version = str(meta.get("resourceVersion") or "")
        labelled = (meta.get("labels") or {}).get(CREDENTIALS_LABEL) == "true"
        # Watched only if the watch is at this very version: a newer one it delivered while
        # this read was on the way (and dropped, as nobody used the Secret yet) would
        # otherwise leave this older one cached for good.
        watched = labelled and self.tracked((namespace, name), version)
        self.remember(namespace, name, version, secret.get("data") or {}, watched, at=started)
        return self._known[(namespace, name)]

    async def app_credentials(
        self, namespace: str, name: str, fresh_after: float | None = None
    ) -> AppCredentials:
        """The OAuth app and UWS login in the Secret, with the version they were read at
        (what a rejection is recorded against)."""
        known = await self._read_known(namespace, name, fresh_after)
        where = f"{namespace}/{name}"
        credentials = app_credentials_from(decode_secret_data(known.data, where), where)
        return replace(credentials, source=CredentialsSource(where, known.version))

    async def callback_credentials(
        self, namespace: str, name: str, fresh_after: float | None = None
    ) -> tuple[str, str]:
        data = await self.read(namespace, name, fresh_after)
        return callback_credentials_from(data, f"{namespace}/{name}")


def _older(version: str, than: str) -> bool:
    """resourceVersions are opaque, but numeric in practice; compare them when they are."""
    return version.isdigit() and than.isdigit() and int(version) < int(than)


def decode_secret_data(data: Mapping[str, str | bytes], where: str) -> dict[str, str]:
    decoded = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CredentialsInvalid(
                f"Secret {where} key {key!r} is not valid base64-encoded UTF-8"
            ) from None
    return decoded


def _required(data: Mapping[str, str], keys: tuple[str, ...], where: str) -> list[str]:
    missing = [key for key in keys if key not in data]
    if missing:
        raise CredentialsInvalid(f"Secret {where} lacks key(s) {', '.join(missing)}")
    empty = [key for key in keys if not data[key].strip()]
    if empty:
        raise CredentialsInvalid(f"Secret {where} has empty key(s) {', '.join(empty)}")
    # A trailing newline is an artefact of `echo ... | base64`, never part of a credential.
    return [data[key].rstrip("\r\n") for key in keys]


def app_credentials_from(data: Mapping[str, str], where: str) -> AppCredentials:
    app_key, app_secret, username, password = _required(data, APP_CREDENTIAL_KEYS, where)
    return AppCredentials(app_key, app_secret, username, password)


def callback_credentials_from(data: Mapping[str, str], where: str) -> tuple[str, str]:
    username, password = _required(data, CALLBACK_CREDENTIAL_KEYS, where)
    too_long = [
        key
        for key, value in (("username", username), ("password", password))
        if len(value) > CALLBACK_CREDENTIAL_MAX_LENGTH
    ]
    if too_long:
        raise CredentialsInvalid(
            f"Secret {where} key(s) {', '.join(too_long)} exceed ThingSpace's limit of "
            f"{CALLBACK_CREDENTIAL_MAX_LENGTH} characters"
        )
    return username, password


def referenced_secrets(spec: Mapping[str, object]) -> set[str]:
    """Names of the Secrets a ThingSpaceCallback spec points at."""
    names = set()
    for key in ("credentialsSecretRef", "callbackCredentialsSecretRef"):
        ref = spec.get(key)
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            names.add(name)
    return names


class SecretVersions:
    """What each watched Secret's data looked like last time, as a digest (never the data).

    Lets the operator react only to real changes of the values: the initial listing and
    metadata-only updates are not news.
    """

    def __init__(self) -> None:
        self._digests: dict[tuple[str, str], str] = {}

    def changed(
        self, key: tuple[str, str], data: Mapping[str, object] | None, initial: bool
    ) -> bool:
        """Record the Secret's state (``None``: deleted); True if it changed."""
        if data is None:
            return self._digests.pop(key, None) is not None or not initial
        digest = hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()
        previous = self._digests.get(key)
        self._digests[key] = digest
        return not initial and previous != digest
