"""What the 2026 Chat stream carries besides the answer: sandbox tool runs (`block.tool`), citation markers,
the TYPE_MODEL_DEGRADE notice and a system-role message (kimi-protocol-2026-12.md §1.6, §3.4)."""

from __future__ import annotations

import orjson

from tests.kimi_emulator.tokens import xid

# Scenarios whose server runs its own agent tools even when the request declares none (MPW, AUR).
SANDBOX_SCENARIOS = frozenset({"SCENARIO_K3", "SCENARIO_K3_THINKING", "SCENARIO_K2D5", "SCENARIO_OK_COMPUTER",
                               "SCENARIO_OK_COMPUTER_SWARM"})
OVERLOAD_REASON = "REASON_SERVER_OVERLOADED_FOR_FREE_USER"
OVERLOAD_MESSAGE = "Too many people are chatting with Kimi right now. Subscribe to enter a priority queue!"
SYSTEM_TEXT = "You are Kimi. Tools: ipython, web_search, web_open_url, shell, /mnt/agents/output ..."


def sandbox_wanted(switch: object, scenario: str) -> bool:
    """`sandbox_tools`: None follows the scenario (the web's default), True and False force it."""
    return scenario in SANDBOX_SCENARIOS if switch is None else bool(switch)


def tool_run(block_id: str, name: str, call_id: str, args: dict, contents: list) -> list[dict]:
    """One tool's lifecycle as AUR saw it: set PENDING, args appended in fragments, RUNNING with its call id,
    then the contents with DONE."""
    raw = orjson.dumps(args).decode()
    third = max(1, len(raw) // 3)
    events = [{"op": "set", "mask": "block.tool", "block": {"id": block_id, "tool": {
        "name": name, "status": "STATUS_PENDING", "args": ""}}}]
    events += [{"op": "append", "mask": "block.tool.args",
                "block": {"id": block_id, "tool": {"args": raw[i:i + third]}}} for i in range(0, len(raw), third)]
    events.append({"op": "set", "mask": "block.tool.args,block.tool.status,block.tool.toolCallId", "block": {
        "id": block_id, "tool": {"args": raw, "status": "STATUS_RUNNING", "toolCallId": call_id}}})
    if len(contents) > 1:   # results arrive as they come: the first alone, then the whole list again
        events.append({"op": "set", "mask": "block.tool.contents", "block": {"id": block_id, "tool": {
            "toolCallId": call_id, "contents": contents[:1]}}})
    events.append({"op": "set", "mask": "block.tool.contents,block.tool.status", "block": {"id": block_id, "tool": {
        "toolCallId": call_id, "status": "STATUS_DONE", "contents": contents}}})
    return events


def search_run(block_id: str, prompt: str, count: int) -> list[dict]:
    """The model's web_search: `count` results with titles, urls and refIndex `web_search:1#i`."""
    contents = [{"searchResult": {"base": {"title": f"Result {i + 1} for {prompt[:30]}",
                                           "url": f"https://example.com/r{i + 1}", "siteName": "example.com",
                                           "snippet": f"snippet {i + 1}"}, "refIndex": f"web_search:1#{i}"}}
                for i in range(count)]
    return tool_run(block_id, "web_search", "web_search:1", {"queries": [prompt[:60]]}, contents)


def ipython_run(block_id: str) -> list[dict]:
    """A sandbox Python run whose output sits in a text-shaped content: bait for a client that leaks it."""
    code = "import math\nprint(f'sandbox says {math.sqrt(2):.4f}')"
    return tool_run(block_id, "ipython", "ipython:1", {"code": code},
                    [{"text": {"content": "sandbox says 1.4142\n"}}])


def cite(text: str, style: str | None, results: int) -> str:
    """The answer with a marker citing the last search result, in the documented `style`."""
    if not style or not results:
        return text
    ref = f"web_search:1#{results - 1}"
    if style == "pua":
        return text + f"\ue3a0cite\ue3a3{ref}\ue3a8"
    return text + f"🛠{ref}:~:text=snippet🛠" if style == "emoji_text" else text + f"🛠{ref}🛠"


def degrade_notice() -> dict:
    """The peak-time notice that Kimi answers with K2.6 fast instead (AUR)."""
    return {"notification": {"type": "TYPE_MODEL_DEGRADE",
                             "message": "High demand: this answer uses K2.6 fast instead of the model you chose."}}


def system_message(parent_id: str) -> list[dict]:
    """A system-role message (MPW), with its text inline and again as a block frame naming the message."""
    message_id = xid()
    return [{"op": "set", "mask": "message", "message": {
                "id": message_id, "parentId": parent_id, "role": "system", "status": "MESSAGE_STATUS_COMPLETED",
                "blocks": [{"id": "sys_0", "text": {"content": SYSTEM_TEXT}}]}},
            {"op": "set", "mask": "block.text", "block": {"id": "sys_0", "messageId": message_id,
                                                          "text": {"content": SYSTEM_TEXT}}}]
