"""The streaming tool-call parser: calls from markup, tolerances, visible invalid blocks, split independence."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.events import TextDelta, ToolCallDelta, ToolCallEnd, ToolCallStart
from server.emulation.tool_markup import CLOSE, OPEN, new_call_id
from server.emulation.tool_parser import ToolCallParser

TOOLS = ("get_weather", "search")


def run(chunks, tools=TOOLS, parallel=True):
    """Feed chunks, then end: (text, [(name, arguments)], events); checks each call's three events agree."""
    parser = ToolCallParser(tools, parallel=parallel)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.end()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [e.index for e in ends] == list(range(len(ends))) == [e.index for e in starts]
    assert [(s.id, s.name) for s in starts] == [(e.id, e.name) for e in ends]
    assert [orjson.loads(d.arguments) for d in deltas] == [e.arguments for e in ends]
    assert len({e.id for e in ends}) == len(ends) == parser.calls
    return text, [(e.name, e.arguments) for e in ends], events


def block(name, args, key="arguments"):
    return "<tool_call>" + orjson.dumps({"name": name, key: args}).decode() + "</tool_call>"


def test_a_single_call_becomes_start_delta_end_and_no_text():
    text, calls, events = run([block("get_weather", {"city": "Paris"})])
    assert (text, calls) == ("", [("get_weather", {"city": "Paris"})])
    start, delta, end = events
    assert start.id.startswith("call_") and start.id == end.id
    assert delta.arguments == '{"city":"Paris"}'


def test_two_parallel_calls_get_indices_0_and_1_and_the_newlines_between_them_are_dropped():
    answer = block("get_weather", {"city": "Paris"}) + "\n\n" + block("search", {"q": "news"}) + "\n"
    text, calls, _ = run([answer])
    assert text == ""
    assert calls == [("get_weather", {"city": "Paris"}), ("search", {"q": "news"})]


def test_text_before_a_call_stays_content_without_the_whitespace_before_the_block():
    text, calls, events = run(["Let me check.\n\n", block("search", {"q": "x"})])
    assert (text, calls) == ("Let me check.", [("search", {"q": "x"})])
    assert isinstance(events[0], TextDelta)


def test_text_after_a_call_keeps_the_whitespace_that_leads_to_it():
    text, calls, _ = run([block("search", {"q": "x"}) + "\n\nDone."])
    assert (text, calls) == ("\n\nDone.", [("search", {"q": "x"})])


def test_a_plain_answer_keeps_its_trailing_whitespace():
    assert run(["Hello  ", "world\n"])[:2] == ("Hello  world\n", [])


@pytest.mark.parametrize("answer", ["a < b and 1<2", "<b>bold</b>", "<tool_ x", "<tool_call", "<tool_cal>",
                                    "x <tool_call_y> <<tool", "</tool_call> alone"])
def test_false_starts_are_plain_text(answer):
    assert run(list(answer))[:2] == (answer, [])


def test_a_less_than_is_released_as_soon_as_the_next_character_rules_the_tag_out():
    parser = ToolCallParser(TOOLS)
    assert parser.feed("a <") == [TextDelta("a")]
    assert parser.feed("b") == [TextDelta(" <b")]
    assert parser.feed("<tool_") == []
    assert parser.feed("x") == [TextDelta("<tool_x")]


def test_a_chunk_without_markup_is_released_at_once():
    parser = ToolCallParser(TOOLS)
    assert parser.feed("Hello, world.") == [TextDelta("Hello, world.")]


@pytest.mark.parametrize("body", [
    '\n  {"name": "search", "arguments": {"q": "x"}}  \n',
    '```json\n{"name": "search", "arguments": {"q": "x"}}\n```',
    '\n```\n{"name": "search", "arguments": {"q": "x"}}\n```\n',
    '```json{"name": "search", "arguments": {"q": "x"}}```',
    '{"name": "search", "parameters": {"q": "x"}}',
    '{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}',
    '{"type": "function", "function": {"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}}',
])
def test_what_models_really_write_is_tolerated(body):
    assert run(["<tool_call>" + body + "</tool_call>"])[:2] == ("", [("search", {"q": "x"})])


@pytest.mark.parametrize("body", ['{"name": "search"}', '{"name": "search", "arguments": null}',
                                  '{"name": "search", "arguments": ""}'])
def test_missing_arguments_are_an_empty_object(body):
    assert run(["<tool_call>" + body + "</tool_call>"])[:2] == ("", [("search", {})])


def test_a_missing_closing_tag_is_parsed_at_the_end_of_the_answer():
    text, calls, _ = run(["Checking.\n<tool_call>", '{"name": "search", "arguments": {"q": "x"}}\n'])
    assert (text, calls) == ("Checking.", [("search", {"q": "x"})])


def test_text_after_an_unclosed_call_is_content_again():
    answer = 'Checking.\n<tool_call>{"name": "search", "arguments": {"q": "x"}}\nI will wait for the result. \n'
    assert run([answer])[:2] == ("Checking.\nI will wait for the result. \n", [("search", {"q": "x"})])


def test_an_unclosed_block_followed_by_text_that_is_not_a_call_stays_visible():
    answer = 'A <tool_call>{"name": "nope"} and more'
    assert run([answer])[:2] == (answer, [])


def test_an_opening_tag_inside_a_block_closes_the_one_before_it():
    answer = '<tool_call>{"name": "search", "arguments": {"q": 1}}\n<tool_call>{"name": "search"}</tool_call>'
    assert run([answer])[:2] == ("", [("search", {"q": 1}), ("search", {})])
    chatty = '<tool_call>{"name": "search", "arguments": {"q": 1}} and then <tool_call>{"name": "search"}</tool_call>'
    assert run([chatty])[:2] == (" and then", [("search", {"q": 1}), ("search", {})])


@pytest.mark.parametrize("raw", [
    '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',
    "<tool_call>I would call search here</tool_call>",
    '<tool_call>{"name": "search", "arguments": [1, 2]}</tool_call>',
    '<tool_call>{"name": "search", "arguments": "not json"}</tool_call>',
    '<tool_call>["search"]</tool_call>',
    '<tool_call>{"name": "search", "arguments": {"q": "x"}',
])
def test_an_invalid_block_stays_visible_as_text_with_its_tags(raw):
    text, calls, _ = run(["Before. ", raw, " after"])
    assert (text, calls) == ("Before. " + raw + " after", [])


def test_an_invalid_block_does_not_hide_a_valid_one():
    bad = '<tool_call>{"name": "nope"}</tool_call>'
    text, calls, _ = run([bad + "\n" + block("search", {"q": "x"})])
    assert (text, calls) == (bad, [("search", {"q": "x"})])


def test_without_parallel_calls_only_the_first_valid_call_is_emitted():
    bad = '<tool_call>{"name": "nope"}</tool_call>'
    answer = block("search", {"q": 1}) + "\n" + block("get_weather", {}) + "\n" + bad + "\n" + block("search", {})
    text, calls, _ = run([answer], parallel=False)
    assert (text, calls) == ("\n" + bad, [("search", {"q": 1})])


def test_unicode_in_arguments_and_text_survives():
    args = {"city": "東京", "note": "☀️ 🌧 naïve", "emoji": "👩‍💻"}
    text, calls, events = run(["天気を調べます 🌤\n", block("get_weather", args)])
    assert (text, calls) == ("天気を調べます 🌤", [("get_weather", args)])
    assert orjson.loads(next(e for e in events if isinstance(e, ToolCallDelta)).arguments) == args


def test_ids_are_unique_and_come_from_new_id():
    counter = itertools.count()
    parser = ToolCallParser(TOOLS, new_id=lambda: f"call_{next(counter)}")
    events = parser.feed(block("search", {}) + block("search", {}))
    assert [e.id for e in events if isinstance(e, ToolCallEnd)] == ["call_0", "call_1"]
    assert len(new_call_id()) == len("call_") + 24 and new_call_id() != new_call_id()


def test_feed_after_end_is_an_error():
    parser = ToolCallParser(TOOLS)
    parser.end()
    with pytest.raises(RuntimeError):
        parser.feed("x")


def test_the_tags_are_public_for_the_prompt():
    assert (OPEN, CLOSE) == ("<tool_call>", "</tool_call>")


BAD = '<tool_call>{"name": "nope"}</tool_call>'


@pytest.mark.parametrize("answer, expected", [
    (block("search", {}) + "</tool_call>", ""),
    (block("search", {}) + "\n </tool_call>\n\nDone.", "\n\nDone."),
    (block("search", {}) + "</tool_call></tool_call>", "</tool_call>"),
])
def test_a_stray_closing_tag_right_after_a_call_is_dropped(answer, expected):
    assert run(list(answer))[:2] == (expected, [("search", {})])
    assert run([answer])[:2] == (expected, [("search", {})])


@pytest.mark.parametrize("answer, expected, calls", [
    ("Text </tool_call> more", "Text </tool_call> more", 0),
    (BAD + "</tool_call>", BAD + "</tool_call>", 0),
    (block("search", {}) + " ok </tool_call>", " ok </tool_call>", 1),
    (block("search", {}) + "\n```\n</tool_call>", "\n```\n</tool_call>", 1),
])
def test_a_closing_tag_anywhere_else_is_plain_text(answer, expected, calls):
    text, found, _ = run([answer])
    assert (text, len(found)) == (expected, calls)


def test_a_stray_closing_tag_after_a_dropped_call_is_dropped_too():
    answer = block("search", {"q": 1}) + "\n" + block("search", {"q": 2}) + "</tool_call>"
    assert run([answer], parallel=False)[:2] == ("", [("search", {"q": 1})])


@pytest.mark.parametrize("answer, expected", [
    ("```xml\n" + block("search", {}) + "\n```", ""),
    ("```json\n" + block("search", {}) + "\n```\n", ""),
    ("```\n" + block("search", {}) + "\n```", ""),
    ("```" + block("search", {}) + "```", ""),
    ("Let me check:\n```xml\n" + block("search", {}) + "\n\n" + block("search", {}) + "\n```\nDone.",
     "Let me check:\nDone."),
    ("```xml\n" + block("search", {}) + "\n", ""),   # the answer ends inside the fence
    ("```xml\n" + block("search", {}) + "</tool_call>\n```", ""),
])
def test_a_fence_of_only_calls_vanishes_with_them(answer, expected):
    text, calls, _ = run([answer])
    assert text == expected and calls and all(call == ("search", {}) for call in calls)


@pytest.mark.parametrize("answer, expected, calls", [
    ("```python\nprint(1 < 2)\n```\n", "```python\nprint(1 < 2)\n```\n", 0),
    ("```xml\n" + block("search", {}) + "\nSee above.\n```", "```xml\nSee above.\n```", 1),
    ("```\n" + BAD + "\n```", "```\n" + BAD + "\n```", 0),
    ("```\n" + block("search", {}) + "\n" + BAD + "\n```", "```\n" + BAD + "\n```", 1),
    ("```\n<b>x</b>\n" + block("search", {}), "```\n<b>x</b>", 1),
    (block("search", {}) + "\n```\n", "\n```\n", 1),   # a closing fence with no opener
    ("a ``` b ```` c `` d `x`", "a ``` b ```` c `` d `x`", 0),
    ("````xml\n" + block("search", {}) + "\n````", "````xml\n````", 1),
    ("```" + "x" * 40 + "\n" + block("search", {}), "```" + "x" * 40, 1),
    ("```\n```xml\n" + block("search", {}) + "\n```", "```", 1),   # an empty fence, then one of calls
])
def test_a_fence_holding_real_text_stays(answer, expected, calls):
    for chunks in ([answer], list(answer)):
        text, found, _ = run(chunks)
        assert (text, len(found)) == (expected, calls)


@pytest.mark.parametrize("args", [{"q": "a </tool_call> b"}, {"q": "</tool_call>", "r": "x</tool_call>y"},
                                  {"q": "<tool_call>"}])
def test_a_closing_tag_inside_a_json_string_is_argument_text(args):
    answer = "Sure.\n" + block("search", args) + "\nDone."
    assert run([answer])[:2] == ("Sure.\nDone.", [("search", args)])
    assert run(list(answer))[:2] == ("Sure.\nDone.", [("search", args)])


def test_an_unclosed_call_with_a_closing_tag_in_a_string_is_still_a_call():
    answer = '<tool_call>{"name": "search", "arguments": {"q": "a</tool_call>b"}}'
    assert run(list(answer))[:2] == ("", [("search", {"q": "a</tool_call>b"})])


@pytest.mark.parametrize("answer, expected, calls", [
    # The string never ends: the block ended at its first closing tag and was no call.
    ('<tool_call>{"name": "search", "arguments": {"q": "a</tool_call> then text',
     '<tool_call>{"name": "search", "arguments": {"q": "a</tool_call> then text', 0),
    # The string ends, but the object breaks after it: the next block is still found.
    ('A <tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B <tool_call>{"name": "search"}</tool_call>',
     'A <tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B', 1),
    # A whole object past the tag that is no call stays visible, tags and all.
    ('<tool_call>{"name": "nope", "q": "a</tool_call>b"}</tool_call>.',
     '<tool_call>{"name": "nope", "q": "a</tool_call>b"}</tool_call>.', 0),
])
def test_a_closing_tag_in_a_broken_string_still_ends_the_block(answer, expected, calls):
    for chunks in ([answer], list(answer)):
        text, found, _ = run(chunks)
        assert (text, len(found)) == (expected, calls)


def test_a_broken_block_does_not_hold_back_what_follows_it():
    parser = ToolCallParser(TOOLS)
    events = parser.feed('A <tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B <tool_call>{"name": '
                         '"search"}</tool_call> C')
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == 'A <tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B C'   # before end()
    assert [e.name for e in events if isinstance(e, ToolCallEnd)] == ["search"]


# Scripted answers and what the client must see, however they are split.
SCRIPTS = [
    ("Hello <b>world</b>, 1 < 2 and <tool_ nothing.\n", "Hello <b>world</b>, 1 < 2 and <tool_ nothing.\n", 0),
    (block("get_weather", {"city": "Paris"}), "", 1),
    ("Let me check both.\n\n" + block("get_weather", {"city": "東京"}) + "\n"
     + '<tool_call>\n```json\n{"name": "search", "parameters": {"q": "a</b>"}}\n```\n</tool_call>\n\n',
     "Let me check both.", 2),
    ("x<<tool_call>" + block("search", {})[11:] + " <tool_call>{bad}</tool_call> y \n<tool_call>"
     + '{"name": "search", "arguments": "{}"}', "x< <tool_call>{bad}</tool_call> y", 2),
    (block("search", {"q": "😀"}) + "\n  Done 🎉  ", "\n  Done 🎉  ", 1),
    ('Ok.\n<tool_call>{"name": "search", "arguments": {"q": "<b>"}}\nWaiting.', "Ok.\nWaiting.", 1),
    ("Both:\n```xml\n" + block("search", {}) + "\n</tool_call>\n" + block("get_weather", {}) + "\n```\n`x` ```py\n"
     + "1 < 2\n```", "Both:\n`x` ```py\n1 < 2\n```", 2),
    (block("search", {"q": "a</tool_call>b"}) + "</tool_call> ```\n" + block("search", {"q": "</tool_call>"}) + "\n```",
     "", 2),
    ('<tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B <tool_call>{"name": "search"}</tool_call>\n',
     '<tool_call>{"name": "search", "arguments": {"q": "a</tool_call> B', 1),
]


def check(chunks, expected_text, expected_calls, valid_only):
    text, calls, events = run(chunks)
    assert (text, len(calls)) == (expected_text, expected_calls)
    if valid_only:
        for e in events:
            if isinstance(e, TextDelta):
                assert "<tool_call" not in e.text and "</tool_call>" not in e.text
    return calls


@pytest.mark.parametrize("answer, expected_text, expected_calls", SCRIPTS)
def test_every_single_cut_gives_the_same_content_and_calls(answer, expected_text, expected_calls):
    valid_only = "<tool_call>{bad}" not in answer and " B <" not in answer
    whole = check([answer], expected_text, expected_calls, valid_only)
    assert check(list(answer), expected_text, expected_calls, valid_only) == whole
    for cut in range(1, len(answer)):
        assert check([answer[:cut], answer[cut:]], expected_text, expected_calls, valid_only) == whole, cut


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCRIPTS), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_random_multi_cut_splits_give_the_same_content_and_calls(script, cuts):
    answer, expected_text, expected_calls = script
    bounds = sorted({0, len(answer), *(c % (len(answer) + 1) for c in cuts)})
    chunks = [answer[a:b] for a, b in itertools.pairwise(bounds)]
    valid_only = "<tool_call>{bad}" not in answer and " B <" not in answer
    assert check(chunks, expected_text, expected_calls, valid_only) == check([answer], expected_text,
                                                                              expected_calls, valid_only)
