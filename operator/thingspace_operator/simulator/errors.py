"""Answers other than 200: ThingSpace error envelopes and WSO2 gateway faults."""

from collections.abc import Mapping
from typing import Any

UWS = "UnifiedWebService"


class ApiError(Exception):
    """An answer other than 200: status plus JSON body (and headers)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def error(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, {"errorCode": code, "errorMessage": message})


def fault(code: str, message: str, description: str, status: int = 401) -> ApiError:
    return ApiError(
        status, {"fault": {"code": code, "message": message, "description": description}}
    )


MISSING_CREDENTIALS = fault(
    "900902",
    "Missing Credentials",
    "Required OAuth credentials not provided. Make sure your API invocation call has a "
    'header: "Authorization: Basic ACCESS_TOKEN"',
)
MISSING_BEARER = fault(
    "900902",
    "Missing Credentials",
    "Required OAuth credentials not provided. Make sure your API invocation call has a "
    'header: "Authorization: Bearer ACCESS_TOKEN"',
)
INVALID_CREDENTIALS = fault(
    "900901",
    "Invalid Credentials",
    "Access failure for API: /m2m/v1, version: v1. Make sure you have given the correct "
    "access token",
)
