"""Plain data the ThingSpace side speaks in. Secret-bearing fields never show in ``repr``."""

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit


@dataclass(frozen=True)
class CredentialsSource:
    """Where a credential set was read, and which version of it: names only, no value.
    A rejection recorded against it outlives the process (see ``RejectedValues``)."""

    origin: str  # e.g. the Secret's namespace/name
    version: str  # e.g. its resourceVersion: any change of the values changes it


@dataclass(frozen=True)
class AppCredentials:
    """Everything needed to call ThingSpace for one customer: OAuth app plus UWS login."""

    app_key: str
    app_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    # Not part of the identity: the same values read from two places are one credential set.
    source: CredentialsSource | None = field(default=None, compare=False)

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible identity of this credential set (safe to log)."""
        digest = hashlib.sha256(
            "\0".join((self.app_key, self.app_secret, self.username, self.password)).encode()
        )
        return digest.hexdigest()[:12]

    @property
    def secret_values(self) -> tuple[str, ...]:
        return (self.app_secret, self.password)


@dataclass(frozen=True)
class Callback:
    """One callback-listener registration, as registered or as ThingSpace lists it.

    ThingSpace treats an empty username/password as "not set", so both use ``""`` for that.
    """

    account_name: str
    service_name: str
    url: str
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def has_credentials(self) -> bool:
        return bool(self.username or self.password)


AUTHORITY_RE = re.compile(r"([^:/?#]+://)([^/?#]*)(.*)", re.DOTALL)


def display_url(url: str) -> str:
    """The URL without any user:password part, fit for status, Events, logs and output."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host: cut the user part by hand
        found = AUTHORITY_RE.match(url)
        if found is None:
            return url
        scheme, authority, rest = found.groups()
        return scheme + authority.rsplit("@", 1)[-1] + rest
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def url_passwords(url: str) -> tuple[str, ...]:
    """The password in a URL's user:password@ part, as written and percent-decoded (to
    keep out of messages); none without one."""
    found = AUTHORITY_RE.match(url)
    if found is None or "@" not in found.group(2):
        return ()
    password = found.group(2).rsplit("@", 1)[0].partition(":")[2]
    return tuple(dict.fromkeys(p for p in (password, unquote(password)) if p))
