"""Request validation, the API key, CORS and the error envelope."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import Stack, read_json, wait_until, write_json

USER = [{"role": "user", "content": "hi"}]

# Every OpenAI chat-completions field, with a valid value.
ALL_OPENAI_FIELDS = {
    "audio": {"voice": "alloy", "format": "mp3"}, "frequency_penalty": 0.5, "logit_bias": {"50256": -100},
    "logprobs": False,
    "max_completion_tokens": 16, "max_tokens": 10, "metadata": {"k": "v"}, "modalities": ["text"], "n": 1,
    "parallel_tool_calls": True, "prediction": {"type": "content", "content": "x"}, "presence_penalty": -0.5,
    "prompt_cache_key": "c", "reasoning_effort": "low", "response_format": {"type": "text"},
    "safety_identifier": "s", "seed": 7, "service_tier": "auto", "stop": ["\n"], "store": False,
    "stream": False, "stream_options": {"include_usage": True}, "temperature": 0.7,
    "tool_choice": "auto", "tools": [{"type": "function", "function": {"name": "f"}}], "top_logprobs": 2,
    "top_p": 0.9, "user": "u", "web_search_options": {}, "verbosity": "low", "use_search": False,
}
# The legacy spelling of tools; a request holds one spelling or the other.
LEGACY_FUNCTION_FIELDS = {"function_call": "auto", "functions": [{"name": "f", "parameters": {}}]}


def _error(response, status: int, param=...) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if param is not ...:
        assert body["error"]["param"] == param
    return body["error"]


def test_every_openai_field_and_the_vendor_extras_are_accepted(stack):
    assert stack.post({"model": "kimi", "messages": USER, **ALL_OPENAI_FIELDS}).status_code == 200
    legacy = {**ALL_OPENAI_FIELDS, "tools": None, "tool_choice": None, **LEGACY_FUNCTION_FIELDS}
    assert stack.post({"model": "kimi", "messages": USER, **legacy}).status_code == 200
    extras = {"top_k": 5, "repetition_penalty": 1.1, "enable_thinking": False, "chat_template_kwargs": {}}
    assert stack.post({"model": "kimi", "messages": USER, **extras}).status_code == 200
    nulls = {name: None for name in ALL_OPENAI_FIELDS}
    assert stack.post({"model": "kimi", "messages": USER, **nulls}).status_code == 200


@pytest.mark.parametrize("body,param", [
    ({"model": "kimi", "messages": USER, "frobnicate": 1}, "frobnicate"),
    ({"model": "kimi", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "kimi", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "kimi", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "kimi", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "kimi", "messages": USER, "stop": [1]}, "stop"),
    ({"model": "kimi", "messages": USER, "n": 2}, "n"),
    ({"model": "kimi", "messages": USER, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"model": "kimi", "messages": []}, "messages"),
    ({"model": "kimi", "messages": "hi"}, "messages"),
    ({"model": "kimi"}, "messages"),
    ({"messages": USER}, "model"),
    ({"model": 5, "messages": USER}, "model"),
    ({"model": "kimi", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "kimi", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "kimi", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "kimi", "messages": [{"role": "user", "content": "x", "mood": "happy"}]}, "messages[0].mood"),
    ({"model": "kimi", "messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
     "messages[0].content[0].type"),
    ({"model": "kimi", "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
     "messages[0].content[0].text"),
    ({"model": "kimi", "messages": [1]}, "messages[0]"),
])
def test_bad_requests_get_400_naming_the_param(stack, body, param):
    _error(stack.post(body), 400, param)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_invalid_json_bodies_get_400(stack, raw):
    error = _error(stack.post(raw), 400)
    assert error["code"] == "invalid_json"


def test_text_parts_are_joined_and_multi_turn_history_is_folded(stack):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "developer", "content": "dev note"}]
    assert stack.post({"model": "kimi", "messages": messages}).status_code == 200
    sent = stack.emulator.received("completion")[-1]["body"]["messages"]
    assert sent == [{"role": "user", "content": "System: Be brief.\n\nUser: part one\ntwo\n\n"
                     'Assistant: <tool_call>{"name":"lookup","arguments":{}}</tool_call>\n\n'
                     "Tool result (lookup, c1): 42\n\nSystem: dev note"}]


def test_unknown_model_is_404_listing_the_valid_names(stack):
    error = _error(stack.post({"model": "gpt-4o", "messages": USER}), 404, "model")
    assert error["code"] == "model_not_found" and "kimi" in error["message"]
    assert stack.post({"model": "moonshot-v1-8k", "messages": USER}).status_code == 200


def test_oversized_body_is_413_in_the_envelope(tmp_path):
    stack = Stack(tmp_path, server={"max_body_bytes": 2000})
    try:
        error = _error(stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x" * 3000}]}), 413)
        assert error["code"] == "request_too_large"
        assert stack.post({"model": "kimi", "messages": USER}).status_code == 200
    finally:
        stack.close()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic abc", "Bearer ключ-🔑"])
def test_missing_or_wrong_keys_get_401_never_500(stack, header):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header.encode("utf-8")
    response = requests.post(stack.url + "/v1/chat/completions", data=b'{"model":"kimi"}', headers=headers, timeout=10)
    error = _error(response, 401)
    assert error["code"] == "invalid_api_key" and "wrong" not in error["message"]
    assert requests.get(stack.url + "/v1/models", headers=headers, timeout=10).status_code == 401


def test_preflight_and_health_need_no_key_and_cors_is_on_every_answer(stack):
    pre = requests.options(stack.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    assert pre.status_code == 204
    allowed = pre.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "x-stainless-os" in allowed
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert requests.get(stack.url + "/health", timeout=10).status_code == 200
    denied = requests.post(stack.url + "/v1/chat/completions", data=b"{}", timeout=10)
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_paths_are_404_in_the_envelope(stack):
    response = requests.get(stack.url + "/v1/nothing", headers=stack.headers(), timeout=10)
    _error(response, 404)


def test_api_keys_and_accounts_reload_without_a_restart(stack):
    doc = read_json(stack.config_path)
    doc["api_keys"] = ["sk-new-key"]
    write_json(stack.config_path, doc)
    wait_until(lambda: stack.post({"model": "kimi", "messages": USER},
                                  headers={"Authorization": "Bearer sk-new-key"}).status_code == 200,
               10, "the new key to work")
    assert stack.post({"model": "kimi", "messages": USER}).status_code == 401


def test_no_usable_account_is_503_with_retry_after(stack):
    doc = read_json(stack.config_path)
    doc["accounts"][0]["enabled"] = False
    write_json(stack.config_path, doc)
    response = stack.post({"model": "kimi", "messages": USER})
    error = _error(response, 503)
    assert error["code"] == "no_available_account" and int(response.headers["Retry-After"]) > 0
