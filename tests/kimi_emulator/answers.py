"""What the emulated Kimi says: the answer text and the SSE event sequence around it."""

from __future__ import annotations

import orjson

from tests.kimi_emulator.state import K1_AGENT_ID


def user_text(body: dict) -> str:
    """The text of the first message (Kimi uses the first message only)."""
    messages = body.get("messages") or []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    content = first.get("content", "")
    return content if isinstance(content, str) else ""


def is_thinking(body: dict) -> bool:
    """K1 by agent id (2024) or by `model` name (2025 UIs)."""
    model = str(body.get("model") or "").lower()
    return body.get("kimiplus_id") == K1_AGENT_ID or "k1" in model or "thinking" in model


def default_answer(prompt: str, turn: int, previous: str) -> str:
    """Echo the prompt (with CJK and an emoji, to exercise UTF-8), and the earlier turn if any."""
    text = f"收到 🌙 turn {turn}: {prompt}"
    if previous:
        text += f" | earlier you said: {previous}"
    return text


def split_text(text: str, pieces: int) -> list[str]:
    """Cut `text` into at most `pieces` non-empty runs of characters."""
    pieces = max(1, min(pieces, len(text) or 1))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return [p for p in out if p] or [""]


def frame(event: dict) -> bytes:
    """One SSE frame, keys sorted as Kimi's Go marshalling writes them."""
    return b"data: " + orjson.dumps(event, option=orjson.OPT_SORT_KEYS) + b"\n\n"


def search_events(prompt: str, group_id: str, count: int) -> list[dict]:
    events = [{"event": "search_plus", "group_id": group_id, "msg": {"type": "start"}}]
    for i in range(count):
        events.append({"event": "search_plus", "group_id": group_id, "msg": {
            "type": "get_res", "title": f"Result {i + 1} for {prompt[:30]}", "url": f"https://example.com/r{i + 1}",
            "successNum": i + 1, "site_name": "example.com", "date": "2026-11-01", "snippet": f"snippet {i + 1}"}})
    return events


def thinking_events(prompt: str, group_id: str, count: int) -> list[dict]:
    return [{"event": "k1", "group_id": group_id, "text": part}
            for part in split_text(f"Thinking about 「{prompt[:40]}」 step by step.", count)]


def split_points(data: bytes) -> list[int]:
    """Offsets that cut inside `data:` and inside every multi-byte UTF-8 sequence."""
    points = {3}
    for i, byte in enumerate(data):
        if byte >= 0xC0:          # a lead byte: cut right after it
            points.add(i + 1)
    return sorted(p for p in points if 0 < p < len(data))


def split_frame(data: bytes) -> list[bytes]:
    """`data` in the pieces split_points() names."""
    out, last = [], 0
    for point in split_points(data):
        out.append(data[last:point])
        last = point
    out.append(data[last:])
    return out
