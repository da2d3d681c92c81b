"""The call markup Kimi is taught, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, and reading one block."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection

import orjson

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# A fence the model may wrap the JSON in, inside the tags: ```json ... ``` or a bare ``` ... ```.
_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*\s*(.*?)\s*(?:```)?\Z", re.DOTALL)
_DECODER = json.JSONDecoder()   # raw_decode finds where a JSON value ends; orjson has no such call
# What may precede a block's JSON object: whitespace and a fence opener.
_JSON_LEAD = re.compile(r"\s*(?:```[A-Za-z0-9_-]*\s*)?")
IN_STRING = -1   # object_end: the text ends inside a JSON string
NOT_JSON = -2    # object_end: no JSON object can start the text, whatever follows


def new_call_id() -> str:
    """A fresh tool-call id: call_ and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


def parse_block(body: str, tool_names: Collection[str]) -> tuple[str, dict] | str:
    """The (name, arguments) a block's body spells, or why it is not a valid call."""
    text = body.strip()
    fenced = _FENCE.match(text) if text.startswith("```") else None
    if fenced:
        text = fenced.group(1)
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return f"no valid JSON ({e})"
    if not isinstance(obj, dict):
        return f"the block holds a JSON {type(obj).__name__}, not an object"
    if "name" not in obj and isinstance(obj.get("function"), dict):
        obj = obj["function"]   # the OpenAI wire shape {"type": "function", "function": {...}}, which models imitate
    name = obj.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return f"tool name {name!r} was not offered"
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    if isinstance(args, str):
        # Models copy the OpenAI wire format, where arguments are a JSON string.
        try:
            args = orjson.loads(args) if args.strip() else None
        except orjson.JSONDecodeError as e:
            return f"arguments are a string that is not JSON ({e})"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return f"arguments are a JSON {type(args).__name__}, not an object"
    return name, args


def object_end(piece: str) -> int:
    """Where the JSON object a block's body starts with ends, IN_STRING if the body stops inside one of
    its strings, or NOT_JSON."""
    start = _JSON_LEAD.match(piece).end()
    if not piece.startswith("{", start):
        return NOT_JSON
    try:
        return _DECODER.raw_decode(piece, start)[1]
    except json.JSONDecodeError as e:
        # Only this error means "the text ran out": every other one sits at a character that is already wrong.
        return IN_STRING if e.msg.startswith("Unterminated string") else NOT_JSON


def value_end(text: str) -> int | None:
    """Where the JSON value `text` starts with ends, or None when it starts with none."""
    try:
        return _DECODER.raw_decode(text)[1]
    except ValueError:
        return None
