"""The config model: parse config.json (current or legacy reverse-kimi shape) and edit it in its own shape."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.config_keys import UnknownKey, find_unknown_keys
from common.errors import ConfigError
from common.jwt_claims import strip_bearer, try_decode_claims
from common.redact import fingerprint
from common.settings import PROTOCOLS, api_keys_override, resolve_section

LEGACY_KEYS = ("token", "auth_token", "refresh_token")
LEGACY_ACCOUNT_NAME = "default"
LEGACY_STATUS_KEY = "account_status"   # legacy files keep machine state in one extra top-level key

# Account states the refresher writes.
STATE_OK = "ok"
STATE_RELOGIN = "relogin_required"
STATE_FAILING = "failing"


@dataclass(frozen=True)
class AccountStatus:
    """Machine state the refresher keeps next to an account's tokens."""

    state: str = ""
    last_refresh_at: str = ""
    last_error: str = ""
    access_token_expires_at: str = ""
    rejected_token: str = ""      # fingerprint of the refresh token Kimi refused
    refresh_requested: str = ""   # fingerprint of an access token the server saw rejected


@dataclass(frozen=True)
class Account:
    """One Kimi login: its tokens (without `Bearer `) and its status."""

    name: str
    refresh_token: str
    access_token: str
    enabled: bool = True
    status: AccountStatus = field(default_factory=AccountStatus)
    protocol: str = ""   # rest, connect, auto, or "" for upstream.protocol


@dataclass(frozen=True)
class Config:
    """Everything a process needs, with defaults and environment overrides applied."""

    api_keys: tuple[str, ...]
    accounts: tuple[Account, ...]
    upstream: Mapping[str, object]
    server: Mapping[str, object]
    refresher: Mapping[str, object]
    store: Mapping[str, object]
    legacy: bool = False
    unknown_keys: tuple[UnknownKey, ...] = ()   # warned about at start; fatal ones stop it (common.cli)

    def account(self, name: str) -> Account | None:
        """The account called `name`, or None."""
        return next((a for a in self.accounts if a.name == name), None)


def is_legacy(doc: Mapping) -> bool:
    """True for reverse-kimi's flat `{"token", "auth_token", "refresh_token"}` file."""
    return "accounts" not in doc and any(k in doc for k in ("auth_token", "refresh_token"))


def parse_config(doc: object, source: str = "config.json", environ: Mapping[str, str] | None = None) -> Config:
    """Validate a decoded config document; raise ConfigError naming the first bad field."""
    environ = os.environ if environ is None else environ
    if not isinstance(doc, dict):
        raise ConfigError(source, "(top level)", "a JSON object", doc)
    legacy = is_legacy(doc)
    if legacy:
        api_keys = _legacy_api_keys(doc, source)
        accounts = (_parse_legacy_account(doc, source),)
    else:
        api_keys = _parse_api_keys(doc.get("api_keys", []), source)
        accounts = _parse_accounts(doc.get("accounts"), source)
    override = api_keys_override(environ)
    if override is not None:
        api_keys = tuple(override)
    sections = {name: resolve_section(name, doc.get(name), source, environ)
                for name in ("upstream", "server", "refresher", "store")}
    return Config(api_keys=api_keys, accounts=accounts, legacy=legacy,
                  unknown_keys=find_unknown_keys(doc, legacy, environ), **sections)


def _parse_api_keys(raw: object, source: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ConfigError(source, "api_keys", "a list of strings", raw)
    keys = []
    for i, key in enumerate(raw):
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(source, f"api_keys[{i}]", "a non-empty string", key)
        keys.append(strip_bearer(key))
    return tuple(keys)


def _legacy_api_keys(doc: dict, source: str) -> tuple[str, ...]:
    token = doc.get("token", "")
    if not isinstance(token, str):
        raise ConfigError(source, "token", "a string (the API key clients send)", token)
    return (strip_bearer(token),) if token.strip() else ()


def _parse_accounts(raw: object, source: str) -> tuple[Account, ...]:
    if raw is None:
        raise ConfigError(source, "accounts", "a list with at least one account")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, "accounts", "a list with at least one account", raw)
    accounts, names = [], set()
    for i, item in enumerate(raw):
        where = f"accounts[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(source, where, "an object", item)
        name = item.get("name", f"account-{i + 1}")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(source, f"{where}.name", "a non-empty string", name)
        if name in names:
            raise ConfigError(source, f"{where}.name", "a name no other account uses", detail=f"{name!r} is repeated")
        names.add(name)
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(source, f"{where}.enabled", "true or false", enabled)
        refresh = _token(item, "refresh_token", where, source)
        access = _token(item, "access_token", where, source) or _token(item, "kimi_auth", where, source)
        refresh, access = _sort_tokens(refresh, access)
        if not refresh and not access:
            raise ConfigError(source, f"{where}.refresh_token", "a Kimi refresh token (or an access_token)",
                              item.get("refresh_token"))
        protocol = item.get("protocol", "")
        if protocol not in ("", *PROTOCOLS):
            raise ConfigError(source, f"{where}.protocol", "one of " + ", ".join(PROTOCOLS), protocol)
        status = _parse_status(item.get("status"), f"{where}.status", source)
        accounts.append(Account(name, refresh, access, enabled, status, protocol))
    return tuple(accounts)


def _parse_legacy_account(doc: dict, source: str) -> Account:
    refresh, access = _sort_tokens(_token(doc, "refresh_token", "", source), _token(doc, "auth_token", "", source))
    if not refresh and not access:
        raise ConfigError(source, "refresh_token", "a Kimi refresh token", doc.get("refresh_token"))
    status = _parse_status(doc.get(LEGACY_STATUS_KEY), LEGACY_STATUS_KEY, source)
    return Account(LEGACY_ACCOUNT_NAME, refresh, access, True, status)


def _sort_tokens(refresh: str, access: str) -> tuple[str, str]:
    """Users paste a kimi-auth (access) token where a refresh token belongs: go by the token's own `typ`."""
    claims = try_decode_claims(refresh)
    if claims is not None and claims.typ == "access":
        return "", access or refresh
    return refresh, access


def _token(item: dict, key: str, where: str, source: str) -> str:
    value = item.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(source, f"{where}.{key}".lstrip("."), "a string", value)
    return strip_bearer(value)


def _parse_status(raw: object, where: str, source: str) -> AccountStatus:
    if raw is None:
        return AccountStatus()
    if not isinstance(raw, dict):
        raise ConfigError(source, where, "an object (written by the refresher)", raw)
    known = AccountStatus.__dataclass_fields__
    # Machine-written: tolerate odd values rather than refuse to start over them.
    return AccountStatus(**{k: v for k, v in raw.items() if k in known and isinstance(v, str)})


# --- edits, made on the raw document so the user's order and extra fields survive ---

def account_entry(doc: dict, name: str) -> dict | None:
    """The raw dict holding `name`'s tokens (the whole document for a legacy file)."""
    if is_legacy(doc):
        return doc if name == LEGACY_ACCOUNT_NAME else None
    for item in doc.get("accounts") or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    # Accounts without a name are called account-N by parse_config.
    for i, item in enumerate(doc.get("accounts") or []):
        if isinstance(item, dict) and "name" not in item and name == f"account-{i + 1}":
            return item
    return None


def set_tokens(doc: dict, name: str, access_token: str, refresh_token: str) -> None:
    """Store a new token pair for `name`, in the shape (and `Bearer ` style) the file uses."""
    entry = _require_entry(doc, name)
    access_key = "auth_token" if entry is doc else "access_token"
    # reverse-kimi writes both tokens as `Bearer <jwt>`; keep whichever style the file uses.
    bearer = _has_bearer(entry.get(access_key)) or _has_bearer(entry.get("refresh_token"))
    entry[access_key] = "Bearer " + access_token if bearer else access_token
    entry["refresh_token"] = "Bearer " + refresh_token if bearer else refresh_token


def update_status(doc: dict, name: str, **changes: str) -> None:
    """Merge `changes` into `name`'s status object."""
    entry = _require_entry(doc, name)
    key = LEGACY_STATUS_KEY if entry is doc else "status"
    status = entry.get(key)
    if not isinstance(status, dict):
        status = entry[key] = {}
    status.update(changes)


def update_status_if_token(doc: dict, source: str, name: str, token_fp: str, **changes: str) -> None:
    """Merge `changes` into `name`'s status only while it still holds the access token `token_fp`.

    Judged on `doc` (read under the lock), not a cached read: another process may have put a new token
    there meanwhile, and a verdict on the old one must not stick to the new one.
    """
    current = parse_config(doc, source).account(name)
    if current is not None and fingerprint(current.access_token) == token_fp:
        update_status(doc, name, **changes)


def _require_entry(doc: dict, name: str) -> dict:
    entry = account_entry(doc, name)
    if entry is None:
        raise KeyError(f"account {name!r} is no longer in the config")
    return entry


def _has_bearer(value: object) -> bool:
    return isinstance(value, str) and value.strip()[:7].lower() == "bearer "
