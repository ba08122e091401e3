"""Where the command-line tools get ThingSpace credentials, and how they read live lists.

Credentials come from a Secret manifest file, from environment variables, or from a
ThingSpaceAccount (and its Secret) in the cluster. Live lists are read with the operator's
own client: one token and login per credential set, one list call per account, no write.
"""

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..account import ACCOUNT_PLURAL, AccountSpec
from ..kube.secrets import CredentialsInvalid, app_credentials_from, decode_secret_data
from ..model import GROUP, VERSION
from ..thingspace.client import ClientPool
from ..thingspace.errors import ThingSpaceError
from ..thingspace.models import AppCredentials, Callback
from .manifests import Manifest, ManifestError, load, secret_values

if TYPE_CHECKING:  # imported where used: the run command shares the parser (cli.py)
    import kubernetes.client

#: Environment variables holding a credential set, by Secret key.
CREDENTIAL_ENV = {
    "appKey": "THINGSPACE_APP_KEY",
    "appSecret": "THINGSPACE_APP_SECRET",
    "username": "THINGSPACE_USERNAME",
    "password": "THINGSPACE_PASSWORD",
}
DEFAULT_SECRET_NAME = "thingspace-credentials"


class SourceError(Exception):
    """Credentials or an account could not be found or read; the message says which."""


@dataclass(frozen=True)
class Credentials:
    values: AppCredentials
    secret_name: str  # what exported manifests put in credentialsSecretRef


def from_env(env: Mapping[str, str]) -> Credentials | None:
    """The credential set of the environment; None when no variable is set."""
    present = {key: env[var] for key, var in CREDENTIAL_ENV.items() if env.get(var)}
    if not present:
        return None
    missing = [var for key, var in CREDENTIAL_ENV.items() if key not in present]
    if missing:
        raise SourceError(f"set {', '.join(missing)} too (or use --credentials-file)")
    try:
        values = app_credentials_from(present, "environment")
    except CredentialsInvalid as exc:
        raise SourceError(str(exc)) from None
    return Credentials(values, DEFAULT_SECRET_NAME)


def from_file(path: Path) -> Credentials:
    """The credential set of the (first) Secret manifest in ``path``."""
    try:
        secrets = load([path]).secrets
    except ManifestError as exc:
        raise SourceError(str(exc)) from None
    if not secrets:
        raise SourceError(f"{path}: no Secret manifest in it")
    try:
        values = app_credentials_from(secret_values(secrets[0]), str(path))
    except CredentialsInvalid as exc:
        raise SourceError(str(exc)) from None
    return Credentials(values, secrets[0].name or DEFAULT_SECRET_NAME)


@dataclass(frozen=True)
class ClusterAccount:
    """A ThingSpaceAccount read from the cluster, with the credentials of its Secret."""

    manifest: Manifest
    spec: AccountSpec
    credentials: Credentials


def from_cluster(
    api_client: "kubernetes.client.ApiClient", account: str, operator_namespace: str
) -> ClusterAccount:
    """A ThingSpaceAccount and the credentials of its Secret, read through the kubeconfig."""
    import kubernetes.client
    from kubernetes.client.exceptions import ApiException

    custom = kubernetes.client.CustomObjectsApi(api_client)
    try:
        body: Any = custom.get_cluster_custom_object(GROUP, VERSION, ACCOUNT_PLURAL, account)
        spec = AccountSpec.parse(account, body.get("spec") or {})
    except ApiException as exc:
        raise SourceError(f"ThingSpaceAccount {account}: HTTP {exc.status}") from None
    except (TypeError, ValueError) as exc:
        raise SourceError(f"ThingSpaceAccount {account}: malformed spec ({exc})") from None
    namespace = spec.secret_namespace or operator_namespace
    where = f"{namespace}/{spec.secret_name}"
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        secret = core.read_namespaced_secret(spec.secret_name, namespace)
        data = decode_secret_data(secret.data or {}, where)
        values = app_credentials_from(data, where)
    except ApiException as exc:
        raise SourceError(
            f"Secret {where} of ThingSpaceAccount {account}: HTTP {exc.status}"
        ) from None
    except CredentialsInvalid as exc:
        raise SourceError(str(exc)) from None
    manifest = Manifest(f"cluster (ThingSpaceAccount {account})", body)
    return ClusterAccount(manifest, spec, Credentials(values, spec.secret_name))


#: Per account: its live registrations, or why they could not be read.
LiveLists = dict[str, list[Callback] | ThingSpaceError]


async def read_live(
    api_url: str, accounts: Iterable[tuple[str, AppCredentials]], timeout_seconds: float
) -> LiveLists:
    """One list call per account (concurrently), one login per credential set."""
    pool = ClientPool(api_url, timeout_seconds)
    wanted = dict(accounts)

    async def one(account: str, credentials: AppCredentials) -> list[Callback] | ThingSpaceError:
        try:
            return await pool.client_for(credentials).list_callbacks(account)
        except ThingSpaceError as exc:
            return exc

    try:
        results = await asyncio.gather(*(one(a, c) for a, c in wanted.items()))
    finally:
        await pool.close()
    return dict(zip(wanted, results, strict=True))
