"""When an account needs a refresh: a pure function of its tokens, status and the time."""

from __future__ import annotations

from common.account_state import awaiting_relogin
from common.config import Account
from common.jwt_claims import try_decode_claims
from common.redact import fingerprint


def malformed_token(account: Account) -> str | None:
    """Why the account's login token is not a Kimi token (a JWT), or None; such a token is never sent to Kimi.

    Only the token the refresher would send counts: a garbled access token beside a good refresh token
    is simply refreshed away.
    """
    if account.refresh_token:
        if try_decode_claims(account.refresh_token) is None:
            return (f"account {account.name!r}: refresh_token is malformed: not a Kimi token (a JWT: three "
                    "dot-separated parts, the first starting eyJ); nothing was sent to Kimi. Paste the whole "
                    "refresh_token from kimi.moonshot.cn's localStorage")
        return None
    if account.access_token and try_decode_claims(account.access_token) is None:
        return (f"account {account.name!r}: access_token (kimi-auth) is malformed: not a Kimi token (a JWT: "
                "three dot-separated parts, the first starting eyJ). Paste the whole kimi-auth cookie value")
    return None


def refresh_reason(account: Account, now: float, margin: float) -> str | None:
    """Why `account` should be refreshed now, or None when it should not."""
    if not account.enabled or not account.refresh_token or awaiting_relogin(account):
        return None
    if malformed_token(account):
        return None
    if not account.access_token:
        return "no access token yet"
    claims = try_decode_claims(account.access_token)
    if claims is None:
        return "the access token is not a readable JWT"
    if account.status.refresh_requested and account.status.refresh_requested == fingerprint(account.access_token):
        return "the server saw this access token rejected"
    if claims.exp is None:
        return None
    left = claims.exp - now
    if left <= effective_margin(claims.exp, claims.iat, margin):
        return "the access token has expired" if left <= 0 else f"the access token expires in {left:.0f}s"
    return None


def effective_margin(exp: float, iat: float | None, margin: float) -> float:
    """How long before `exp` to refresh: `margin`, but at most half the token's lifetime."""
    if iat is not None and exp > iat:
        # A token that lives shorter than the margin would be refreshed on every tick.
        return min(margin, (exp - iat) / 2)
    return margin


def planned_refresh_at(account: Account, now: float, margin: float) -> float | None:
    """When the refresher will renew `account` if nothing asks earlier (`now` when due); None if it never will."""
    if refresh_reason(account, now, margin):
        return now
    if not account.enabled or not account.refresh_token or awaiting_relogin(account):
        return None
    claims = try_decode_claims(account.access_token)
    if claims is None or claims.exp is None:
        return None
    return claims.exp - effective_margin(claims.exp, claims.iat, margin)
