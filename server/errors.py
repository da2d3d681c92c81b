"""Errors the API answers with, in OpenAI's envelope, and the upstream faults they come from."""

from __future__ import annotations


class ApiError(Exception):
    """An answer in OpenAI's `{"error": {"message", "type", "param", "code"}}` envelope."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None) -> ApiError:
    """A 400 for a request that breaks the schema; `param` names the field."""
    return ApiError(400, message, param=param, code="invalid_request_error" if param is None else "invalid_value")


class UpstreamError(Exception):
    """Kimi did not give us an answer. `retryable`: another attempt (account) may succeed."""

    retryable = True

    def to_api_error(self) -> ApiError:
        return ApiError(502, f"Kimi upstream error: {self}", type="upstream_error", code="upstream_error")


class UpstreamAuthRejected(UpstreamError):
    """Kimi refused our access token (401 / auth.token.invalid): our problem, not the caller's key."""

    def to_api_error(self) -> ApiError:
        return ApiError(502, "Kimi rejected the access token of every account tried; the refresher has been "
                        "asked to renew it", type="upstream_error", code="upstream_auth_failed")


class UpstreamThrottled(UpstreamError):
    """Kimi asked us to slow down."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_api_error(self) -> ApiError:
        return ApiError(429, f"Kimi is throttling requests: {self}", type="rate_limit_exceeded",
                        code="rate_limit_exceeded", headers={"Retry-After": str(self.retry_after)})


class UpstreamTimeout(UpstreamError):
    """Kimi did not answer (or went silent) within the configured timeouts."""

    def to_api_error(self) -> ApiError:
        return ApiError(504, f"Kimi did not answer in time: {self}", type="upstream_error", code="upstream_timeout")


class UpstreamRefused(UpstreamError):
    """Kimi refused the request itself (a 4xx other than auth): another account would not help."""

    retryable = False


class UpstreamStreamError(UpstreamError):
    """Kimi sent an `error` event inside the stream, or the stream broke off."""

    retryable = False


class UpstreamChatGone(UpstreamRefused):
    """The Kimi chat a conversation points at no longer exists."""

    def to_api_error(self) -> ApiError:
        return ApiError(404, "This conversation no longer exists on Kimi; start a new one.",
                        param="conversation_id", code="conversation_not_found")


class UpstreamOverloaded(UpstreamError):
    """Kimi said the model is overloaded (Connect block exception): try again shortly."""

    def to_api_error(self) -> ApiError:
        return ApiError(503, "Kimi's model is overloaded right now; try again shortly.", type="server_error",
                        code="upstream_overloaded", headers={"Retry-After": "10"})


class UpstreamPaywall(UpstreamRefused):
    """Kimi wants a paid plan for this (resource_exhausted with a paywall)."""

    def to_api_error(self) -> ApiError:
        return ApiError(429, "Kimi requires a paid plan (or more quota) on this account for this request.",
                        type="insufficient_quota", code="upstream_paywall")
