"""Neutral failures in OpenAI's error envelope: the HTTP status, the headers and the `{"error": {...}}` body."""

from __future__ import annotations

from dataclasses import dataclass

from server.core import errors
from server.core.errors import Failure


@dataclass(frozen=True, slots=True)
class Row:
    """How one failure kind looks to an OpenAI client: status, `type`, and the code when the failure names none."""

    status: int
    type: str
    code: str | None


# Derived from every ApiError(...) the server raises and every UpstreamError.to_api_error() in server/errors.py:
# the statuses and types an OpenAI client sees today, so moving to neutral failures changes nothing it sees.
TABLE: dict[str, Row] = {
    errors.BAD_REQUEST: Row(400, "invalid_request_error", "invalid_request_error"),
    errors.AUTH: Row(401, "invalid_request_error", "invalid_api_key"),
    errors.NOT_FOUND: Row(404, "invalid_request_error", "not_found"),
    errors.METHOD_NOT_ALLOWED: Row(405, "invalid_request_error", "method_not_allowed"),
    errors.CONFLICT: Row(409, "invalid_request_error", "conversation_busy"),
    errors.TOO_LARGE: Row(413, "invalid_request_error", "request_too_large"),
    errors.RATE_LIMITED: Row(429, "rate_limit_exceeded", "rate_limit_exceeded"),
    errors.QUOTA: Row(429, "insufficient_quota", "upstream_paywall"),
    errors.UPSTREAM_FAILED: Row(502, "upstream_error", "upstream_error"),
    errors.TIMEOUT: Row(504, "upstream_error", "upstream_timeout"),
    errors.OVERLOADED: Row(503, "server_error", "upstream_overloaded"),
    errors.UNAVAILABLE: Row(503, "server_error", "no_available_account"),
    errors.INTERNAL: Row(500, "server_error", "internal_error"),
}

# Only a too_large failure picks its status (body 413, URI 414, headers 431); others keep their kind's.
_OWN_STATUS = frozenset({413, 414, 431})


def error_body(failure: Failure) -> dict:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` for a failure."""
    row = TABLE[failure.kind]
    return {"error": {"message": failure.message, "type": row.type, "param": failure.field,
                      "code": failure.code or row.code}}


def envelope(failure: Failure) -> tuple[int, dict, dict]:
    """The status, the extra headers (Retry-After when waiting helps) and the body of a failed request."""
    row = TABLE[failure.kind]
    status = row.status
    if failure.kind == errors.TOO_LARGE and failure.status in _OWN_STATUS:
        status = failure.status
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
    return status, headers, error_body(failure)
