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
    if claims.iat is not None and claims.exp > claims.iat:
        # A token that lives shorter than the margin would be refreshed on every tick.
        margin = min(margin, (claims.exp - claims.iat) / 2)
    left = claims.exp - now
    if left <= margin:
        return "the access token has expired" if left <= 0 else f"the access token expires in {left:.0f}s"
    return None
