"""What real clients send: one-api/new-api channels and their tests, browser chat UIs, and /v1/status."""

from __future__ import annotations

import orjson
import pytest
import requests

from tests.helpers import Stack

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body", [
    # one-api's channel test, and what it forwards for a user
    {"model": "moonshot-v1-8k", "messages": HI, "max_tokens": 1},
    {"model": "kimi", "messages": HI, "stream": False, "temperature": 0.7, "top_p": 1, "presence_penalty": 0,
     "frequency_penalty": 0, "user": "one-api-user-1"},
    # new-api's channel test (small max_tokens) and its streaming form with usage
    {"model": "kimi", "messages": HI, "max_tokens": 16},
    {"model": "kimi", "messages": HI, "max_tokens": 10, "stream": True, "stream_options": {"include_usage": True}},
    {"model": "kimi", "messages": [{"role": "system", "content": ""}, *HI], "max_completion_tokens": 16, "n": 1},
])
def test_gateway_request_shapes_succeed(stack, body):
    headers = {"Accept": "text/event-stream" if body.get("stream") else "application/json",
               "User-Agent": "Go-http-client/1.1"}
    response = stack.post(body, headers=headers)
    assert response.status_code == 200, response.text
    if body.get("stream"):
        frames = [f for f in response.content.split(b"\n\n") if f]
        assert frames[-1] == b"data: [DONE]"
        usage = orjson.loads(frames[-2][6:])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    else:
        assert response.json()["usage"]["total_tokens"] > 0


def test_gateways_can_list_models(stack):
    data = requests.get(stack.url + "/v1/models", headers=stack.headers(), timeout=10).json()["data"]
    assert all({"id", "object", "created", "owned_by"} <= set(m) for m in data)


def test_a_browser_ui_preflights_then_streams(tmp_path):
    stack = Stack(tmp_path, server={"cors_origins": "https://chat.example.com, http://localhost:3000"})
    try:
        origin = "https://chat.example.com"
        pre = requests.options(stack.url + "/v1/chat/completions", timeout=10, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-requested-with"})
        assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == origin
        assert "x-requested-with" in pre.headers["Access-Control-Allow-Headers"].lower()
        response = stack.post({"model": "kimi", "messages": HI, "stream": True},
                              headers={"Origin": origin, "X-Requested-With": "XMLHttpRequest"})
        assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == origin
        assert response.content.endswith(b"data: [DONE]\n\n")
        stranger = stack.post({"model": "kimi", "messages": HI}, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in stranger.headers
    finally:
        stack.close()


def test_status_shows_each_account_without_secrets(stack):
    status = requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10)
    assert status.status_code == 200
    body = status.json()
    assert body["version"] and body["uptime_seconds"] >= 0
    (account,) = body["accounts"]
    assert account["name"] == "acct0" and account["usable"] is True
    assert account["access_token"].startswith("fp:") and account["access_token_expires_at"]
    for secret in (stack.accounts[0]["access_token"], stack.accounts[0]["refresh_token"], Stack.API_KEY):
        assert secret not in status.text
    assert requests.get(stack.url + "/v1/status", timeout=10).status_code == 401


def test_status_survives_a_token_whose_expiry_is_out_of_range(stack):
    # An exp written in milliseconds (a hand-pasted token from another tool) is past year 9999: no date, no 500.
    from common.redact import fingerprint
    from tests.helpers import read_json, wait_until, write_json
    from tests.kimi_emulator.tokens import mint_jwt
    token = mint_jwt({"typ": "access", "iat": 1_800_000_000, "exp": 1_800_000_000_000})
    doc = read_json(stack.config_path)
    doc["accounts"][0]["access_token"] = token
    write_json(stack.config_path, doc)

    def status_after_reload():
        response = requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10)
        if response.status_code != 200 or response.json()["accounts"][0]["access_token"] == fingerprint(token):
            return (response,)   # a tuple: a Response of status 500 is falsy
        return None
    (response,) = wait_until(status_after_reload, 30, "the server to read the new token")
    assert response.status_code == 200, response.text
    assert response.json()["accounts"][0]["access_token_expires_at"] is None
