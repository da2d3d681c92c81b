"""GET / (and HEAD): a self-contained HTML home page, no key needed and no secret in it."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from dataclasses import dataclass

from server import __version__
from server.edge.base import ApiHandler

PAGE_PATH = os.path.join(os.path.dirname(__file__), "static", "home.html")
PLACEHOLDER = re.compile(r"\{\{(version|base_url)\}\}")
# A Host header as browsers and proxies send it (a name, `_` included for container names, an IPv4 or a
# bracketed IPv6 address, and a port); anything else is not echoed into the page, even escaped.
HOST = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
UNKNOWN_HOST = "HOST:PORT"


@dataclass(frozen=True)
class HomePage:
    """The page's template and the headers it is served with (its CSP pins the inline style and script)."""

    template: str
    headers: dict

    @classmethod
    def load(cls, path: str = PAGE_PATH) -> HomePage:
        """Read the page once; hash its one inline <style> and one <script> for the Content-Security-Policy."""
        with open(path, encoding="utf-8") as f:
            template = f.read()
        hashes = {tag: _inline_hash(template, tag) for tag in ("style", "script")}
        csp = "; ".join((
            "default-src 'none'", f"script-src '{hashes['script']}'", f"style-src '{hashes['style']}'",
            "connect-src 'self'", "img-src data:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))
        return cls(template, {
            "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"})

    def render(self, base_url: str) -> str:
        """The page for one request: the version and base URL filled in, HTML-escaped."""
        values = {"version": html.escape(__version__), "base_url": html.escape(base_url)}
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)


def _inline_hash(template: str, tag: str) -> str:
    """The CSP source ('sha256-...') of the page's single inline `tag`, whose text must hold no placeholder."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", template, flags=re.DOTALL)
    if len(bodies) != 1:
        raise ValueError(f"{PAGE_PATH}: expected exactly one <{tag}>, found {len(bodies)}")
    if PLACEHOLDER.search(bodies[0]):
        raise ValueError(f"{PAGE_PATH}: a placeholder inside <{tag}> would break its hash")
    digest = hashlib.sha256(bodies[0].encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


class HomeHandler(ApiHandler):
    """The home page: what this is, the base URL to use, client recipes, and a status panel (key asked in the page)."""

    SUPPORTED_METHODS = ("GET", "HEAD")
    require_key = False

    def initialize(self, services, page: HomePage) -> None:
        super().initialize(services)
        self.page = page

    def get(self) -> None:
        """The page; HEAD gets the same headers and no body (Tornado drops it)."""
        for name, value in self.page.headers.items():
            self.set_header(name, value)
        self.finish(self.page.render(self.base_url()))

    head = get

    def base_url(self) -> str:
        """Scheme and host as the client reached us: the scheme honours X-Forwarded-Proto (the server runs with
        Tornado's xheaders), the host is the Host header (X-Forwarded-Host is trusted nowhere in this server)."""
        host = self.request.host
        return f"{self.request.protocol}://{host if HOST.fullmatch(host) else UNKNOWN_HOST}"

    def allowed_methods(self) -> list[str]:
        """A 405 here names only these (the page is read-only)."""
        return ["GET", "HEAD"]
