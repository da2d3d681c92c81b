"""Every tunable setting: its default, its type, and its `KIMI_BRIDGE_<SECTION>_<KEY>` override."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

from common.errors import ConfigError

# section -> key -> default. The default's type is the setting's type.
DEFAULTS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "upstream": {
        "base_url": "https://www.kimi.com",  # kimi.moonshot.cn sends visitors outside China here
        "auth_base_url": "auto",      # refresh RPC host; auto: auth.kimi.com for (www.)kimi.com, else base_url
        "protocol": "auto",           # rest, connect, or auto (= Connect, the only chat protocol of the 2026 web)
        "connect_timeout": 10.0,      # seconds to open a connection to Kimi
        "request_timeout": 300.0,     # seconds for one whole upstream call
        "idle_timeout": 60.0,         # seconds of silence tolerated inside a stream
        "refresh_timeout": 15.0,      # seconds for one token refresh call
        "parse_timeout": 120.0,       # seconds Kimi may take to read an attached document
        "pool_idle_seconds": 15.0,    # an unused connection to Kimi stays open this long for the next call; 0: never
    },
    "server": {
        "host": "0.0.0.0",
        "port": 6867,
        "processes": 1,                   # server processes sharing the port; 0 means one per CPU core
        "uvloop": True,                   # run on uvloop when it is installed (false: the standard asyncio loop)
        "max_body_bytes": 20_000_000,     # largest request body accepted (413 above)
        "idle_connection_timeout": 75.0,  # seconds a kept-alive client connection may sit idle
        "body_timeout": 60.0,             # seconds a client may take to send its request body
        "keepalive_seconds": 15.0,        # `: keepalive` comment after this much upstream silence
        "cors_origins": "*",              # comma-separated origins allowed to call from a browser
        "refresh_wait_seconds": 20.0,     # how long a request waits for the refresher to renew a token
        "max_attempts": 3,                # upstream attempts (accounts) per request before the first byte
        "max_continuations": 5,           # "continue generating" rounds after Kimi's output cap
        "conversations_file": "conversations.json",  # kept conversations, beside config.json unless absolute
        "conversation_wait_seconds": 60.0,  # a turn waits this long for the running one of its conversation
        "max_file_bytes": 20_000_000,     # largest image or file taken from a message (decoded or downloaded)
        "fetch_timeout": 30.0,            # seconds to download one image or file URL
        "fetch_allowed_ports": "80,443",  # ports a file URL may use
        "model_catalog_refresh_seconds": 3600.0,  # how often each account's model list is read from Kimi again
    },
    "refresher": {
        "tick_seconds": 5.0,          # how often accounts are looked at
        "margin_seconds": 180.0,      # refresh when the access token has less than this left
        "retry_base_seconds": 5.0,    # first back-off after a transient failure
        "retry_max_seconds": 60.0,    # back-off ceiling: several retries fit in the margin of a 15-minute token
        "expiry_warning_seconds": 172800.0,  # warn this long before a kimi-auth token (no refresh token) runs out
    },
    "store": {
        "lock_timeout": 30.0,         # seconds a writer waits for the config lock
    },
})

ENV_PREFIX = "KIMI_BRIDGE_"
# 0 has a meaning there: one server process per CPU core; no kept-alive upstream connections.
ZERO_ALLOWED = ("server.processes", "SERVER_PROCESSES", "upstream.pool_idle_seconds", "UPSTREAM_POOL_IDLE_SECONDS")
PROTOCOLS = ("rest", "connect", "auto")


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return f"{ENV_PREFIX}{section}_{key}".upper()


def resolve_section(section: str, raw: object, source: str, environ: Mapping[str, str]) -> dict:
    """Merge defaults, the file's values and environment overrides for one section, checking types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, section, "an object", raw)
    values: dict[str, object] = {}
    for key, default in DEFAULTS[section].items():
        field = f"{section}.{key}"
        value = raw.get(key, default)
        env_value = environ.get(env_name(section, key))
        if env_value is not None:
            value = _parse_env(env_value, default, env_name(section, key))
            field = env_name(section, key)
        values[key] = _check(value, default, field, source)
    return values


def _parse_env(text: str, default: object, name: str) -> object:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError("environment", name, "true or false", text)
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise ConfigError("environment", name, kind, text) from None
    return text


def _check(value: object, default: object, field: str, source: str) -> object:
    if field.startswith(ENV_PREFIX):
        source = "environment"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(source, field, "true or false", value)
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, field, "a number", value)
        if isinstance(default, int) and not isinstance(default, bool):
            if value != int(value):
                raise ConfigError(source, field, "a whole number", value)
            value = int(value)
        if value < 0 or (value == 0 and not field.endswith(ZERO_ALLOWED)):
            raise ConfigError(source, field, "a number above 0", value)
        if field.endswith("port") and not 1 <= value <= 65535:
            raise ConfigError(source, field, "a port from 1 to 65535", value)
        return float(value) if isinstance(default, float) else value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, field, "a non-empty string", value)
    if field.lower().endswith("protocol") and value not in PROTOCOLS:
        raise ConfigError(source, field, "one of " + ", ".join(PROTOCOLS), value)
    if field.lower().endswith("base_url"):
        return _base_url(value, field, source)
    return value


def _base_url(value: str, field: str, source: str) -> str:
    """An http(s) URL without its trailing slash; `auth_base_url` may also be `auto`."""
    if field.lower().endswith("auth_base_url") and value == "auto":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(source, field, "an http(s) URL such as https://www.kimi.com", value)
    # A scheme is case-insensitive (`HTTP://`); every client below compares it lower-case.
    return urlunsplit(parts).rstrip("/")   # urlsplit lower-cases the scheme


def auth_base_url(upstream: Mapping[str, object]) -> str:
    """Where the refresh RPC is called: the setting, or for `auto` auth.kimi.com when the web is
    (www.)kimi.com (kimi-protocol-2026-12.md §1 item 2), else base_url itself (the emulator, mirrors)."""
    configured = str(upstream.get("auth_base_url", "auto"))
    if configured != "auto":
        return configured
    base = str(upstream["base_url"])
    if (urlsplit(base).hostname or "") in ("www.kimi.com", "kimi.com"):
        return "https://auth.kimi.com"
    return base


def api_keys_override(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """`KIMI_BRIDGE_API_KEYS` (comma-separated) replaces the file's `api_keys` when set."""
    text = (os.environ if environ is None else environ).get(ENV_PREFIX + "API_KEYS")
    if text is None:
        return None
    return [k.strip() for k in text.split(",") if k.strip()]
