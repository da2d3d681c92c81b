"""The 2026 web's refresh RPC (kimi-protocol-2026-12.md §1 item 2): plain unary JSON, strict rotation."""

from __future__ import annotations

import orjson

from tests.kimi_emulator.base import EmulatorHandler
from tests.kimi_emulator.tokens import AuthError, token_digest

REFRESH_RPC_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
WEBS = ("2026", "legacy")
# Headers the read-back reports, so tests can see what a client sent without seeing a secret.
_SHOWN_HEADERS = ("X-Msh-Platform", "X-Msh-Version", "X-Msh-Device-Id", "X-Msh-Session-Id", "X-Traffic-Id",
                  "X-Language", "R-Timezone", "Connect-Protocol-Version", "Content-Type", "Origin")


class RpcError(Exception):
    """A Connect-style unary error: `{"code", "message"}` with its HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RefreshRpcHandler(EmulatorHandler):
    """POST {"refresh_token"} or {"refreshToken"}, no Authorization; answers {"accessToken","refreshToken"}."""

    endpoint = "refresh_rpc"

    async def post(self) -> None:
        try:
            body = orjson.loads(self.request.body or b"null")
        except orjson.JSONDecodeError:
            body = None
        token, spelling = _token(body)
        # The read-back holds a digest, never the token, plus the request's shape.
        seen = {"token": token_digest(token) if token else "", "spelling": spelling,
                "authorization": "Authorization" in self.request.headers,
                "headers": {h: self.request.headers[h] for h in _SHOWN_HEADERS if h in self.request.headers}}
        if not await self.before(seen):
            return
        try:
            if not token:
                raise RpcError(400, "invalid_argument", "refresh_token is required")
            try:
                access, refresh = self.state.tokens.refresh(token)
            except AuthError:
                # What AUR measured for a reused token; unknown and revoked ones get the same answer.
                raise RpcError(401, "unauthenticated", "invalid claims") from None
        except RpcError as exc:
            self.send_json({"code": exc.code, "message": exc.message}, exc.status)
            return
        self.send_json({"accessToken": access, "refreshToken": refresh})


class NotFoundHandler(EmulatorHandler):
    """Any path this web does not serve: 404, recorded (tests check what a client tried)."""

    endpoint = "not_found"

    def prepare(self) -> None:
        self.state.record(self.endpoint, self.request.method, self.request.path, None)
        self.send_json({"code": "not_found", "message": f"{self.request.method} {self.request.path} not found"}, 404)


class WebSwitchHandler(EmulatorHandler):
    """POST /_admin/web {"web": "2026"|"legacy"}: which Kimi web the emulator plays from now on."""

    def post(self) -> None:
        body = self.body_json()
        if body.get("web") not in WEBS:
            self.send_json({"error": "web is 2026 or legacy"}, 400)
            return
        self.state.web = body["web"]
        self.send_json({"web": self.state.web})


def _token(body: object) -> tuple[str, str]:
    """The refresh token and the spelling it came in; protobuf JSON takes both."""
    if isinstance(body, dict):
        for name in ("refresh_token", "refreshToken"):
            if isinstance(body.get(name), str) and body[name]:
                return body[name], name
    return "", ""
