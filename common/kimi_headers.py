"""The browser-like headers every call to Kimi carries, including the identity from the token's claims."""

from __future__ import annotations

from common.jwt_claims import try_decode_claims

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
_IDENTITY_CLAIMS = (("device_id", "X-Msh-Device-Id"), ("ssid", "X-Msh-Session-Id"), ("sub", "X-Traffic-Id"))


def kimi_headers(base_url: str, token: str, referer_path: str = "/") -> dict:
    """Authorization plus what the web app sends; device and session ids echo the JWT's own claims,
    so that Kimi sees one consistent device across token rotations (kimi-protocol.md §1.2, §3.10)."""
    origin = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}", "Accept": "*/*", "User-Agent": USER_AGENT, "Origin": origin,
               "Referer": origin + referer_path, "X-Msh-Platform": "web", "R-Timezone": "Asia/Shanghai"}
    claims = try_decode_claims(token)
    if claims is not None:
        for claim, header in _IDENTITY_CLAIMS:
            if isinstance(claims.raw.get(claim), str):
                headers[header] = claims.raw[claim]
    return headers
