"""Read the claims of a Kimi JWT (payload only; signatures are Kimi's business)."""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass

import orjson


class TokenFormatError(ValueError):
    """The string is not a JWT whose payload is base64url JSON."""


@dataclass(frozen=True)
class TokenClaims:
    """The claims kimi-bridge acts on; `raw` keeps the rest."""

    typ: str | None
    exp: float | None
    iat: float | None
    sub: str | None
    app_id: str | None
    raw: dict

    def seconds_left(self, now: float) -> float | None:
        """Seconds until `exp`, negative once expired; None when the token has no `exp`."""
        return None if self.exp is None else self.exp - now


def strip_bearer(value: str) -> str:
    """Drop a leading `Bearer ` (reverse-kimi stores tokens with it)."""
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


def decode_claims(token: str) -> TokenClaims:
    """Decode the payload of `token`; raise TokenFormatError when it is not a JWT."""
    parts = strip_bearer(token).split(".")
    if len(parts) != 3 or not parts[1]:
        raise TokenFormatError("not a JWT: expected three dot-separated parts")
    payload = parts[1]
    try:
        # JWTs drop base64 padding; Python's decoder insists on it.
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise TokenFormatError("JWT payload is not base64url JSON") from exc
    if not isinstance(data, dict):
        raise TokenFormatError("JWT payload is not a JSON object")
    return TokenClaims(
        typ=_str_or_none(data.get("typ")),
        exp=_number_or_none(data.get("exp")),
        iat=_number_or_none(data.get("iat")),
        sub=_str_or_none(data.get("sub")),
        app_id=_str_or_none(data.get("app_id")),
        raw=data,
    )


@functools.lru_cache(maxsize=256)
def try_decode_claims(token: str) -> TokenClaims | None:
    """Like decode_claims, but None for an empty or malformed token (cached: the server asks per request)."""
    if not token:
        return None
    try:
        return decode_claims(token)
    except TokenFormatError:
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
