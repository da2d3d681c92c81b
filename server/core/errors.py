"""Neutral errors: a kind, a message, and where it applies; each dialect renders them in its own envelope."""

from __future__ import annotations

# The kinds, and what each means to a caller.
BAD_REQUEST = "bad_request"            # the request is wrong; `field` names the part
AUTH = "auth"                          # the local API key is missing or wrong
NOT_FOUND = "not_found"                # no such model, conversation or path
METHOD_NOT_ALLOWED = "method_not_allowed"
CONFLICT = "conflict"                  # the conversation is busy with another turn
TOO_LARGE = "too_large"                # body, URI or headers past a limit (`status` says which)
RATE_LIMITED = "rate_limited"          # Kimi throttles, or a metered mode is used up
QUOTA = "quota"                        # Kimi wants a paid plan for this
UPSTREAM_FAILED = "upstream_failed"    # Kimi failed, refused our token, or answered what we cannot use
TIMEOUT = "timeout"                    # Kimi did not answer in time
OVERLOADED = "overloaded"              # Kimi's model is overloaded: try again shortly
UNAVAILABLE = "unavailable"            # no usable account, or local state that cannot be read
INTERNAL = "internal"                  # a bug of ours

KINDS = (BAD_REQUEST, AUTH, NOT_FOUND, METHOD_NOT_ALLOWED, CONFLICT, TOO_LARGE, RATE_LIMITED, QUOTA,
         UPSTREAM_FAILED, TIMEOUT, OVERLOADED, UNAVAILABLE, INTERNAL)


class Failure(Exception):
    """A request that cannot be answered, in neutral terms.

    `code` is a stable machine-readable word (model_not_found, conversation_busy, ...); `field` the
    request field at fault (a dotted path such as tools[2].function.name); `retry_after` seconds when
    waiting helps; `status` only where one kind spans several HTTP statuses (413/414/431).
    """

    def __init__(self, kind: str, message: str, *, code: str | None = None, field: str | None = None,
                 retry_after: int | None = None, status: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        super().__init__(message)
        self.kind, self.message, self.code, self.field = kind, message, code, field
        self.retry_after, self.status = retry_after, status


def bad_request(message: str, field: str | None, code: str | None = None) -> Failure:
    """A request that breaks the schema; `field` names the part at fault."""
    return Failure(BAD_REQUEST, message, field=field,
                   code=code or ("invalid_request_error" if field is None else "invalid_value"))
