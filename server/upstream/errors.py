"""Upstream faults: how Kimi failed us, and the neutral failure each one is for the caller."""

from __future__ import annotations

from server.core.errors import NOT_FOUND, OVERLOADED, QUOTA, RATE_LIMITED, TIMEOUT, UPSTREAM_FAILED, Failure


class UpstreamError(Exception):
    """Kimi did not give us an answer. `retryable`: another attempt (account) may succeed."""

    retryable = True

    def to_failure(self) -> Failure:
        return Failure(UPSTREAM_FAILED, f"Kimi upstream error: {self}", code="upstream_error")


class UpstreamAuthRejected(UpstreamError):
    """Kimi refused our access token (401 / auth.token.invalid): our problem, not the caller's key."""

    def to_failure(self) -> Failure:
        return Failure(UPSTREAM_FAILED, "Kimi rejected the access token of every account tried; the refresher has "
                       "been asked to renew it", code="upstream_auth_failed")


class UpstreamThrottled(UpstreamError):
    """Kimi asked us to slow down."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_failure(self) -> Failure:
        return Failure(RATE_LIMITED, f"Kimi is throttling requests: {self}", code="rate_limit_exceeded",
                       retry_after=self.retry_after)


class UpstreamTimeout(UpstreamError):
    """Kimi did not answer (or went silent) within the configured timeouts."""

    def to_failure(self) -> Failure:
        return Failure(TIMEOUT, f"Kimi did not answer in time: {self}", code="upstream_timeout")


class UpstreamRefused(UpstreamError):
    """Kimi refused the request itself (a 4xx other than auth): another account would not help."""

    retryable = False


class UpstreamStreamError(UpstreamError):
    """Kimi sent an `error` event inside the stream, or the stream broke off."""

    retryable = False


class UpstreamChatGone(UpstreamRefused):
    """The Kimi chat a conversation points at no longer exists."""

    def to_failure(self) -> Failure:
        return Failure(NOT_FOUND, "This conversation no longer exists on Kimi; start a new one.",
                       field="conversation_id", code="conversation_not_found")


class UpstreamOverloaded(UpstreamError):
    """Kimi said the model is overloaded (Connect block exception): try again shortly."""

    def to_failure(self) -> Failure:
        return Failure(OVERLOADED, "Kimi's model is overloaded right now; try again shortly.",
                       code="upstream_overloaded", retry_after=10)


class UpstreamPaywall(UpstreamRefused):
    """Kimi wants a paid plan for this (resource_exhausted with a paywall)."""

    def to_failure(self) -> Failure:
        return Failure(QUOTA, "Kimi requires a paid plan (or more quota) on this account for this request.",
                       code="upstream_paywall")
