"""The emulator's scripted answers (issue 15 §4): queue, rules, echo fallback and reset, over REST and Connect."""

from __future__ import annotations

import orjson
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from common.connect_frames import END_STREAM, FrameParser, encode
from tests.helpers import Emulator
from tests.kimi_emulator.answers import split_text
from tests.kimi_emulator.scripts import Script, Scripted, ScriptError, piece_count

CONNECT_CHAT = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "巴黎 🌙"}}</tool_call>'


class Kimi:
    """One protocol of one emulated web, spoken the way the server speaks it; answers as lists of text pieces."""

    def __init__(self, emulator: Emulator, protocol: str) -> None:
        self.emulator, self.protocol = emulator, protocol
        self.access = emulator.new_account()["access_token"]
        self.auth = {"Authorization": "Bearer " + self.access}

    def new_chat(self) -> str:
        """A chat id for REST ("" over Connect, where the first turn creates the chat)."""
        if self.protocol == "connect":
            return ""
        r = self.emulator.http.post(f"{self.emulator.url}/api/chat", headers=self.auth, json={"name": "t"}, timeout=10)
        assert r.status_code == 200
        return r.json()["id"]

    def ask(self, prompt: str, chat_id: str | None = None, **extra) -> tuple[list[str], list[dict]]:
        """Send one turn; return the answer's text pieces and every event (SSE) or frame message (Connect)."""
        if self.protocol == "rest":
            return self._rest(prompt, chat_id or self.new_chat(), extra)
        return self._connect(prompt, chat_id or "", extra)

    def _rest(self, prompt: str, chat_id: str, extra: dict) -> tuple[list[str], list[dict]]:
        r = self.emulator.http.post(f"{self.emulator.url}/api/chat/{chat_id}/completion/stream", headers=self.auth,
                                    json={"messages": [{"role": "user", "content": prompt}], **extra}, timeout=30)
        assert r.status_code == 200, r.text
        events = [orjson.loads(b[6:]) for b in r.content.split(b"\n\n") if b.startswith(b"data: ")]
        return [e["text"] for e in events if e["event"] == "cmpl"], events

    def _connect(self, prompt: str, chat_id: str, extra: dict) -> tuple[list[str], list[dict]]:
        body = {"chat_id": chat_id, "message": {"role": "user", "blocks": [{"text": {"content": prompt}}]}, **extra}
        r = self.emulator.http.post(self.emulator.url + CONNECT_CHAT, data=encode(body), timeout=30,
                                    headers={**self.auth, "Content-Type": "application/connect+json"})
        assert r.status_code == 200, r.text
        frames = FrameParser().feed(r.content)
        assert frames[-1] == (END_STREAM, {}), frames[-1]
        messages = [m for _, m in frames]
        return [m["block"]["text"]["content"] for m in messages if m.get("mask") == "block.text.content"], messages

    def chat_of(self, messages: list[dict]) -> str:
        """The Connect chat id a first turn created."""
        return next(m["chat"]["id"] for m in messages if m.get("chat", {}).get("id"))


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    """One emulator per web for the whole module (each test resets the script it used)."""
    emus = {web: Emulator(tmp_path_factory.mktemp(web), web=web) for web in ("legacy", "2026")}
    yield emus
    for emu in emus.values():
        emu.close()


@pytest.fixture(params=[("rest", "legacy"), ("connect", "2026"), ("connect", "legacy")], ids=lambda p: "-".join(p))
def kimi(request, emulators):
    """REST on the legacy web; Connect on the 2026 web and on the legacy one (which serves both)."""
    protocol, web = request.param
    emulator = emulators[web]
    emulator.script(reset=True)
    emulator.admin("stream", {"length_cap": None, "chunks": 4})
    yield Kimi(emulator, protocol)
    emulator.script(reset=True)
    emulator.admin("stream", {"length_cap": None, "chunks": 4})


@pytest.mark.parametrize("chunks,expect", [(1, 1), (3, 3), ("chars", len(CALL))])
def test_a_queued_answer_comes_back_verbatim_in_n_chunks(kimi, chunks, expect):
    kimi.emulator.script(answers=[CALL], chunks=chunks)
    pieces, _ = kimi.ask("what is the weather in Paris?")
    assert "".join(pieces) == CALL and len(pieces) == expect
    if chunks == "chars":
        assert pieces == list(CALL)


def test_the_queue_is_fifo_and_falls_back_to_the_echo_when_empty(kimi):
    kimi.emulator.script(answers=["first", "second"])
    assert "".join(kimi.ask("a")[0]) == "first"
    assert "".join(kimi.ask("b")[0]) == "second"
    echo, _ = kimi.ask("c")
    assert "".join(echo) == "收到 🌙 turn 1: c" and len(echo) == 4   # the echo keeps the stream switch's chunks
    assert kimi.emulator.admin_get("script")["used"] == {"queue": 2, "rules": 0}


def test_rules_match_on_the_prompt_first_rule_wins_and_times_limits_uses(kimi):
    kimi.emulator.script(rules=[{"contains": "weather", "answer": CALL, "chunks": 2, "times": 1},
                                {"contains": "weather", "answer": "no more calls"},
                                {"contains": "Tool result", "answer": "It is sunny.", "chunks": "chars"}])
    pieces, _ = kimi.ask("the weather in Paris?")
    assert "".join(pieces) == CALL and len(pieces) == 2
    assert "".join(kimi.ask("the weather again")[0]) == "no more calls"
    assert kimi.ask("Tool result (call_1): 21 °C")[0] == list("It is sunny.")
    assert "".join(kimi.ask("unmatched")[0]) == "收到 🌙 turn 1: unmatched"
    shown = kimi.emulator.admin_get("script")
    assert [(r["used"], r["times"]) for r in shown["rules"]] == [(1, 1), (1, None), (1, None)]
    assert shown["used"] == {"queue": 0, "rules": 3}


def test_the_queue_comes_before_the_rules(kimi):
    kimi.emulator.script(answers=["queued"], rules=[{"contains": "x", "answer": "ruled"}])
    assert ["".join(kimi.ask("x")[0]) for _ in range(2)] == ["queued", "ruled"]


def test_reset_clears_queue_and_rules_and_get_shows_the_script(kimi):
    shown = kimi.emulator.script(answers=["a", "b"], rules=[{"contains": "x", "answer": "y", "times": 2}],
                                 chunks="chars")
    assert shown == {"answers": [{"text": "a", "chunks": "chars"}, {"text": "b", "chunks": "chars"}],
                     "rules": [{"contains": "x", "answer": "y", "chunks": "chars", "times": 2, "used": 0}],
                     "used": {"queue": 0, "rules": 0}}
    assert kimi.emulator.admin_get("script") == shown
    assert kimi.emulator.script(reset=True) == {"answers": [], "rules": [], "used": {"queue": 0, "rules": 0}}
    assert "".join(kimi.ask("x")[0]) == "收到 🌙 turn 1: x"


def test_reset_and_new_answers_in_one_call_replace_the_script(kimi):
    kimi.emulator.script(answers=["old"])
    kimi.emulator.script(answers=["new"], reset=True)
    assert "".join(kimi.ask("p")[0]) == "new"


def test_multi_turn_memory_is_untouched_by_a_scripted_turn(kimi):
    kimi.emulator.script(answers=["scripted"])
    chat_id = kimi.new_chat()
    first, messages = kimi.ask("first question", chat_id)
    assert "".join(first) == "scripted"
    chat_id = chat_id or kimi.chat_of(messages)
    second = "".join(kimi.ask("second question", chat_id)[0])
    assert second == "收到 🌙 turn 2: second question | earlier you said: first question"


def test_thinking_and_search_flow_around_a_scripted_text(kimi):
    kimi.emulator.script(answers=[CALL], chunks=5)
    if kimi.protocol == "rest":
        pieces, events = kimi.ask("weather?", use_search=True, model="k1")
        kinds = [e["event"] for e in events]
        assert kinds.index("search_plus") < kinds.index("k1") < kinds.index("cmpl")
        assert "".join(e["text"] for e in events if e["event"] == "k1").startswith("Thinking about")
    else:
        pieces, messages = kimi.ask("weather?", options={"thinking": True}, tools=[{"type": "TOOL_TYPE_SEARCH"}])
        masks = [m.get("mask") for m in messages]
        assert masks.index("block.think.content") < masks.index("block.tool") < masks.index("block.text.content")
    assert "".join(pieces) == CALL and len(pieces) == 5


def test_a_scripted_answer_is_verbatim_without_files_note_or_citation(emulators):
    emu = emulators["2026"]
    kimi = Kimi(emu, "connect")
    emu.script(reset=True)
    emu.admin("connect", {"citations": "emoji"})
    try:
        emu.script(answers=["plain"])
        assert "".join(kimi.ask("q", tools=[{"type": "TOOL_TYPE_SEARCH"}])[0]) == "plain"
        assert "🛠web_search:1#1🛠" in "".join(kimi.ask("q", tools=[{"type": "TOOL_TYPE_SEARCH"}])[0])
    finally:
        emu.admin("connect", {"citations": None})


def test_length_continuation_carries_the_rest_of_a_scripted_answer_in_its_chunks(emulators):
    emu = emulators["legacy"]
    kimi = Kimi(emu, "rest")
    emu.script(answers=[CALL, "next"], chunks="chars", reset=True)
    emu.admin("stream", {"length_cap": 20})
    try:
        chat_id = kimi.new_chat()
        pieces, events = kimi.ask("weather?", chat_id)
        rounds = 0
        while events[-2]["event"] == "length":   # continue on the req id until the answer is whole
            rounds += 1
            segment_id = next(e["id"] for e in events if e["event"] == "req")
            more, events = kimi.ask(" ", chat_id, action="continue", segment_id=segment_id)
            pieces += more
        assert pieces == list(CALL) and rounds == -(-len(CALL) // 20) - 1
        assert emu.admin_get("script")["used"] == {"queue": 1, "rules": 0}   # a continuation takes no new answer
        assert "".join(kimi.ask("and now?")[0]) == "next"
    finally:
        emu.admin("stream", {"length_cap": None})


def test_a_refused_turn_does_not_spend_a_scripted_answer(kimi):
    kimi.emulator.script(answers=["kept"])
    if kimi.protocol == "rest":
        kimi.emulator.fault("completion", status=500)
        refused = kimi.emulator.http.post(f"{kimi.emulator.url}/api/chat/{kimi.new_chat()}/completion/stream",
                                          headers=kimi.auth, json={"messages": [{"role": "user", "content": "x"}]},
                                          timeout=10)
        assert refused.status_code == 500
    else:
        kimi.emulator.fault("connect_chat", overloaded_free=True)
        body = {"message": {"blocks": [{"text": {"content": "x"}}]}}
        refused = requests.post(kimi.emulator.url + CONNECT_CHAT, data=encode(body), timeout=10,
                                headers={**kimi.auth, "Content-Type": "application/connect+json"})
        assert FrameParser().feed(refused.content)[-1][1]["error"]["code"] == "resource_exhausted"
    assert "".join(kimi.ask("x")[0]) == "kept"


@pytest.mark.parametrize("body,field", [
    ({"answers": "text"}, "answers must be a list"), ({"answers": ["a", 2]}, "answers[1] must be a string"),
    ({"chunks": 0}, "chunks must be a positive integer"), ({"chunks": "words"}, "chunks must be"),
    ({"rules": [{"answer": "a"}]}, "rules[0].contains must be a string"),
    ({"rules": [{"contains": "a", "answer": "b", "times": 0}]}, "rules[0].times must be"),
    ({"rules": [{"contains": "a", "answer": "b", "chunks": -1}]}, "rules[0].chunks must be"),
    ({"rules": [{"contains": "a", "answer": "b", "when": 1}]}, "unknown fields ['when'] in rules[0]"),
    ({"answer": ["a"]}, "unknown script fields ['answer']")])
def test_a_bad_script_is_a_400_naming_the_field_and_changes_nothing(emulators, body, field):
    emu = emulators["2026"]
    emu.script(answers=["before"], reset=True)
    r = emu.http.post(emu.url + "/_admin/script", data=orjson.dumps({**body, "reset": True}), timeout=10)
    assert r.status_code == 400 and field in r.json()["message"]
    assert [a["text"] for a in emu.admin_get("script")["answers"]] == ["before"]
    emu.script(reset=True)


def test_a_bad_body_leaves_the_script_as_it_was_in_process():
    script = Script()
    script.configure({"answers": ["a"]})
    with pytest.raises(ScriptError, match=r"answers\[1\]"):
        script.configure({"answers": ["b", None], "reset": True})
    assert script.take("p") == Scripted("a", 1) and script.take("p") is None


@given(st.text(max_size=40), st.one_of(st.integers(1, 50), st.just("chars")))
def test_pieces_rejoin_to_the_text_in_the_asked_count(text, chunks):
    pieces = split_text(text, piece_count(chunks, text))
    assert "".join(pieces) == text
    assert len(pieces) == (max(1, len(text)) if chunks == "chars" else max(1, min(chunks, len(text))))
    assert all(pieces) or pieces == [""]
