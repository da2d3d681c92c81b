"""Kimi's token endpoint over `requests`: exchange a refresh token for a new (access, refresh) pair."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from common.kimi_headers import kimi_headers

REFRESH_PATH = "/api/auth/token/refresh"


class RefreshError(Exception):
    """A refresh that did not produce a new pair. The message never holds a token."""


class RefreshRejected(RefreshError):
    """Kimi refused the refresh token: the account needs a new login. Do not retry."""


class RefreshTransient(RefreshError):
    """Timeout, connection failure, throttling or a server error: retry later with the same token."""


@dataclass(frozen=True)
class TokenPair:
    """A freshly minted access token and the refresh token that replaces the one we spent."""

    access_token: str
    refresh_token: str


class KimiAuthClient:
    """Calls `GET /api/auth/token/refresh` with a timeout on every call."""

    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self._url = base_url.rstrip("/") + REFRESH_PATH
        self._origin = base_url.rstrip("/")
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def refresh(self, refresh_token: str) -> TokenPair:
        """Spend `refresh_token` on a new pair; raise RefreshRejected or RefreshTransient."""
        try:
            response = self._session.get(self._url, headers=kimi_headers(self._origin, refresh_token),
                                         timeout=self._timeout)
        except requests.Timeout:
            raise RefreshTransient("the token endpoint timed out") from None
        except requests.RequestException as exc:
            raise RefreshTransient(f"could not reach the token endpoint ({type(exc).__name__})") from None
        return self._parse(response)

    @staticmethod
    def _parse(response: requests.Response) -> TokenPair:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        error_type = body.get("error_type") if isinstance(body, dict) else None
        if status in (401, 403) or error_type == "auth.token.invalid":
            raise RefreshRejected(f"Kimi refused the refresh token (HTTP {status}, {error_type or 'no error_type'})")
        if status != 200:
            raise RefreshTransient(f"the token endpoint answered HTTP {status} ({error_type or 'no error_type'})")
        if not isinstance(body, dict):
            raise RefreshTransient("the token endpoint answered 200 without a JSON object")
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
            raise RefreshTransient("the token endpoint answered 200 without both tokens")
        return TokenPair(access, refresh)
