"""Fold an OpenAI message list into the one user message Kimi's web chat takes."""

from __future__ import annotations

import orjson

LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result",
          "function": "Tool result"}


def fold_messages(messages: list[dict]) -> str:
    """One user message as it is; otherwise every turn as `Role: text`, blank-line separated.

    Kimi keeps no history for a new chat, so the whole conversation travels in one message.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    turns = []
    for message in messages:
        text = message["content"]
        if message["role"] == "assistant" and message.get("tool_calls"):
            text = (text + "\n" if text else "") + "(called tools: " + _tool_calls(message["tool_calls"]) + ")"
        if not text.strip():
            continue
        label = LABELS[message["role"]]
        if message.get("name"):
            label += f" ({message['name']})"
        turns.append(f"{label}: {text}")
    return "\n\n".join(turns)


def _tool_calls(calls: object) -> str:
    if not isinstance(calls, list):
        return "?"
    names = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            names.append(f"{function.get('name', '?')}({function.get('arguments', '')})")
        else:
            names.append(orjson.dumps(call).decode())
    return ", ".join(names)


def newest_user_text(messages: list[dict]) -> str:
    """What a continued conversation sends: only the newest user message (Kimi keeps the rest)."""
    for message in reversed(messages):
        if message["role"] == "user" and message["content"].strip():
            return message["content"]
    return fold_messages(messages)
