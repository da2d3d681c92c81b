"""Kimi-shaped JWTs and the token authority: minting, strict or lenient rotation, expiry, revocation."""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
import time
from dataclasses import dataclass

import orjson

_counter = itertools.count(secrets.randbelow(1 << 20))


def xid(now: float | None = None) -> str:
    """A 20-char lowercase xid (4-byte time, 5 random, 3-byte counter) in base32hex, as Kimi's ids."""
    raw = (int(now or time.time()).to_bytes(4, "big") + secrets.token_bytes(5)
           + (next(_counter) & 0xFFFFFF).to_bytes(3, "big"))
    return base64.b32hexencode(raw).decode().lower().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def mint_jwt(claims: dict) -> str:
    """An HS512-shaped JWT: real base64url header and payload, a random signature."""
    header = _b64(orjson.dumps({"alg": "HS512", "typ": "JWT"}))
    payload = _b64(orjson.dumps(claims))
    return f"{header}.{payload}.{_b64(secrets.token_bytes(64))}"


class AuthError(Exception):
    """A token Kimi would answer 401 auth.token.invalid for."""


@dataclass
class _Issued:
    user_id: str
    typ: str
    exp: float
    used: bool = False
    revoked: bool = False
    calls: int = 0   # refresh calls that presented this token


class TokenAuthority:
    """Issues and checks tokens; counts refreshes and refresh-token reuses."""

    REFRESH_TTL = 90 * 24 * 3600

    def __init__(self, clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._issued: dict[str, _Issued] = {}
        self.access_ttl = 900.0
        self.rotation = "strict"
        self.refresh_calls = 0
        self.refresh_ok = 0
        self.refresh_reuses = 0
        self.refresh_rejected = 0

    def new_account(self) -> tuple[str, str, str]:
        """Mint a user with a fresh (access, refresh) pair: (user_id, access, refresh)."""
        user_id = xid()
        access, refresh = self._pair(user_id)
        return user_id, access, refresh

    def _pair(self, user_id: str) -> tuple[str, str]:
        now = self._clock.now()
        base = {"iss": "user-center", "app_id": "kimi", "sub": user_id, "space_id": xid(),
                "abstract_user_id": xid(), "ssid": str(1730000000000000000 + secrets.randbelow(10**17)),
                "device_id": str(7300000000000000000 + secrets.randbelow(10**17)), "region": "cn",
                "membership": {"level": 10}, "iat": int(now)}
        access = mint_jwt({**base, "typ": "access", "jti": xid(), "exp": int(now + self.access_ttl)})
        refresh = mint_jwt({**base, "typ": "refresh", "jti": xid(), "exp": int(now + self.REFRESH_TTL)})
        self._issued[access] = _Issued(user_id, "access", now + self.access_ttl)
        self._issued[refresh] = _Issued(user_id, "refresh", now + self.REFRESH_TTL)
        return access, refresh

    def refresh(self, refresh_token: str) -> tuple[str, str]:
        """Exchange a refresh token for a new pair; raise AuthError when Kimi would refuse it."""
        with self._lock:
            self.refresh_calls += 1
            issued = self._issued.get(refresh_token)
            if issued is not None:
                issued.calls += 1
            if issued is None or issued.typ != "refresh" or issued.revoked or issued.exp <= self._clock.now():
                self.refresh_rejected += 1
                raise AuthError("unknown, revoked or expired refresh token")
            if issued.used:
                self.refresh_reuses += 1
                if self.rotation == "strict":
                    self.refresh_rejected += 1
                    raise AuthError("refresh token already used")
            issued.used = True
            self.refresh_ok += 1
            return self._pair(issued.user_id)

    def user_for_access(self, access_token: str) -> str:
        """The user id an access token belongs to; raise AuthError if it is not live."""
        with self._lock:
            issued = self._issued.get(access_token)
            if issued is None or issued.typ != "access" or issued.revoked or issued.exp <= self._clock.now():
                raise AuthError("unknown, revoked or expired access token")
            return issued.user_id

    def expire_access_tokens(self) -> int:
        """Expire every access token issued so far (as if their 15 minutes had passed)."""
        with self._lock:
            count = 0
            for issued in self._issued.values():
                if issued.typ == "access" and issued.exp > self._clock.now():
                    issued.exp, count = self._clock.now(), count + 1
            return count

    def revoke_user(self, user_id: str) -> int:
        """Revoke every token of a user (the web UI's log out)."""
        with self._lock:
            hits = [i for i in self._issued.values() if i.user_id == user_id and not i.revoked]
            for issued in hits:
                issued.revoked = True
            return len(hits)

    def lookup(self, digest: str) -> dict:
        """Whether the token with this token_digest() is known and was spent (tests check a fate from outside)."""
        with self._lock:
            for token, issued in self._issued.items():
                if token_digest(token) == digest:
                    return {"known": True, "typ": issued.typ, "used": issued.used, "calls": issued.calls}
        return {"known": False, "typ": "", "used": False, "calls": 0}

    def counters(self) -> dict:
        """Refresh counters for the admin stats."""
        return {"refresh_calls": self.refresh_calls, "refresh_ok": self.refresh_ok,
                "refresh_token_reuses": self.refresh_reuses, "refresh_rejected": self.refresh_rejected}


def token_digest(token: str) -> str:
    """A short id for a token in admin output (never the token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]
