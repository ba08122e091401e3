"""The ThingSpaceAccount resource as the operator reads it, and who may use it. Pure."""

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import InvalidSpec
from .thingspace.services import ACCOUNT_NAME_MAX_LENGTH, ACCOUNT_NAME_RE

ACCOUNT_PLURAL = "thingspaceaccounts"
ACCOUNT_KIND = "ThingSpaceAccount"


class CallbackPolicy(enum.StrEnum):
    ADDITIVE = "Additive"
    AUTHORITATIVE = "Authoritative"


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry of a label selector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case "In":
                return labels.get(self.key) in self.values
            case "NotIn":
                return labels.get(self.key) not in self.values
            case "Exists":
                return self.key in labels
            case "DoesNotExist":
                return self.key not in labels
        return False  # an operator the schema would have refused: select nothing


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty one selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, selector: Mapping[str, Any]) -> "LabelSelector":
        labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        if not isinstance(labels, Mapping) or not isinstance(expressions, list):
            raise InvalidSpec("spec.namespaceSelector must be a label selector")
        return cls(
            match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            requirements=tuple(
                Requirement(
                    str(item.get("key", "")),
                    str(item.get("operator", "")),
                    frozenset(str(v) for v in item.get("values") or ()),
                )
                for item in expressions
                if isinstance(item, Mapping)
            ),
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.requirements
        )


@dataclass(frozen=True)
class AccountSpec:
    name: str  # the ThingSpaceAccount object's name
    account_name: str
    secret_name: str
    secret_namespace: str | None  # None: the operator's own namespace
    selector: LabelSelector | None = None
    namespaces: frozenset[str] = field(default_factory=frozenset)
    policy: CallbackPolicy = CallbackPolicy.ADDITIVE
    max_calls_per_second: float | None = None
    max_concurrent_calls: int | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> "AccountSpec":
        account = spec.get("accountName")
        if (
            not isinstance(account, str)
            or len(account) > ACCOUNT_NAME_MAX_LENGTH
            or not ACCOUNT_NAME_RE.fullmatch(account)
        ):
            raise InvalidSpec("spec.accountName must be a billing account name")
        ref = spec.get("credentialsSecretRef")
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise InvalidSpec("spec.credentialsSecretRef.name is required")
        secret = str(ref["name"])
        selector = spec.get("namespaceSelector")
        policy = spec.get("callbackPolicy") or CallbackPolicy.ADDITIVE
        if policy not in tuple(CallbackPolicy):
            raise InvalidSpec("spec.callbackPolicy must be Additive or Authoritative")
        return cls(
            name=name,
            account_name=account,
            secret_name=secret,
            secret_namespace=ref.get("namespace") or None,
            selector=LabelSelector.parse(selector) if isinstance(selector, Mapping) else None,
            namespaces=frozenset(_strings(spec.get("namespaces") or ())),
            policy=CallbackPolicy(policy),
            max_calls_per_second=_positive(spec.get("maxCallsPerSecond")),
            max_concurrent_calls=_positive_int(spec.get("maxConcurrentCalls")),
        )

    def allows(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """May callbacks of ``namespace`` (with these labels; None: unknown) use it?
        Neither a list nor a selector: nobody may, so sharing is always on purpose."""
        if namespace in self.namespaces:
            return True
        return self.selector is not None and labels is not None and self.selector.matches(labels)

    @property
    def needs_labels(self) -> bool:
        return self.selector is not None


def _strings(values: Iterable[Any]) -> list[str]:
    return [value for value in values if isinstance(value, str)]


def _positive(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None
