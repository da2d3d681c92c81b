"""Facts about an account that both processes need: does it await a new login, is its token live."""

from __future__ import annotations

from common.config import STATE_RELOGIN, Account
from common.jwt_claims import try_decode_claims
from common.redact import fingerprint


def credential(account: Account) -> str:
    """The token that stands for the login: the refresh token, or a lone kimi-auth access token."""
    return account.refresh_token or account.access_token


def awaiting_relogin(account: Account) -> bool:
    """True while the login token in the file is the one Kimi refused (or that ran out)."""
    return (account.status.state == STATE_RELOGIN
            and account.status.rejected_token == fingerprint(credential(account)))


def access_token_live(account: Account, now: float) -> bool:
    """True when the account holds an access token whose `exp` is still ahead."""
    claims = try_decode_claims(account.access_token)
    return claims is not None and claims.exp is not None and claims.exp > now
