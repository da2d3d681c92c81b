"""POST /token/check: is a Kimi token live? Never spends a refresh token to find out."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from common.account_state import awaiting_relogin
from common.jwt_claims import strip_bearer, try_decode_claims
from common.redact import fingerprint
from server.core.errors import bad_request
from server.edge.base import ApiHandler
from server.upstream.errors import UpstreamAuthRejected, UpstreamError

CACHE_SECONDS = 600
CACHE_SIZE = 1024


class TokenCheckCache:
    """Answers per token digest, so Kimi is asked at most once per token per ten minutes."""

    def __init__(self) -> None:
        self._entries: OrderedDict[bytes, tuple[float, dict]] = OrderedDict()

    def get(self, key: bytes) -> dict | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > CACHE_SECONDS:
            return None
        return entry[1]

    def put(self, key: bytes, answer: dict) -> None:
        self._entries[key] = (time.monotonic(), answer)
        self._entries.move_to_end(key)
        while len(self._entries) > CACHE_SIZE:
            self._entries.popitem(last=False)


class TokenCheckHandler(ApiHandler):
    """kimi-free-api's route, behind the API key."""

    async def post(self) -> None:
        token = self.json_body().get("token")
        if not isinstance(token, str) or not strip_bearer(token):
            raise bad_request("Send {\"token\": \"<Kimi access or refresh token>\"}.", "token")
        token = strip_bearer(token)
        key = hashlib.sha256(token.encode()).digest()
        cache = self.services.token_checks
        answer = cache.get(key)
        if answer is None:
            answer = await self._check(token)
            cache.put(key, answer)
        self.send_json(answer)

    async def _check(self, token: str) -> dict:
        claims = try_decode_claims(token)
        if claims is None:
            return {"live": False, "checked": "format", "reason": "not a Kimi JWT"}
        if claims.exp is not None and claims.exp <= time.time():
            return {"live": False, "checked": "claims", "reason": "expired", "typ": claims.typ}
        if claims.typ == "access":
            try:
                await self.services.kimi.user(token)
            except UpstreamAuthRejected:
                return {"live": False, "checked": "upstream", "typ": "access"}
            except UpstreamError as exc:
                raise exc.to_failure() from None
            return {"live": True, "checked": "upstream", "typ": "access"}
        # Checking a refresh token upstream would spend it (Kimi rotates them) and log its owner out.
        for account in self.services.config().accounts:
            if account.refresh_token == token:
                return {"live": not awaiting_relogin(account), "checked": "refresher", "typ": claims.typ,
                        "account": account.name}
        return {"live": True, "checked": "claims", "typ": claims.typ,
                "note": f"refresh token {fingerprint(token)} is unexpired; it is not spent to check it upstream"}
