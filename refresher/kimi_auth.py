"""Kimi's token endpoints over `requests`: exchange a refresh token for a new (access, refresh) pair.

The 2026 web refreshes with the `AuthService/RefreshToken` RPC on its auth host; the old
`GET /api/auth/token/refresh` is only a fallback for a Kimi where that RPC does not exist
(kimi-protocol-2026-12.md §1 item 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import requests

from common.kimi_headers import browser_headers, kimi_headers

RPC_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
LEGACY_PATH = "/api/auth/token/refresh"
# Only these say "no such call here": any other answer may come after Kimi spent the token.
PATH_MISSING = (404, 405)


class RefreshError(Exception):
    """A refresh that did not produce a new pair. The message never holds a token."""


class RefreshRejected(RefreshError):
    """Kimi refused the refresh token: the account needs a new login. Do not retry."""


class RefreshTransient(RefreshError):
    """Timeout, connection failure, throttling or a server error: retry later with the same token."""


class _PathMissing(RefreshError):
    """The refresh call answered 404/405: it does not exist on that host, so the token was not spent."""


@dataclass(frozen=True)
class TokenPair:
    """A freshly minted access token and the refresh token that replaces the one we spent."""

    access_token: str
    refresh_token: str


class KimiAuthClient:
    """The refresh RPC on `auth_base_url`, falling back for good to the GET on `base_url` once the RPC is missing.

    One client serves one auth host (the daemon makes a new one when the upstream settings change),
    so the remembered fallback is per auth host.
    """

    def __init__(self, auth_base_url: str, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self._rpc_url = auth_base_url.rstrip("/") + RPC_PATH
        self._legacy_url = base_url.rstrip("/") + LEGACY_PATH
        self._origin = base_url.rstrip("/")
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        self.uses_legacy = False

    def close(self) -> None:
        self._session.close()

    def refresh(self, refresh_token: str) -> TokenPair:
        """Spend `refresh_token` on a new pair; raise RefreshRejected or RefreshTransient."""
        if not self.uses_legacy:
            try:
                return self._rpc(refresh_token)
            except _PathMissing:
                # The RPC does not exist here, so it did not spend the token: the old call may.
                self.uses_legacy = True
        try:
            return self._legacy(refresh_token)
        except _PathMissing:
            self.uses_legacy = False   # neither exists now: try the RPC first again next time
            raise RefreshTransient(f"neither {self._rpc_url} nor {self._legacy_url} exists (HTTP 404/405)") from None

    def _rpc(self, refresh_token: str) -> TokenPair:
        headers = {**browser_headers(self._origin, refresh_token), "Content-Type": "application/json",
                   "Connect-Protocol-Version": "1"}
        body = orjson.dumps({"refresh_token": refresh_token})
        response = self._send("POST", self._rpc_url, headers, body)
        return _parse(response, self._rpc_url)

    def _legacy(self, refresh_token: str) -> TokenPair:
        response = self._send("GET", self._legacy_url, kimi_headers(self._origin, refresh_token), None)
        return _parse(response, self._legacy_url)

    def _send(self, method: str, url: str, headers: dict, body: bytes | None) -> requests.Response:
        try:
            return self._session.request(method, url, headers=headers, data=body, timeout=self._timeout)
        except requests.Timeout:
            raise RefreshTransient(f"{url} did not answer within the timeouts (connect {self._timeout[0]:g} s, "
                                   f"read {self._timeout[1]:g} s)") from None
        except requests.RequestException as exc:
            raise RefreshTransient(f"could not reach {url} ({_reason_of(exc)})") from None


def _parse(response: requests.Response, url: str) -> TokenPair:
    """A new pair from a 200; otherwise the right RefreshError for the answer."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    # The REST call's error_type, or the RPC's Connect code plus message ("invalid claims").
    why = body.get("error_type") or " ".join(str(body[k]) for k in ("code", "message") if isinstance(body.get(k), str))
    why = why[:200] or "no error detail"
    if status in PATH_MISSING:
        raise _PathMissing(url)
    if status in (401, 403) or body.get("error_type") == "auth.token.invalid" \
            or body.get("code") in ("unauthenticated", "permission_denied"):
        raise RefreshRejected(f"Kimi refused the refresh token (HTTP {status}, {why})")
    if status != 200:
        raise RefreshTransient(f"{url} answered HTTP {status} ({why})")
    access = _first_str(body, "accessToken", "access_token")
    refresh = _first_str(body, "refreshToken", "refresh_token")
    if not (access and refresh):
        raise RefreshTransient(f"{url} answered 200 without both tokens")
    return TokenPair(access, refresh)


def _first_str(body: dict, *names: str) -> str:
    """The first non-empty string among `names` (protobuf JSON writes camelCase, REST snake_case)."""
    return next((body[n] for n in names if isinstance(body.get(n), str) and body[n]), "")


def _reason_of(exc: BaseException) -> str:
    """The root cause of a requests failure in a few words, e.g. `ConnectionError: Connection refused`."""
    root = exc
    # requests wraps urllib3's MaxRetryError, whose `reason` is the socket-level error.
    while True:
        inner = getattr(root, "reason", None)
        if not isinstance(inner, BaseException):
            inner = root.args[0] if root.args and isinstance(root.args[0], BaseException) else None
        if inner is None or inner is root:
            break
        root = inner
    detail = getattr(root, "strerror", None) or (str(root.args[-1]) if root.args else "")
    return f"{type(exc).__name__}: {detail[:200]}" if detail else type(exc).__name__
