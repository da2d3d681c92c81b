"""Which attachments a turn uploads: all for a new chat, only those the prompt sends when Kimi keeps the history."""

from __future__ import annotations

from server.chat.service import _attachments
from server.chat.turn_plan import TurnPlan
from server.core.attachments import Attachment
from server.core.request import AttachmentPart, ChatRequest, Message, TextPart, ToolResultPart
from server.upstream.turn import ChatTarget


def _image(name: str) -> AttachmentPart:
    return AttachmentPart(Attachment("image", "data:image/png;base64,AA==", name, name))


def _user(text: str, *images: str) -> Message:
    return Message("user", (TextPart(text), *(_image(i) for i in images)))


NEW = TurnPlan(ChatTarget())
CONTINUING = TurnPlan(ChatTarget(account="a", chat_id="c" * 20))


def _names(messages: list[Message], plan: TurnPlan) -> list[str]:
    return [a.filename for a in _attachments(ChatRequest("kimi", messages), plan)]


def test_a_new_chat_uploads_every_users_attachments():
    messages = [_user("one", "a.png"), Message("assistant", (TextPart("ok"),)), _user("two", "b.png")]
    assert _names(messages, NEW) == ["a.png", "b.png"]


def test_a_continued_chat_uploads_those_of_every_user_message_after_kimis_last_answer():
    messages = [_user("one", "a.png"), Message("assistant", (TextPart("ok"),)), _user("two", "b.png"),
                _user("three", "c.png")]
    assert _names(messages, CONTINUING) == ["b.png", "c.png"]


def test_a_continued_chat_with_only_tool_results_after_the_answer_uploads_nothing_again():
    messages = [_user("one", "a.png"), Message("assistant", (TextPart("calling"),)),
                Message("tool", (ToolResultPart("call_1", "f", "42"),))]
    assert _names(messages, CONTINUING) == []


def test_a_continued_chat_without_an_answer_yet_uploads_the_newest_users():
    assert _names([_user("one", "a.png"), _user("two", "b.png")], CONTINUING) == ["b.png"]


def test_a_continued_chat_ending_with_kimis_answer_uploads_what_the_prompt_resends():
    """Nothing follows Kimi's answer: the prompt sends the newest user text again, and that message's files."""
    messages = [_user("one", "a.png"), _user("two", "b.png"), Message("assistant", (TextPart("ok"),))]
    assert _names(messages, CONTINUING) == ["b.png"]
