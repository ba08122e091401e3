"""Log lines about a resource also name the account and service it registers."""

import logging
from collections.abc import Callable, Mapping

Key = tuple[str, str]  # (namespace, name)
RegistrationOf = Callable[[Key], tuple[str, str] | None]  # -> (account, service)


class RegistrationFilter(logging.Filter):
    """Adds ``account`` and ``service`` to records that kopf tied to a resource.

    kopf marks such records with ``k8s_ref`` (namespace and name); the JSON formatter writes
    every extra attribute as a field, and for text the two are appended to the message.
    """

    def __init__(self, registration_of: RegistrationOf, text: bool) -> None:
        super().__init__()
        self._registration_of = registration_of
        self._text = text

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None)
        if not isinstance(ref, Mapping) or hasattr(record, "account"):
            return True
        identity = self._registration_of((str(ref.get("namespace")), str(ref.get("name"))))
        if identity is not None:
            record.account, record.service = identity
            if self._text:
                record.msg = f"{record.msg} [account={identity[0]} service={identity[1]}]"
        return True


def install(registration_of: RegistrationOf, text: bool) -> None:
    """Attach the filter to every handler of the root logger (where kopf logs)."""
    registration_filter = RegistrationFilter(registration_of, text)
    for handler in logging.getLogger().handlers:
        handler.addFilter(registration_filter)
