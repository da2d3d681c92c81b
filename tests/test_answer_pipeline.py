"""The answer pipeline in-process, with turns that replay fixed batches: the structured-output re-ask's edges."""

from __future__ import annotations

import asyncio

from server.chat.answer import Answer
from server.chat.turn_plan import TurnPlan
from server.core.events import Failed, Finish, TextDelta
from server.core.models import ModelChoice
from server.core.request import ChatRequest, Message, ResponseFormat, TextPart
from server.upstream.turn import ChatTarget


class ReplayedTurn:
    """A turn whose answer is fixed text; records whether it was closed."""

    protocol = "rest"

    def __init__(self, text: str) -> None:
        self.text, self.closed, self.keep = text, False, False
        self.account = type("Account", (), {"name": "acct0"})()
        self.chat_id, self.parent_id = "c" * 20, None

    async def events(self):
        yield [TextDelta(self.text), Finish("stop")]

    def close(self) -> None:
        self.closed = True


class Completions:
    """Opens the next replayed turn; `during_open` runs while Kimi is being asked (the caller may hang up then)."""

    def __init__(self, answers: list[str], during_open=None) -> None:
        self.answers, self.during_open, self.opened, self.disposed = answers, during_open, [], []

    async def open(self, target, request):
        if self.during_open:
            self.during_open()
        turn = ReplayedTurn(self.answers.pop(0))
        self.opened.append((target, request.prompt, turn))
        return turn

    def dispose(self, turn) -> None:
        self.disposed.append(turn)

    async def broke(self, turn, error) -> None:
        pass


def _answer(completions: Completions, first: str) -> Answer:
    request = ChatRequest("kimi", [Message("user", (TextPart("weather?"),))],
                          response_format=ResponseFormat("json_object"))
    return Answer(completions, request, ModelChoice("kimi"), TurnPlan(ChatTarget()), "weather?",
                  ReplayedTurn(first), keepalive=15.0)


async def _all(answer: Answer) -> list:
    return [event async for batch in answer.batches() for event in batch]


def test_an_invalid_answer_is_asked_again_in_the_same_chat_and_the_repair_is_the_answer():
    completions = Completions(['{"a": 1}'])
    answer = _answer(completions, "not json")
    events = asyncio.run(_all(answer))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ['{"a": 1}']
    assert isinstance(events[-1], Finish)
    (target, prompt, _), = completions.opened
    assert target.chat_id == "c" * 20 and "the answer holds no JSON value" in prompt


def test_invalid_twice_ends_in_a_failed_event_naming_why():
    events = asyncio.run(_all(_answer(Completions(["still not json"]), "not json")))
    assert isinstance(events[-1], Failed) and events[-1].failure.code == "invalid_structured_output"


def test_a_caller_gone_before_the_re_ask_asks_kimi_nothing_more():
    completions = Completions(['{"a": 1}'])
    answer = _answer(completions, "not json")
    answer.close()
    events = asyncio.run(_all(answer))
    assert completions.opened == [] and not any(isinstance(e, (Finish, Failed)) for e in events)


def test_a_caller_gone_while_the_re_ask_opens_closes_the_new_turn_at_once():
    completions = Completions(['{"a": 1}'])
    answer = _answer(completions, "not json")
    completions.during_open = answer.close
    events = asyncio.run(_all(answer))
    (_, _, second), = completions.opened
    assert second.closed and answer.turn is second
    assert not any(isinstance(e, (Finish, Failed)) for e in events)
