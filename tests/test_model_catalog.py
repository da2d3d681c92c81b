"""Models from Kimi's catalog (GetAvailableModels) over Connect: ids, /v1/models, what each id sends, fallback."""

from __future__ import annotations

import openai
import pytest
import requests

from common.connect_frames import END_STREAM, FrameParser, encode
from tests.helpers import Stack, stop, wait_until

USER = [{"role": "user", "content": "hello"}]
ANSWER = "收到 🌙 turn 1: hello"
AGENT = "coo6l3pkqq4ri39f36bg"
CATALOG_IDS = ["kimi-k3", "kimi-k3-thinking", "kimi-k3-agent", "kimi-k3-agent-swarm", "kimi-k2.6",
               "kimi-k2.6-thinking", "kimi-k2.6-agent"]
RPC = "/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"
CHAT = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


def _catalog_read(stack: Stack, account: str = "acct0", times: int = 1) -> None:
    """Wait until the server has logged reading `account`'s catalog `times` times."""
    line = f"model catalog of account '{account}'"
    wait_until(lambda: stack.server_log.read_text().count(line) >= times, 30, f"the catalog of {account}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("catalog"), protocol="connect")
    try:
        _catalog_read(s)
        yield s
    finally:
        s.close()


def _sent(stack: Stack, body: dict) -> tuple[requests.Response, dict]:
    """Ask the server; return its answer and the Chat body the emulator received for it."""
    before = len(stack.emulator.received("connect_chat"))
    response = stack.post(body)
    received = stack.emulator.received("connect_chat")
    assert len(received) == before + 1, response.text
    return response, received[-1]["body"]


def _rpc(stack: Stack, path: str, body: bytes, content_type: str = "application/json") -> requests.Response:
    return requests.post(stack.emulator.url + path, data=body, timeout=10, headers={
        "Authorization": "Bearer " + stack.accounts[0]["access_token"], "Content-Type": content_type})


def test_the_emulator_offers_k3_k26_and_agents_and_fails_on_demand(stack):
    data = _rpc(stack, RPC, b"{}").json()
    models = {m["key"]: m for m in data["availableModels"]}
    assert list(models) == ["k3", "k3-thinking", "k3-agent", "k3-agent-ultra", "k2d6", "k2d6-thinking", "k2d6-agent"]
    assert all({"key", "scenario", "displayName", "thinking", "kimiPlusId", "agentMode", "description"} <= set(m)
               for m in models.values())
    assert data["defaultScenario"] == {"scenario": "SCENARIO_K3", "thinking": False}
    assert (models["k3-agent-ultra"]["scenario"], models["k3-agent-ultra"]["kimiPlusId"],
            models["k3-agent-ultra"]["agentMode"]) == ("SCENARIO_OK_COMPUTER", "ok-computer", "TYPE_ULTRA")
    assert models["k2d6"]["scenario"] == "SCENARIO_K2D5" and models["k2d6-thinking"]["thinking"] is True
    assert models["k3"]["defaultReasoningEffort"] == "REASONING_EFFORT_MAX"
    stack.emulator.admin("models", {"fail": True})
    try:
        failed = _rpc(stack, RPC, b"{}")
        assert failed.status_code == 503 and failed.json()["code"] == "unavailable"
    finally:
        stack.emulator.admin("models", {"fail": False})


def _chat_end(stack: Stack, body: dict) -> dict:
    frames = FrameParser().feed(_rpc(stack, CHAT, encode(body), "application/connect+json").content)
    assert frames[-1][0] == END_STREAM
    return frames[-1][1]


@pytest.mark.parametrize("fields,problem", [
    ({"scenario": "SCENARIO_K3"}, None),
    ({"scenario": "SCENARIO_K2D5", "options": {"thinking": True, "reasoningEffort": "REASONING_EFFORT_LOW"}}, None),
    ({"scenario": "SCENARIO_OK_COMPUTER", "kimiplusId": "ok-computer", "agentMode": "TYPE_ULTRA"}, None),
    ({"scenario": "SCENARIO_K2D5", "kimiplus_id": AGENT}, None),
    ({"scenario": "SCENARIO_K9"}, "scenario"),
    ({"scenario": "SCENARIO_K3", "agentMode": "TYPE_HUGE"}, "agentMode"),
    ({"scenario": "SCENARIO_K3", "options": {"reasoningEffort": "REASONING_EFFORT_ULTRA"}}, "reasoningEffort"),
    ({"scenario": "SCENARIO_K3", "kimiplusId": "zzzzzzzzzzzzzzzzzzzz"}, "kimiplus"),
])
def test_the_emulator_chat_takes_the_catalog_scenarios_and_refuses_unknown_values(stack, fields, problem):
    body = {"message": {"role": "user", "blocks": [{"text": {"content": "x"}}]}, **fields}
    end = _chat_end(stack, body)
    if problem is None:
        assert end == {}
        received = stack.emulator.received("connect_chat")[-1]["body"]
        assert {k: received[k] for k in fields} == fields   # recorded as sent, for the read-back below
    else:
        assert end["error"]["code"] == "invalid_argument" and problem in end["error"]["message"]


def test_models_lists_the_catalog_and_retrieves_any_usable_name(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert ids[:len(CATALOG_IDS)] == CATALOG_IDS
    assert {"kimi", "kimi-search", "kimi-thinking", "kimi-research", "kimi-k1"} <= set(ids)
    for name in ("kimi-k2.6-thinking", "kimi", "moonshot-v1-8k", "kimi-search-silent", AGENT):
        model = client.models.retrieve(name)
        assert (model.id, model.object) == (name, "model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    raw = requests.get(stack.url + "/models/kimi-k9", headers=stack.headers(), timeout=10)
    assert raw.status_code == 404 and set(raw.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("model,scenario,thinking,kimiplus,mode", [
    ("kimi-k3", "SCENARIO_K3", False, None, None),
    ("kimi-k3-thinking", "SCENARIO_K3", True, None, None),
    ("kimi-k3-agent", "SCENARIO_OK_COMPUTER", True, "ok-computer", "TYPE_NORMAL"),
    ("kimi-k3-agent-swarm", "SCENARIO_OK_COMPUTER", True, "ok-computer", "TYPE_ULTRA"),
    ("kimi-k2.6", "SCENARIO_K2D5", False, None, None),
    ("kimi-k2.6-thinking", "SCENARIO_K2D5", True, None, None),
    ("kimi-k2.6-agent", "SCENARIO_OK_COMPUTER", False, "ok-computer", "TYPE_NORMAL"),
    ("Kimi-K2.6", "SCENARIO_K2D5", False, None, None),
    # kimi-bridge's own names: `kimi` is the catalog's default (K3), flags on top of it.
    ("kimi", "SCENARIO_K3", False, None, None),
    ("moonshot-v1-8k", "SCENARIO_K3", False, None, None),
    ("kimi-thinking", "SCENARIO_K3", True, None, None),
    ("kimi-k1", "SCENARIO_K3", True, None, None),
    (AGENT, "SCENARIO_K3", False, AGENT, None),
])
def test_each_model_id_sends_its_own_scenario_thinking_kimiplus_and_agent_mode(stack, model, scenario, thinking,
                                                                                kimiplus, mode):
    response, body = _sent(stack, {"model": model, "messages": USER})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model and response.json()["choices"][0]["message"]["content"] == ANSWER
    assert (body["scenario"], body["message"]["scenario"], body["options"]["thinking"]) == (scenario, scenario,
                                                                                             thinking)
    assert (body.get("kimiplusId"), body.get("agentMode")) == (kimiplus, mode)
    assert "reasoningEffort" not in body["options"]   # not asked for: the model's own default applies


def test_search_flags_and_continuations_keep_the_model_fields(stack):
    _, body = _sent(stack, {"model": "kimi-search-silent", "messages": USER})
    assert body["scenario"] == "SCENARIO_K3" and body["tools"] == [{"type": "TOOL_TYPE_SEARCH", "search": {}}]
    first, body = _sent(stack, {"model": "kimi-k3-agent", "conversation_id": "none", "messages": USER})
    chat_id = first.json()["id"]
    _, again = _sent(stack, {"model": "kimi-k3-agent", "conversation_id": chat_id, "messages": USER})
    assert again["chat_id"] == chat_id and again["message"]["parent_id"]
    assert [(b["scenario"], b["kimiplusId"], b["agentMode"]) for b in (body, again)] == \
        [("SCENARIO_OK_COMPUTER", "ok-computer", "TYPE_NORMAL")] * 2


def test_an_unknown_kimi_plus_agent_over_connect_is_refused_upstream(stack):
    response = stack.post({"model": "zzzzzzzzzzzzzzzzzzzz", "messages": USER})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"


@pytest.mark.parametrize("model,effort,sent", [
    ("kimi-k3", "low", "REASONING_EFFORT_LOW"),
    ("kimi-k3", "medium", "REASONING_EFFORT_HIGH"),
    ("kimi-k3-thinking", "high", "REASONING_EFFORT_HIGH"),
    ("kimi-k3-agent-swarm", "xhigh", "REASONING_EFFORT_MAX"),
    ("kimi-k3", "none", "REASONING_EFFORT_LOW"),          # K3 has no NONE: the nearest level it offers
    ("kimi-k2.6", "none", "REASONING_EFFORT_NONE"),
    ("kimi-k2.6-thinking", "high", "REASONING_EFFORT_LOW"),   # K2.6 tops out at LOW
    ("kimi", "max", "REASONING_EFFORT_MAX"),
    ("kimi-k2.6-agent", "high", None),                    # the catalog offers it no effort levels
])
def test_reasoning_effort_maps_onto_the_levels_the_model_offers(stack, model, effort, sent):
    response, body = _sent(stack, {"model": model, "messages": USER, "reasoning_effort": effort})
    assert response.status_code == 200 and body["options"].get("reasoningEffort") == sent


def test_reasoning_effort_through_the_sdk_and_a_bad_value(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)
    answer = client.chat.completions.create(model="kimi-k3", messages=USER, reasoning_effort="low")
    assert answer.choices[0].message.content == ANSWER
    assert stack.emulator.received("connect_chat")[-1]["body"]["options"]["reasoningEffort"] == "REASONING_EFFORT_LOW"
    before = len(stack.emulator.received("connect_chat"))
    response = stack.post({"model": "kimi-k3", "messages": USER, "reasoning_effort": "extreme"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "reasoning_effort" and "extreme" in error["message"]
    assert len(stack.emulator.received("connect_chat")) == before   # refused before any account was used


def _k2d8(default: str) -> dict:
    return {"availableModels": [
        {"key": "k2d6", "scenario": "SCENARIO_K2D5", "displayName": "K2.6", "thinking": False},
        {"key": "k2d8", "scenario": "SCENARIO_K2D8", "displayName": "K2.8", "thinking": False,
         "reasoningEffortOptions": ["REASONING_EFFORT_HIGH"]},
        {"key": "search-x", "scenario": "SCENARIO_K2D5", "displayName": "would shadow kimi-search", "thinking": False}],
        "defaultScenario": {"scenario": default, "thinking": False}}


def _ids(stack: Stack) -> list[str]:
    return [m["id"] for m in requests.get(stack.url + "/v1/models", headers=stack.headers(), timeout=10).json()["data"]]


def test_each_account_has_its_own_catalog_and_it_is_read_again(tmp_path):
    stack = Stack(tmp_path, accounts=2, protocol="connect", server={"model_catalog_refresh_seconds": 0.5})
    try:
        stack.emulator.admin("models", {"user_id": stack.accounts[1]["user_id"], **_k2d8("SCENARIO_K2D5")})
        wait_until(lambda: "kimi-k2.8" in _ids(stack), 30, "the second account's catalog")
        ids = _ids(stack)
        # The union; kimi-bridge's own kimi-search is never shadowed (that entry goes by its whole key).
        assert set(CATALOG_IDS) <= set(ids) and ids.count("kimi-search") == 1 and "kimi-search-x" in ids
        # `kimi` is each account's own default: K3 on the first, K2.6 on the second (round robin).
        scenarios = {_sent(stack, {"model": "kimi", "messages": USER})[1]["scenario"] for _ in range(2)}
        assert scenarios == {"SCENARIO_K3", "SCENARIO_K2D5"}
        _, body = _sent(stack, {"model": "kimi-k2.8", "messages": USER, "reasoning_effort": "low"})
        assert body["scenario"] == "SCENARIO_K2D8" and body["options"]["reasoningEffort"] == "REASONING_EFFORT_HIGH"
        stack.emulator.admin("models", {"user_id": stack.accounts[1]["user_id"],
                                        "availableModels": _k2d8("SCENARIO_K2D5")["availableModels"][:1]})
        wait_until(lambda: "kimi-k2.8" not in _ids(stack), 30, "the catalog without K2.8")
        response = stack.post({"model": "kimi-k2.8", "messages": USER})
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    finally:
        stack.close()


def test_the_fallback_table_stands_in_while_the_catalog_call_fails(tmp_path):
    stack = Stack(tmp_path, protocol="connect", server={"model_catalog_refresh_seconds": 0.5})
    try:
        # A server started while Kimi's catalog is down, the catalog being K2.6/K2.8 only.
        stop(stack.server)
        stack._log_file.close()
        stack.emulator.admin("models", {"fail": True, **_k2d8("SCENARIO_K2D8")})
        stack.start_server()
        wait_until(lambda: "using the built-in fallback models" in stack.server_log.read_text(), 30, "a failed read")
        assert _ids(stack)[:len(CATALOG_IDS)] == CATALOG_IDS and "kimi-k2.8" not in _ids(stack)
        _, body = _sent(stack, {"model": "kimi", "messages": USER})
        assert body["scenario"] == "SCENARIO_K3"   # the fallback's default
        _, body = _sent(stack, {"model": "kimi-k3-agent-swarm", "messages": USER})
        assert (body["scenario"], body["kimiplusId"], body["agentMode"]) == ("SCENARIO_OK_COMPUTER", "ok-computer",
                                                                             "TYPE_ULTRA")
        assert stack.post({"model": "kimi-k2.8", "messages": USER}).status_code == 404
        stack.emulator.admin("models", {"fail": False})
        wait_until(lambda: "kimi-k2.8" in _ids(stack), 30, "the catalog once the call works")
        assert "kimi-k3" not in _ids(stack)
        _, body = _sent(stack, {"model": "kimi", "messages": USER})
        assert body["scenario"] == "SCENARIO_K2D8"   # now the catalog's default
        # A failing read later keeps the last good catalog rather than falling back.
        stack.emulator.admin("models", {"fail": True})
        failures = stack.server_log.read_text().count("keeping its last catalog")
        wait_until(lambda: stack.server_log.read_text().count("keeping its last catalog") > failures, 30,
                   "a failed re-read")
        assert "kimi-k2.8" in _ids(stack)
    finally:
        stack.close()


def test_catalog_entries_become_stable_ids_and_bad_answers_are_refused():
    from server.core.model_catalog import derive_id, parse_catalog
    assert derive_id("k2d8", False, "", "", "SCENARIO_K2D8") == "kimi-k2.8"
    assert derive_id("k2d6-thinking", True, "", "", "SCENARIO_K2D5") == "kimi-k2.6-thinking"
    assert derive_id("k3-agent-ultra", True, "ok-computer", "TYPE_ULTRA", "SCENARIO_OK_COMPUTER") == \
        "kimi-k3-agent-swarm"
    assert derive_id("k3", False, "", "", "SCENARIO_OK_COMPUTER") == "kimi-k3-agent"   # the scenario alone says agent
    assert derive_id("Kimi-Instant", False, "", "", "SCENARIO_K2D5") == "kimi-instant"
    assert derive_id("kimi", False, "", "", "SCENARIO_K2D5") == "kimi-default"
    plain = parse_catalog({"availableModels": [{"key": "k2d6", "scenario": "SCENARIO_K2D5", "kimiPlusId": "kimi"}]})
    assert plain.ids() == ["kimi-k2.6"] and plain.default.kimiplus_id == ""   # kimiPlusId "kimi" is no agent
    catalog = parse_catalog({"availableModels": [{"key": "k3"}, "junk", {"scenario": "SCENARIO_K3"},
                                                 {"key": "k3", "scenario": "SCENARIO_K3", "thinking": "yes"},
                                                 {"key": "k3", "scenario": "SCENARIO_K3", "thinking": True},
                                                 {"key": "k3-fast", "scenario": "SCENARIO_K3"},
                                                 {"key": "k3-fast", "scenario": "SCENARIO_K3"}]})
    # A second entry deriving a taken id is named after its whole key; a true duplicate is dropped.
    assert catalog.ids() == ["kimi-k3", "kimi-k3-thinking", "kimi-k3-fast"] and catalog.default.id == "kimi-k3"
    for bad in (None, [], {"availableModels": "x"}, {"availableModels": [{"key": "k3"}]}):
        with pytest.raises(ValueError):
            parse_catalog(bad)
