"""Read and write the YAML manifests users keep in git: ThingSpaceCallbacks,
ThingSpaceAccounts and Secrets, from files and directories, with no cluster involved."""

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..account import ACCOUNT_KIND
from ..kube.secrets import CredentialsInvalid, decode_secret_data
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
    """Every document of the files (directories: their YAML and JSON files, recursively).

    The same object given twice (a file and its directory) counts once; the same name with
    different content is an error, as it would be for kubectl."""
    found = ManifestSet()
    by_kind = {KIND: found.callbacks, ACCOUNT_KIND: found.accounts, "Secret": found.secrets}
    seen: dict[tuple[str, str, str], Manifest] = {}
    for path in _files(paths):
        for item in _documents(path):
            if item.kind not in by_kind:
                continue  # other kinds are not ours
            key = (item.kind, item.namespace(""), item.name)
            earlier = seen.setdefault(key, item)
            if earlier is item:
                by_kind[item.kind].append(item)
            elif earlier.body != item.body:
                raise ManifestError(
                    f"{item.kind} {item.name} is declared differently in {earlier.source} "
                    f"and {item.source}"
                )
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
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read ({type(exc).__name__})") from None
    for document in documents:
        if document is None:
            continue
        items = document.get("items") if isinstance(document, Mapping) else None
        if isinstance(document, Mapping) and document.get("kind") == "List":
            if not isinstance(items, list):
                raise ManifestError(f"{path}: a List whose items are not a list")
            documents_here = items
        else:
            documents_here = [document]
        for item in documents_here:
            yield _manifest(path, item)


def _manifest(path: Path, document: Any) -> Manifest:
    if not isinstance(document, Mapping):
        raise ManifestError(f"{path}: a document is not a mapping")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise ManifestError(f"{path}: a document's metadata is not a mapping")
    return Manifest(str(path), document)


def secret_values(secret: Manifest) -> dict[str, str]:
    """A Secret manifest's values as the API server would store them: ``stringData``
    over the decoded ``data``. Messages name the Secret and key, never a value."""
    data = secret.body.get("data") or {}
    string_data = secret.body.get("stringData") or {}
    if not isinstance(data, Mapping) or not isinstance(string_data, Mapping):
        raise ManifestError(f"Secret {secret.name}: data and stringData must be mappings")
    if not all(isinstance(value, str) for value in (*data.values(), *string_data.values())):
        raise ManifestError(f"Secret {secret.name}: every value must be a string")
    try:
        values = decode_secret_data(data, secret.name)
    except CredentialsInvalid as exc:
        raise ManifestError(f"{exc} ({secret.source})") from None
    values.update({str(key): value for key, value in string_data.items()})
    return values


#: Plain scalars some YAML reader takes for a number or a boolean (kubectl's reads
#: YAML 1.2 numbers and 1.1 booleans); PyYAML leaves several of them unquoted.
NOT_PLAIN_STRINGS = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|[yYnN]|(?i:yes|no|on|off|true|false|null)|~"
)


class _Dumper(yaml.SafeDumper):
    """Quotes every string a YAML reader could take for something else."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if NOT_PLAIN_STRINGS.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(manifests: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML in the key order given (readable diffs in git)."""
    return yaml.dump_all(
        [dict(item) for item in manifests],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
    )
