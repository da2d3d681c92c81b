"""Facts about an account that both processes need: does it await a new login, is its token live."""

from __future__ import annotations

from common.config import STATE_RELOGIN, Account
from common.jwt_claims import try_decode_claims
from common.redact import fingerprint


def awaiting_relogin(account: Account) -> bool:
    """True while the refresh token in the file is the one Kimi already refused."""
    return (account.status.state == STATE_RELOGIN
            and account.status.rejected_token == fingerprint(account.refresh_token))


def access_token_live(account: Account, now: float) -> bool:
    """True when the account holds an access token whose `exp` is still ahead."""
    claims = try_decode_claims(account.access_token)
    return claims is not None and claims.exp is not None and claims.exp > now
