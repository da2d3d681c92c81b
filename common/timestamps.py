"""Seconds since the epoch as ISO 8601 UTC text, and a JWT's expiry as such text."""

from __future__ import annotations

import datetime

from common.jwt_claims import try_decode_claims


def iso_utc(ts: float) -> str | None:
    """`ts` as ISO 8601 UTC to the second; None when no date has it (an exp written in milliseconds, say)."""
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return None


def token_expiry(token: str) -> str | None:
    """When a JWT's exp claim says it expires, as iso_utc text; None for no readable exp."""
    claims = try_decode_claims(token)
    return iso_utc(claims.exp) if claims is not None and claims.exp is not None else None
