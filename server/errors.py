"""Errors the API answers with, in OpenAI's envelope (interim bridge from neutral failures)."""

from __future__ import annotations

from server.core.errors import Failure

_STATUS = {"bad_request": 400, "auth": 401, "not_found": 404, "method_not_allowed": 405, "conflict": 409,
           "too_large": 413, "rate_limited": 429, "quota": 429, "upstream_failed": 502, "timeout": 504,
           "overloaded": 503, "unavailable": 503, "internal": 500}
_TYPE = {"rate_limited": "rate_limit_exceeded", "quota": "insufficient_quota", "upstream_failed": "upstream_error",
         "timeout": "upstream_error", "overloaded": "server_error", "unavailable": "server_error",
         "internal": "server_error"}


class ApiError(Exception):
    """An answer in OpenAI's `{"error": {"message", "type", "param", "code"}}` envelope."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    @classmethod
    def from_failure(cls, failure: Failure) -> ApiError:
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
        return cls(failure.status or _STATUS[failure.kind], failure.message,
                   type=_TYPE.get(failure.kind, "invalid_request_error"), param=failure.field, code=failure.code,
                   headers=headers)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None) -> ApiError:
    """A 400 for a request that breaks the schema; `param` names the field."""
    return ApiError(400, message, param=param, code="invalid_request_error" if param is None else "invalid_value")
