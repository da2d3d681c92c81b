"""Connect errors as upstream errors: end-stream and in-stream `error`, block exceptions, unary non-200s."""

from __future__ import annotations

from server.upstream.errors import (UpstreamAuthRejected, UpstreamChatGone, UpstreamError, UpstreamOverloaded,
                                    UpstreamPaywall, UpstreamRefused, UpstreamStreamError, UpstreamThrottled,
                                    UpstreamTimeout)
from server.upstream.kimi.client import json_or_none

# Kimi's peak-hour refusal of free accounts, in error.details[].debug.reason (kimi-protocol-2026-12.md §3.4).
FREE_USER_OVERLOAD = "REASON_SERVER_OVERLOADED_FOR_FREE_USER"


def raise_end_stream(message: dict) -> None:
    """An end-of-stream frame is a success unless it carries an error (an empty payload is `{}`)."""
    if isinstance(message.get("error"), dict):
        raise connect_error(message["error"])


def block_exception(exception: dict) -> UpstreamError:
    """A `block.exception` inside the answer: overload is worth a retry, anything else stops the answer."""
    error = exception.get("error") if isinstance(exception.get("error"), dict) else exception
    reason = str(error.get("reason") or "")
    if "OVERLOADED" in reason:
        return UpstreamOverloaded(reason)
    return UpstreamStreamError(f"Kimi stopped the answer ({reason or 'block exception'})")


def _reasons(details: list) -> list[str]:
    """Every `details[].debug.reason`."""
    return [str(d["debug"].get("reason") or "") for d in details
            if isinstance(d, dict) and isinstance(d.get("debug"), dict)]


def connect_error(error: dict, http_status: int = 200) -> UpstreamError:
    """Map a Connect error (`code`, `details[].debug.paywall|reason`) onto our upstream errors."""
    code = str(error.get("code") or "unknown")
    label = f"Connect {code}" + (f" (HTTP {http_status})" if http_status != 200 else "")
    details = error.get("details") if isinstance(error.get("details"), list) else []
    paywall = any(isinstance(d, dict) and isinstance(d.get("debug"), dict) and d["debug"].get("paywall")
                  for d in details)
    if FREE_USER_OVERLOAD in _reasons(details):
        # Not a quota of ours: Kimi sheds free accounts at peak hours. Another account (a paid one) may pass.
        return UpstreamOverloaded(f"{label} {FREE_USER_OVERLOAD}")
    if code == "unauthenticated":
        return UpstreamAuthRejected(label)
    if code == "resource_exhausted":
        return UpstreamPaywall(label) if paywall else UpstreamThrottled(label, 30)
    if code.upper() == "MODEL_RATE_LIMIT":
        return UpstreamThrottled(label, 30)
    if code == "not_found":
        return UpstreamChatGone(label)
    if code in ("permission_denied", "invalid_argument", "failed_precondition", "unimplemented"):
        return UpstreamRefused(label)
    if code == "deadline_exceeded":
        return UpstreamTimeout(label)
    return UpstreamError(label)   # unavailable, internal, unknown: worth another attempt


def unary_error(status: int, raw: bytes, what: str) -> UpstreamError:
    """A non-200 Connect answer: `{"code", "message"}` when Kimi sent one, else by status."""
    data = json_or_none(raw)
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return connect_error(data, status)
    if status in (401, 403):
        return UpstreamAuthRejected(f"{what}: HTTP {status}")
    if status == 429:
        return UpstreamThrottled(f"{what}: HTTP 429", 30)
    if status >= 500:
        return UpstreamError(f"{what}: HTTP {status}")
    return UpstreamRefused(f"{what}: HTTP {status}")
