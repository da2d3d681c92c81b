"""The home page at /: no key, no secret, strict headers; in headless Chromium it renders and its status panel works."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import orjson
import pytest
import requests

from server import __version__
from tests.helpers import Stack, read_json, wait_until, write_json

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000   # generous: the machine may be loaded
# An account name and an error that would turn into elements (and run) if the page ever parsed data as HTML.
HOSTILE_NAME = 'acct1 <img src=x id=injected onerror="window.__xss=1">'
HOSTILE_ERROR = '<b id=injected2>bold</b> & "quoted" </dd><script>window.__xss=2</script>'
WRONG_KEY = "sk-this-key-is-wrong"


@pytest.fixture(scope="module")
def home_stack(tmp_path_factory):
    """Two accounts; the second renamed to markup and given a markup last_error (the server hot-reloads it)."""
    stack = Stack(tmp_path_factory.mktemp("home"), accounts=2)
    doc = read_json(stack.config_path)
    doc["accounts"][1]["name"] = HOSTILE_NAME
    doc["accounts"][1]["status"] = {"state": "failing", "last_error": HOSTILE_ERROR}
    write_json(stack.config_path, doc)
    wait_until(lambda: HOSTILE_NAME in [a["name"] for a in status(stack)["accounts"]], 30, "the renamed account")
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright; missing, it fails under CI and skips elsewhere."""
    reason = None
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (requirements-dev.txt)"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS)
        yield chromium
        chromium.close()


class Visit:
    """One page load in a fresh browser context, recording every request, failure and console error."""

    def __init__(self, browser, stack: Stack) -> None:
        self.context = browser.new_context()
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.requests, self.failed, self.bad_responses, self.console_errors = [], [], [], []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.method} {r.url}: {r.failure}"))
        self.page.on("response", lambda r: self.bad_responses.append((r.status, r.url)) if r.status >= 400 else None)
        self.page.on("console", lambda m: self.console_errors.append(m) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(e))
        self.response = self.page.goto(stack.url + "/")

    def submit_key(self, key: str) -> None:
        self.page.fill("#api-key", key)
        self.page.click("#key-form button[type=submit]")

    def close(self) -> None:
        self.context.close()


def status(stack: Stack, key: str | None = None) -> dict:
    return requests.get(stack.url + "/v1/status", headers=stack.headers(key), timeout=10).json()


def secrets_of(stack: Stack) -> list[str]:
    """Everything that must never reach the page: the API key and every account's tokens."""
    doc = read_json(stack.config_path)
    tokens = [a[field] for a in doc["accounts"] for field in ("refresh_token", "access_token") if a.get(field)]
    return [Stack.API_KEY, *tokens]


def inline_hash(body: str, tag: str) -> str:
    (text,) = re.findall(rf"<{tag}>(.*?)</{tag}>", body, flags=re.DOTALL)
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# --- plain HTTP ------------------------------------------------------------------------------

def test_home_page_needs_no_key_holds_no_secret_and_sends_strict_headers(home_stack):
    response = requests.get(home_stack.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    body = response.text
    for secret in secrets_of(home_stack):
        assert secret not in body
    assert f'<code id="base-url">{home_stack.url}/v1</code>' in body
    assert f'<span id="version">{__version__}</span>' in body
    assert 'href="/openapi.json"' in body and 'href="/health"' in body
    csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    # The inline script and style run by their hashes, and nothing else inline does.
    assert f"script-src {inline_hash(body, 'script')}" in csp and f"style-src {inline_hash(body, 'style')}" in csp
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    # The page's script writes data only through textContent.
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", body)


def test_home_page_answers_head_and_only_get_and_head_on_exactly_slash(home_stack):
    url = home_stack.url
    get = requests.get(url + "/", timeout=10)
    head = requests.head(url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))
    for name in ("Content-Type", "Content-Security-Policy", "X-Frame-Options", "Referrer-Policy"):
        assert head.headers[name] == get.headers[name]
    post = requests.post(url + "/", data=b"{}", timeout=10)
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
    assert post.json()["error"]["code"] == "method_not_allowed"
    # Other unknown paths keep the key check and the 404 envelope.
    assert requests.get(url + "/index.html", timeout=10).status_code == 401
    missing = requests.get(url + "/index.html", headers=home_stack.headers(), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_base_url_follows_the_host_and_forwarded_proto_and_never_echoes_a_hostile_host(home_stack):
    def base_url(**headers) -> str:
        body = requests.get(home_stack.url + "/", headers=headers, timeout=10).text
        return re.search(r'<code id="base-url">(.*?)/v1</code>', body).group(1)

    assert base_url(Host="kimi.example.org:8443") == "http://kimi.example.org:8443"
    assert base_url(**{"Host": "[::1]:6867"}) == "http://[::1]:6867"
    # The server runs with Tornado's xheaders: the scheme follows X-Forwarded-Proto, and X-Forwarded-Host is
    # trusted nowhere, so not here either.
    assert base_url(**{"X-Forwarded-Proto": "https", "Host": "kimi.example.org"}) == "https://kimi.example.org"
    assert base_url(**{"X-Forwarded-Host": "evil.example"}) == home_stack.url
    assert base_url(Host="kimi_bridge_server_1:6867") == "http://kimi_bridge_server_1:6867"   # compose names
    # Tornado itself refuses a Host with quotes or angle brackets (400); one it lets through that is no
    # plain host name is not echoed at all.
    hostile = requests.get(home_stack.url + "/", headers={"Host": "x'&(onload)=1"}, timeout=10)
    assert hostile.status_code == 200 and "onload" not in hostile.text
    assert '<code id="base-url">http://HOST:PORT/v1</code>' in hostile.text


# --- in the browser --------------------------------------------------------------------------

def test_page_renders_and_status_panel_fills_in_with_a_valid_key(browser, home_stack):
    from playwright.sync_api import expect
    visit = Visit(browser, home_stack)
    try:
        page = visit.page
        served = visit.response.text()
        for secret in secrets_of(home_stack):
            assert secret not in served
        assert page.title() == "kimi-bridge"
        expect(page.locator("#version")).to_have_text(__version__)
        expect(page.locator("#base-url")).to_have_text(home_stack.url + "/v1")
        expect(page.locator(".recipe button")).to_have_count(len(page.locator(".recipe").all()))

        visit.submit_key(Stack.API_KEY)
        truth = status(home_stack)
        cards = page.locator("#status-accounts .account")
        expect(cards).to_have_count(len(truth["accounts"]))
        for card, account in zip(cards.all(), truth["accounts"]):
            # Exact text: markup in a name or an error is shown as text, never parsed.
            expect(card.locator(".name")).to_have_text(account["name"])
            expect(card.locator(".state")).to_have_text(account["state"])
            expect(card.locator("[data-field=access_token]")).to_have_text(account["access_token"])
        expect(cards.nth(1).locator("[data-field=last_error]")).to_have_text(HOSTILE_ERROR)
        assert page.locator("#injected, #injected2").count() == 0 and page.evaluate("window.__xss") is None
        server = page.locator("#status-server")
        expect(server.locator("[data-field=pending_chat_deletions]")).to_have_text(
            str(truth["pending_chat_deletions"]))
        expect(server.locator("[data-field=version]")).to_have_text(__version__)
        # The access token's expiry counts down live (the emulator's tokens live 900 s).
        expiry = cards.nth(0).locator("[data-field=access_token_expires_at]")
        expect(expiry).to_have_text(re.compile(r"^in (\d+m )?\d+s \("))
        first = expiry.text_content()
        expect(expiry).not_to_have_text(first)

        key_requests = [r for r in visit.requests if r.headers.get("authorization")]
        assert key_requests and all(r.url == home_stack.url + "/v1/status" for r in key_requests)
        assert key_requests[0].headers["authorization"] == f"Bearer {Stack.API_KEY}"
        assert all(r.url.startswith((home_stack.url + "/", "data:")) for r in visit.requests), visit.requests
        for secret in secrets_of(home_stack):
            assert secret not in page.content()
        assert page.evaluate("sessionStorage.length") == 0
        assert visit.failed == [] and visit.bad_responses == []
        assert visit.console_errors == []
    finally:
        visit.close()


def test_status_panel_refuses_a_wrong_key_with_the_servers_message(browser, home_stack):
    from playwright.sync_api import expect
    visit = Visit(browser, home_stack)
    try:
        page = visit.page
        visit.submit_key(WRONG_KEY)
        message = status(home_stack, WRONG_KEY)["error"]["message"]
        expect(page.locator("#status-message")).to_contain_text(message)
        expect(page.locator("#status-message")).to_have_class("error")
        expect(page.locator("#status-panel")).to_be_hidden()
        assert page.locator("#status-accounts > *").count() == 0 and page.locator("#status-server > *").count() == 0
        # The only failure is the deliberate 401 (Chromium logs it as a console error too).
        assert visit.bad_responses == [(401, home_stack.url + "/v1/status")]
        assert visit.failed == []
        unexpected = [e for e in visit.console_errors
                      if not (getattr(e, "location", {}).get("url") == home_stack.url + "/v1/status"
                              and "401" in e.text)]
        assert unexpected == []
    finally:
        visit.close()


def test_status_panel_tolerates_fields_missing_or_added_later(browser, home_stack):
    """Other parts of the server add fields to /v1/status (the next refresh, ...): the page shows what it gets."""
    from playwright.sync_api import expect
    visit = Visit(browser, home_stack)

    def reshape(route) -> None:
        data = route.fetch().json()
        del data["pending_chat_deletions"]
        data["refresher"] = {"alive": True, "heartbeat_at": data["accounts"][0]["access_token_expires_at"]}
        for account in data["accounts"]:
            del account["last_error"]
            account["next_refresh_in_seconds"] = 125
            account["flags"] = ["a", "<b>"]
        route.fulfill(status=200, content_type="application/json", body=orjson.dumps(data))

    try:
        page = visit.page
        page.route(home_stack.url + "/v1/status", reshape)
        visit.submit_key(Stack.API_KEY)
        first = page.locator("#status-accounts .account").nth(0)
        expect(first.locator("[data-field=next_refresh_in_seconds]")).to_have_text(re.compile(r"^in 2m \d+s \("))
        expect(first.locator("[data-field=flags]")).to_have_text('["a","<b>"]')
        server = page.locator("#status-server")
        expect(server.locator("[data-field=heartbeat_at]")).to_have_text(re.compile(r"^in "))
        expect(server.locator("[data-field=alive]")).to_have_text("yes")
        assert server.locator("[data-field=pending_chat_deletions]").count() == 0
        assert first.locator("[data-field=last_error]").count() == 0
        assert visit.console_errors == [] and visit.failed == [] and visit.bad_responses == []
    finally:
        visit.close()


def test_key_kept_for_the_tab_only_when_asked_and_forgotten_on_request(browser, home_stack):
    from playwright.sync_api import expect
    visit = Visit(browser, home_stack)
    try:
        page = visit.page
        page.check("#keep-key")
        visit.submit_key(Stack.API_KEY)
        expect(page.locator("#status-accounts .account")).to_have_count(2)
        page.reload()   # the tab's sessionStorage survives a reload; the panel fills in without asking again
        expect(page.locator("#status-accounts .account")).to_have_count(2)
        page.click("#forget-key")
        expect(page.locator("#status-panel")).to_be_hidden()
        assert page.evaluate("sessionStorage.length") == 0
        assert visit.console_errors == [] and visit.failed == [] and visit.bad_responses == []
    finally:
        visit.close()
