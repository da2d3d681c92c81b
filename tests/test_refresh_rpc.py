"""The 2026 refresh: the AuthService/RefreshToken RPC first, the old GET only where the RPC is missing."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
import requests

from common.config import Account
from common.jwt_claims import decode_claims
from common.settings import DEFAULTS, auth_base_url
from refresher.decision import planned_refresh_at, refresh_reason
from tests.helpers import ROOT, Emulator, child_env, free_port, read_json, spawn, stop, wait_until, write_json
from tests.kimi_emulator.auth_rpc import REFRESH_RPC_PATH
from tests.kimi_emulator.tokens import mint_jwt, token_digest

KEY = "sk-rpc-test-key"
FAST = {"tick_seconds": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 1.0}
LEGACY_PATH = "/api/auth/token/refresh"


def _config(path, emulator, accounts: list[dict], port: int | None = None, **upstream) -> None:
    """A config as a user writes it for the 2026 web: no protocol, no auth_base_url (both left to auto)."""
    doc = {"api_keys": [KEY], "upstream": {"base_url": emulator.url, "refresh_timeout": 5, **upstream},
           "refresher": FAST, "accounts": accounts}
    if port:
        doc["server"] = {"host": "127.0.0.1", "port": port}
    write_json(path, doc)


def _refresher(path, log):
    return spawn("refresher", "--config", str(path), stderr=log)


def _once(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refresher", "--config", str(path), "--once"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=120)


def _paths(emulator, endpoint: str) -> list[str]:
    return [r["path"] for r in emulator.received(endpoint)]


@pytest.mark.parametrize("kind", ["refresh_token_only", "local_storage_pair"])
def test_an_account_refreshes_over_the_rpc_and_chats_over_connect(tmp_path, kind):
    emulator = Emulator(tmp_path, access_ttl=4)     # short, so the pair must be renewed before the chat
    procs = []
    try:
        minted = emulator.new_account()
        account = {"name": "main", "refresh_token": minted["refresh_token"]}
        if kind == "local_storage_pair":
            account["access_token"] = minted["access_token"]
        port = free_port()
        path = tmp_path / "config.json"
        _config(path, emulator, [account], port)
        log = open(tmp_path / "refresher.log", "wb")
        procs.append(_refresher(path, log))
        wait_until(lambda: emulator.stats()["refresh_ok"] >= 2, 60, "two refreshes over the RPC")
        procs.append(spawn("server", "--config", str(path), stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {KEY}"}

        def answer():
            try:
                r = requests.post(url + "/v1/chat/completions", headers=headers, timeout=30,
                                  json={"model": "kimi", "messages": [{"role": "user", "content": "hello"}]})
            except requests.ConnectionError:
                return None
            return r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        assert wait_until(answer, 60, "an answer through the server") == "收到 🌙 turn 1: hello"
        stats = emulator.stats()
        assert stats["requests"].get("connect_chat", 0) >= 1 and stats["refresh_token_reuses"] == 0
        assert emulator.received("not_found") == []   # no REST chat, no GET refresh was even tried
        calls = emulator.received("refresh_rpc")
        assert stats["requests"]["refresh_rpc"] == stats["refresh_calls"]
        claims = decode_claims(minted["refresh_token"]).raw
        first = calls[0]["body"]
        assert first["spelling"] == "refresh_token" and first["authorization"] is False
        assert first["token"] == token_digest(minted["refresh_token"])
        assert {k: first["headers"].get(k) for k in ("X-Msh-Platform", "X-Msh-Version", "Connect-Protocol-Version",
                                                      "X-Msh-Device-Id", "X-Msh-Session-Id", "X-Traffic-Id")} == {
            "X-Msh-Platform": "web", "X-Msh-Version": "2.0.0", "Connect-Protocol-Version": "1",
            "X-Msh-Device-Id": claims["device_id"], "X-Msh-Session-Id": claims["ssid"], "X-Traffic-Id": claims["sub"]}
        assert first["headers"]["X-Language"] and first["headers"]["R-Timezone"]
        status = requests.get(url + "/v1/status", headers=headers, timeout=10).json()["accounts"][0]
        assert status["protocol"] == "connect" and status["state"] == "ok"
        # 4 s tokens: the refresher's margin is capped at half the lifetime, 2 s before exp.
        assert status["next_refresh_in_seconds"] is not None and status["next_refresh_in_seconds"] <= 2
        assert status["next_refresh_at"] <= status["access_token_expires_at"]
    finally:
        for proc in reversed(procs):
            stop(proc)
        emulator.close()


def test_invalid_claims_marks_relogin_once_and_that_token_is_never_sent_again(tmp_path):
    emulator = Emulator(tmp_path, access_ttl=2)
    try:
        spent, live = emulator.new_account(), emulator.new_account()
        # The browser the token came from refreshed it first: Kimi now answers it `401 invalid claims`.
        assert emulator.refresh(spent["refresh_token"]).status_code == 200
        path = tmp_path / "config.json"
        _config(path, emulator, [{"name": "spent", "refresh_token": spent["refresh_token"]},
                                 {"name": "live", "refresh_token": live["refresh_token"]}])
        log_path = tmp_path / "refresher.log"
        with open(log_path, "wb") as log:
            proc = _refresher(path, log)
            try:
                # Several 2 s lifetimes of the live account: many ticks in which the spent one could be retried.
                wait_until(lambda: emulator.stats()["refresh_ok"] >= 5, 60, "the live account to keep refreshing")
            finally:
                stop(proc)
        digest = token_digest(spent["refresh_token"])
        sent = [r for r in emulator.received("refresh_rpc") if r["body"]["token"] == digest]
        assert len(sent) == 2, "the spent token was sent more than once by the refresher"   # the browser's + ours
        doc = read_json(path)["accounts"][0]
        assert doc["status"]["state"] == "relogin_required" and "invalid claims" in doc["status"]["last_error"]
        assert doc["refresh_token"] == spent["refresh_token"]
        text = log_path.read_text()
        assert text.count("needs a new login") == 1 and spent["refresh_token"] not in text
        assert LEGACY_PATH not in _paths(emulator, "not_found"), "the GET was tried after the RPC answered 401"
    finally:
        emulator.close()


def test_a_missing_rpc_falls_back_to_the_get_once_and_remembers_it(tmp_path):
    emulator = Emulator(tmp_path, access_ttl=2, web="legacy")
    try:
        account = emulator.new_account()
        path = tmp_path / "config.json"
        _config(path, emulator, [{"name": "old-web", "refresh_token": account["refresh_token"]}])
        proc = _refresher(path, subprocess.DEVNULL)
        try:
            wait_until(lambda: emulator.stats()["refresh_ok"] >= 4, 60, "four refreshes over the GET")
        finally:
            stop(proc)
        assert _paths(emulator, "not_found") == [REFRESH_RPC_PATH]   # asked once, then straight to the GET
        stats = emulator.stats()
        assert stats["requests"]["refresh"] == stats["refresh_ok"] and stats["refresh_token_reuses"] == 0
        assert read_json(path)["accounts"][0]["status"]["state"] == "ok"
    finally:
        emulator.close()


def test_the_get_is_never_tried_after_the_rpc_answered_5xx_and_a_404_only_falls_back(tmp_path):
    emulator = Emulator(tmp_path)
    try:
        account = emulator.new_account()
        emulator.fault("refresh_rpc", status=500)
        emulator.fault("refresh_rpc", status=503)
        emulator.fault("refresh_rpc", status=404)   # "missing": one GET, which the 2026 web 404s too
        path = tmp_path / "config.json"
        _config(path, emulator, [{"name": "main", "refresh_token": account["refresh_token"]}])
        proc = _refresher(path, subprocess.DEVNULL)
        try:
            wait_until(lambda: emulator.stats()["refresh_ok"] == 1, 60, "the refresh to get through")
            wait_until(lambda: read_json(path)["accounts"][0].get("status", {}).get("state") == "ok", 10, "the save")
        finally:
            stop(proc)
        # RPC 500, RPC 503 (no GET after either), RPC 404 -> GET 404, then the RPC again (not the GET) works.
        assert emulator.stats()["requests"]["refresh_rpc"] == 4
        assert _paths(emulator, "not_found") == [LEGACY_PATH]
        assert emulator.received("not_found")[0]["at"] > emulator.received("refresh_rpc")[2]["at"]
        assert emulator.stats()["refresh_token_reuses"] == 0
    finally:
        emulator.close()


def test_once_with_kimi_unreachable_names_the_url_and_the_error(tmp_path):
    port = free_port()
    token = mint_jwt({"typ": "refresh", "app_id": "kimi", "sub": "u1", "iat": int(time.time()),
                      "exp": int(time.time()) + 86400})
    path = tmp_path / "config.json"
    write_json(path, {"api_keys": [KEY], "upstream": {"base_url": f"http://127.0.0.1:{port}"},
                      "accounts": [{"name": "main", "refresh_token": token}]})
    result = _once(path)
    assert result.returncode == 1
    assert f"could not reach http://127.0.0.1:{port}{REFRESH_RPC_PATH}" in result.stderr
    assert "Connection refused" in result.stderr and token not in result.stderr and "Traceback" not in result.stderr
    assert "Connection refused" in read_json(path)["accounts"][0]["status"]["last_error"]


def test_the_auth_host_follows_the_web_unless_set():
    assert DEFAULTS["upstream"]["base_url"] == "https://www.kimi.com"
    assert DEFAULTS["upstream"]["protocol"] == "auto"
    for base in ("https://www.kimi.com", "https://kimi.com"):
        assert auth_base_url({"base_url": base, "auth_base_url": "auto"}) == "https://auth.kimi.com"
    assert auth_base_url({"base_url": "http://127.0.0.1:8088", "auth_base_url": "auto"}) == "http://127.0.0.1:8088"
    moonshot = {"base_url": "https://kimi.moonshot.cn", "auth_base_url": "auto"}
    assert auth_base_url(moonshot) == "https://kimi.moonshot.cn"
    assert auth_base_url({"base_url": "https://www.kimi.com",
                          "auth_base_url": "https://auth.example"}) == "https://auth.example"


def test_a_bad_auth_base_url_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"api_keys": [KEY], "upstream": {"auth_base_url": "auth.kimi.com"},
                      "accounts": [{"refresh_token": "r"}]})
    result = _once(path)
    assert result.returncode == 2 and "upstream.auth_base_url: expected an http(s) URL" in result.stderr


def _response(status: int, body: dict) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, orjson.dumps(body)
    return response


def test_both_spellings_of_the_answer_are_read_and_connect_refusals_are_rejections():
    from refresher.kimi_auth import RefreshRejected, _parse
    for access, refresh in (("accessToken", "refreshToken"), ("access_token", "refresh_token")):
        pair = _parse(_response(200, {access: "a.b.c", refresh: "d.e.f"}), "u")
        assert (pair.access_token, pair.refresh_token) == ("a.b.c", "d.e.f")
    with pytest.raises(RefreshRejected, match="invalid claims"):
        _parse(_response(401, {"code": "unauthenticated", "message": "invalid claims"}), "u")


def test_fifteen_minute_tokens_are_renewed_three_minutes_before_expiry():
    margin = float(DEFAULTS["refresher"]["margin_seconds"])
    iat = 1_800_000_000
    access = mint_jwt({"typ": "access", "iat": iat, "exp": iat + 900})
    refresh = mint_jwt({"typ": "refresh", "iat": iat, "exp": iat + 90 * 86400})   # a malformed one is never due
    account = Account("a", refresh, access)
    assert refresh_reason(account, iat + 900 - margin - 1, margin) is None
    assert refresh_reason(account, iat + 900 - margin + 1, margin)
    assert planned_refresh_at(account, iat, margin) == iat + 900 - margin == iat + 720
    assert planned_refresh_at(account, iat + 800, margin) == iat + 800   # overdue: now
    assert planned_refresh_at(Account("b", "", access), iat, margin) is None
