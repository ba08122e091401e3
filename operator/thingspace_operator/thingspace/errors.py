"""The ThingSpace error tree.

Every failure of a ThingSpace call surfaces as exactly one of these. Callers decide what
to do by type, never by parsing messages:

    ThingSpaceError
    ├── AuthenticationFailed   app key/secret or UWS login rejected: never retry with the
    │                          same credentials (five failed logins lock the account)
    ├── RequestRejected        HTTP 400 with ``{errorCode, errorMessage}``: fix the input
    ├── RateLimited            HTTP 429 (or WSO2 throttling): wait ``retry_after`` seconds
    └── Unavailable            5xx, timeouts, connection errors: retry later with backoff

Messages never carry credentials: the client scrubs known secret values before raising.
"""


class ThingSpaceError(Exception):
    """Base class of every ThingSpace failure."""


class AuthenticationFailed(ThingSpaceError):
    """ThingSpace rejected the app credentials (OAuth) or the UWS login.

    ``stage`` is ``"oauth"`` or ``"login"``. Retrying with the same credentials cannot
    succeed and, for logins, counts towards ThingSpace's five-strikes account lock.
    ``by_gateway``: the API gateway refused the call (a WSO2 fault, e.g. an app not
    subscribed), so the UWS user and password were not what was judged.
    """

    def __init__(self, stage: str, message: str, by_gateway: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.by_gateway = by_gateway


class RequestRejected(ThingSpaceError):
    """ThingSpace answered 400 with an error envelope."""

    def __init__(self, error_code: str, error_message: str, status: int = 400) -> None:
        super().__init__(f"{error_code}: {error_message}" if error_message else error_code)
        self.error_code = error_code
        self.error_message = error_message
        self.status = status


class RateLimited(ThingSpaceError):
    """ThingSpace throttled the call; ``retry_after`` is its hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ThingSpaceError):
    """ThingSpace could not be reached or failed on its side (5xx, timeout, connection)."""
