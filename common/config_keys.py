"""Config keys kimi-bridge does not know: each named with the closest known key; a typo in `upstream` is fatal."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from common.settings import DEFAULTS, ENV_PREFIX, env_name

TOP_LEVEL = ("api_keys", "accounts", *DEFAULTS)
# reverse-kimi's flat file: `token` is the API key, `auth_token`/`refresh_token` the one account.
LEGACY_TOP_LEVEL = ("token", "auth_token", "refresh_token", "account_status", *DEFAULTS)
ACCOUNT_FIELDS = ("name", "refresh_token", "access_token", "kimi_auth", "enabled", "protocol", "status", "note")
# A misspelt key there falls back to a default that reaches the real Kimi (base_url): tokens could go
# to a host the user did not mean, so the processes refuse to start rather than warn.
FATAL_SECTIONS = ("upstream",)
# Keys starting with these are the user's comments (JSON has none), e.g. "_comment", "$schema".
COMMENT_PREFIXES = ("_", "$", "//", "#")
# KIMI_BRIDGE_ variables that are not settings: the key override, pm2's file, the test-only switches.
OTHER_ENV = (ENV_PREFIX + "API_KEYS", ENV_PREFIX + "PYTHON", ENV_PREFIX + "CONFIG")
OTHER_ENV_PREFIXES = (ENV_PREFIX + "TESTING_",)


@dataclass(frozen=True)
class UnknownKey:
    """One key the config model does not know, where it is, and what was probably meant."""

    field: str          # e.g. "upstream.baseurl", "accounts[0].refresh" or "KIMI_BRIDGE_UPSTREAM_BASEURL"
    suggestion: str     # the closest known field, or ""
    fatal: bool         # True: the processes do not start with it
    in_environment: bool = False

    def message(self, source: str) -> str:
        """One line for the person who edits the file (or the environment)."""
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        where, what = ("environment", "variable") if self.in_environment else (source, "key")
        text = f"{where}: {self.field}: unknown {what}{hint}"
        if self.fatal:
            return text + (" An unknown upstream setting is refused: the one meant would silently keep its "
                           "default, which is the real Kimi. Fix or remove it.")
        return text + " It is ignored."


def find_unknown_keys(doc: dict, legacy: bool, environ: Mapping[str, str] | None = None) -> tuple[UnknownKey, ...]:
    """Every key of `doc` (top level, sections, accounts), and KIMI_BRIDGE_ variable, that nothing reads."""
    found = list(_unknown_environment(environ or {}))
    top = LEGACY_TOP_LEVEL if legacy else TOP_LEVEL
    for key in doc:
        if key not in top and not _is_comment(key):
            found.append(UnknownKey(key, _closest(key, top, prefix="") or _closest_setting(key), False))
    for section, defaults in DEFAULTS.items():
        raw = doc.get(section)
        if not isinstance(raw, dict):
            continue
        for key in raw:
            if key not in defaults and not _is_comment(key):
                suggestion = _closest(key, tuple(defaults), prefix=section + ".") or _closest_setting(key)
                found.append(UnknownKey(f"{section}.{key}", suggestion, section in FATAL_SECTIONS))
    accounts = doc.get("accounts")
    if not legacy and isinstance(accounts, list):
        for i, item in enumerate(accounts):
            if isinstance(item, dict):
                found.extend(UnknownKey(f"accounts[{i}].{key}", _closest(key, ACCOUNT_FIELDS, f"accounts[{i}]."),
                                        False)
                             for key in item if key not in ACCOUNT_FIELDS and not _is_comment(key))
    return tuple(found)


def _unknown_environment(environ: Mapping[str, str]) -> list[UnknownKey]:
    """KIMI_BRIDGE_ variables that override nothing (`KIMI_BRIDGE_UPSTREAM_BASEURL` is as bad as `baseurl`)."""
    known = {env_name(section, key) for section, keys in DEFAULTS.items() for key in keys}
    found = []
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known and name not in OTHER_ENV \
                and not name.startswith(OTHER_ENV_PREFIXES):
            match = difflib.get_close_matches(name, sorted(known | set(OTHER_ENV)), n=1, cutoff=0.8)
            fatal = name.startswith(env_name(FATAL_SECTIONS[0], ""))
            found.append(UnknownKey(name, match[0] if match else "", fatal, in_environment=True))
    return found


def _is_comment(key: str) -> bool:
    """A key the user wrote as a comment (`_note`, `$schema`, `// why`)."""
    return key.startswith(COMMENT_PREFIXES)


def _closest(key: str, known: tuple[str, ...], prefix: str) -> str:
    """The known key most like `key` (difflib), with `prefix`, or ""."""
    match = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    return prefix + match[0] if match else ""


def _closest_setting(key: str) -> str:
    """A key in the wrong place (`base_url` at the top level): the dotted setting it belongs to."""
    dotted = {f"{section}.{name}": name for section, names in DEFAULTS.items() for name in names}
    match = difflib.get_close_matches(key.lower(), tuple(dotted.values()), n=1, cutoff=0.8)
    return next((full for full, name in dotted.items() if match and name == match[0]), "")
