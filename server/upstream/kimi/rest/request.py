"""The bodies we POST to Kimi's completion endpoint, from a model choice and a prompt."""

from __future__ import annotations

from server.core.models import K1_AGENT_ID, ModelChoice


def completion_body(prompt: str, choice: ModelChoice, use_search: bool, refs: list[str] | None = None,
                    refs_file: list[dict] | None = None) -> dict:
    """A new turn. K1 thinking goes by agent id on the completion (the chat itself is plain `kimi`)."""
    body = {"messages": [{"role": "user", "content": prompt}], "refs": refs or [],
            "use_search": choice.search or use_search, "kimiplus_id": completion_agent(choice),
            "extend": {"sidebar": True}}
    if refs_file:
        body["refs_file"] = refs_file
    if choice.research:
        body["use_research"] = True
    if choice.math:
        body["use_math"] = True
    return body


def continuation_body(segment_id: str, kimiplus_id: str) -> dict:
    """"Continue generating" after a `length` cap, keyed on the `req` event's id (kimi-protocol.md §2.4)."""
    return {"segment_id": segment_id, "action": "continue", "messages": [{"role": "user", "content": " "}],
            "kimiplus_id": kimiplus_id, "extend": {"sidebar": True}}


def completion_agent(choice: ModelChoice) -> str:
    return K1_AGENT_ID if choice.thinking else choice.agent_id
