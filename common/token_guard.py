"""Keep spent refresh tokens out of use: write the newer pair back over a stale edit, or mark the account."""

from __future__ import annotations


from common.account_state import awaiting_relogin
from common.config import STATE_OK, STATE_RELOGIN, parse_config, set_tokens, update_status
from common.errors import ConfigError
from common.timestamps import token_expiry
from common.redact import fingerprint
from common.token_ledger import INTERRUPTED, REFUSED, Ledger

# What the account's status says, per reason the ledger holds the token.
WHY = {
    REFUSED: "Kimi refused this refresh token earlier; it is never sent again",
    INTERRUPTED: "a refresh with this refresh token was interrupted (the refresher stopped before it could save "
                 "Kimi's answer), so Kimi may already have replaced it; it is never sent again",
}
SPENT = "this refresh token was already spent and the pair that replaced it is not known; it is never sent again"


def heal(doc: dict, ledger: Ledger, source: str) -> list[str]:
    """Fix each account of `doc` that holds a refresh token the ledger knows is spent; one log line per fix.

    With the pair saved after that token, the pair goes back in (a stale edit undone, nothing else of
    it touched); without one, the account is marked relogin_required so that nobody spends it.
    """
    if not ledger.spent:
        return []
    try:
        config = parse_config(doc, source)
    except ConfigError:
        return []   # the store refuses or keeps the last good config; nothing to heal in this one
    held = {a.refresh_token for a in config.accounts}
    lines = []
    for account in config.accounts:
        token = account.refresh_token
        record = ledger.fate(token) if token else None
        if record is None:
            continue
        # The newest pair goes in even when it is spent too (a refresh with it was interrupted): the
        # account then names the token whose fate decides it.
        pair = ledger.newest_pair(token)
        if pair and pair["refresh_token"] not in held:
            set_tokens(doc, account.name, pair["access_token"], pair["refresh_token"])
            update_status(doc, account.name, state=STATE_OK, last_error="", rejected_token="",
                          access_token_expires_at=token_expiry(pair["access_token"]) or "")
            held.add(pair["refresh_token"])
            lines.append(f"account {account.name!r} was saved with refresh token {fingerprint(token)}, which was "
                         f"already spent: wrote back its newer pair (refresh token "
                         f"{fingerprint(pair['refresh_token'])}), keeping the rest of the edit")
            token, record = pair["refresh_token"], ledger.fate(pair["refresh_token"])
            account = parse_config(doc, source).account(account.name)
        if record is not None and not awaiting_relogin(account):
            reason = WHY.get(record["why"], SPENT)
            update_status(doc, account.name, state=STATE_RELOGIN, rejected_token=fingerprint(token),
                          last_error=reason + "; paste a new refresh token")
            lines.append(f"account {account.name!r} holds refresh token {fingerprint(token)}: {reason}. "
                         f"Marked relogin_required; paste a new refresh token into {source}")
    return lines
