"""Read and write the YAML manifests users keep in git: ThingSpaceCallbacks,
ThingSpaceAccounts and Secrets, from files and directories, with no cluster involved."""

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..account import ACCOUNT_KIND
from ..kube.secrets import decode_secret_data
from ..model import KIND

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A file cannot be read as Kubernetes manifests; the message names the file."""


@dataclass(frozen=True)
class Manifest:
    source: str  # file name, for messages
    body: Mapping[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        return str(self.body.get("kind") or "")

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name") or "")

    def namespace(self, default: str) -> str:
        return str((self.body.get("metadata") or {}).get("namespace") or default)

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, Mapping) else {}


@dataclass
class ManifestSet:
    """Everything the given files declare, by kind."""

    callbacks: list[Manifest] = field(default_factory=list)
    accounts: list[Manifest] = field(default_factory=list)
    secrets: list[Manifest] = field(default_factory=list)

    def secret_data(self, namespace: str, name: str, default_namespace: str) -> dict[str, str]:
        """The decoded data of the Secret ``namespace/name`` in the files, or {}."""
        for secret in self.secrets:
            if secret.name == name and secret.namespace(default_namespace) == namespace:
                return secret_values(secret)
        return {}

    def account(self, name: str) -> Manifest | None:
        return next((account for account in self.accounts if account.name == name), None)


def load(paths: Iterable[Path]) -> ManifestSet:
    """Every document of the files (directories: their YAML and JSON files, recursively)."""
    found = ManifestSet()
    by_kind = {KIND: found.callbacks, ACCOUNT_KIND: found.accounts, "Secret": found.secrets}
    for path in _files(paths):
        for manifest in _documents(path):
            if manifest.kind == "List":
                items = manifest.body.get("items") or []
                manifests = [Manifest(manifest.source, item) for item in items]
            else:
                manifests = [manifest]
            for item in manifests:
                if item.kind in by_kind:  # other kinds are not ours: ignored
                    by_kind[item.kind].append(item)
    return found


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
        elif path.exists() or str(path) == "-":
            yield path
        else:
            raise ManifestError(f"{path}: no such file or directory")


def _documents(path: Path) -> Iterator[Manifest]:
    try:
        text = path.read_text() if str(path) != "-" else sys.stdin.read()
        documents = list(yaml.safe_load_all(text))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: not readable as YAML ({type(exc).__name__})") from None
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, Mapping):
            raise ManifestError(f"{path}: a document is not a mapping")
        yield Manifest(str(path), document)


def secret_values(secret: Manifest) -> dict[str, str]:
    """A Secret manifest's values as the API server would store them: ``stringData``
    over the decoded ``data``. Messages name the Secret, never a value."""
    data = secret.body.get("data") or {}
    values = decode_secret_data(data, secret.name) if isinstance(data, Mapping) else {}
    string_data = secret.body.get("stringData") or {}
    if isinstance(string_data, Mapping):
        values.update({str(k): str(v) for k, v in string_data.items()})
    return values


def dump(manifests: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML in the key order given (readable diffs in git)."""
    return yaml.safe_dump_all(
        [dict(item) for item in manifests], sort_keys=False, default_flow_style=False
    )
