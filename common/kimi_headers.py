"""The browser-like headers every call to Kimi carries, including the identity from the token's claims."""

from __future__ import annotations

from common.jwt_claims import try_decode_claims

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
# What www.kimi.com's web app sent in 2026 (kimi-protocol-2026-12.md §4: PYSK's capture, AUR).
WEB_VERSION = "2.0.0"
LANGUAGE = "zh-CN"
TIMEZONE = "Asia/Shanghai"
_IDENTITY_CLAIMS = (("device_id", "X-Msh-Device-Id"), ("ssid", "X-Msh-Session-Id"), ("sub", "X-Traffic-Id"))


def browser_headers(base_url: str, token: str, referer_path: str = "/") -> dict:
    """What the web app sends on every call, without Authorization; device, session and traffic ids echo
    `token`'s own JWT claims, so that Kimi sees one consistent device across token rotations
    (kimi-protocol.md §1.2, §3.10; kimi-protocol-2026-12.md §4)."""
    origin = base_url.rstrip("/")
    headers = {"Accept": "*/*", "User-Agent": USER_AGENT, "Origin": origin, "Referer": origin + referer_path,
               "X-Msh-Platform": "web", "X-Msh-Version": WEB_VERSION, "X-Language": LANGUAGE,
               "R-Timezone": TIMEZONE}
    claims = try_decode_claims(token)
    if claims is not None:
        for claim, header in _IDENTITY_CLAIMS:
            if isinstance(claims.raw.get(claim), str):
                headers[header] = claims.raw[claim]
    return headers


def kimi_headers(base_url: str, token: str, referer_path: str = "/") -> dict:
    """browser_headers() plus `Authorization: Bearer <token>`."""
    return {"Authorization": f"Bearer {token}", **browser_headers(base_url, token, referer_path)}
