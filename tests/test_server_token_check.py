"""POST /token/check: live or not, Kimi asked at most once per token per 10 minutes, refresh tokens never spent."""

from __future__ import annotations

import requests


def _check(stack, token, key=None) -> requests.Response:
    return stack.post({"token": token}, path="/token/check", headers=stack.headers(key) if key else {})


def test_access_tokens_are_checked_upstream_once_per_ten_minutes(stack):
    live = stack.emulator.new_account()
    for _ in range(3):
        assert _check(stack, live["access_token"]).json()["live"] is True
    assert _check(stack, "Bearer " + live["access_token"]).json()["live"] is True
    assert stack.emulator.stats()["requests"]["user"] == 1
    dead = stack.emulator.new_account()
    stack.emulator.admin("revoke", {"user_id": dead["user_id"]})
    assert _check(stack, dead["access_token"]).json() == {"live": False, "checked": "upstream", "typ": "access"}


def test_refresh_tokens_are_never_spent_to_check_them(stack):
    mine = _check(stack, stack.accounts[0]["refresh_token"]).json()
    assert mine["live"] is True and mine["account"] == "acct0"
    other = _check(stack, stack.emulator.new_account()["refresh_token"]).json()
    assert other["live"] is True and other["checked"] == "claims"
    assert stack.emulator.stats()["refresh_calls"] == 0


def test_bad_token_checks(stack):
    assert _check(stack, "not-a-jwt").json()["live"] is False
    response = stack.post({"tok": "x"}, path="/token/check")
    assert response.status_code == 400 and response.json()["error"]["param"] == "token"
    assert requests.post(stack.url + "/token/check", json={"token": "x"}, timeout=10).status_code == 401
    assert "eyJ" not in _check(stack, stack.accounts[0]["refresh_token"]).text
