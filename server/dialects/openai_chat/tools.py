"""OpenAI's tool fields (tools, tool_choice, functions, function_call, parallel_tool_calls, response_format) and
the tool calls in a message history, validated into the canonical types."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from server.core.errors import Failure, bad_request
from server.core.request import ResponseFormat, Tool, ToolCallPart, ToolChoice
from server.emulation.structured import schema_problem

# OpenAI's rule for function and json_schema names.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "1 to 64 letters, digits, underscores or dashes"
TOOL_KEYS = {"type", "function"}
FUNCTION_KEYS = {"name", "description", "parameters", "strict"}
LEGACY_FUNCTION_KEYS = {"name", "description", "parameters"}
FORMAT_KEYS = {"text": {"type"}, "json_object": {"type"}, "json_schema": {"type", "json_schema"}}
JSON_SCHEMA_KEYS = {"name", "description", "schema", "strict"}
# Keys a client may echo back from a streamed answer's tool-call deltas: harmless, so not refused.
CALL_KEYS = {"id", "type", "function", "index"}
MAX_SCHEMA_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """The offered tools and how they may be used; `legacy` when they came as functions/function_call."""

    tools: list[Tool]
    choice: ToolChoice
    parallel: bool
    legacy: bool


def missing(where: str) -> Failure:
    """A required field is absent."""
    return bad_request(f"Missing required parameter: '{where}'.", where)


def wrong_type(where: str, expected: str) -> Failure:
    """A field has the wrong JSON type."""
    return bad_request(f"Invalid type for '{where}': expected {expected}.", where)


def wrong_value(where: str, expected: str) -> Failure:
    """A field has the right type but a value that is not allowed."""
    return bad_request(f"Invalid value for '{where}': expected {expected}.", where)


def _only_keys(obj: dict, allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise bad_request(f"Unrecognized argument in {where}: {key}", f"{where}.{key}")


def _name(obj: dict, where: str) -> str:
    value = obj.get("name")
    if value is None:
        raise missing(f"{where}.name")
    if not isinstance(value, str):
        raise wrong_type(f"{where}.name", "a string")
    if not NAME.fullmatch(value):
        raise wrong_value(f"{where}.name", NAME_RULE)
    return value


def _optional(obj: dict, key: str, kind: type, what: str, where: str, default):
    # null counts as absent: SDK models dump every unset field as null.
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise wrong_type(f"{where}.{key}", what)
    return value


def check_schema_shape(schema: object, where: str, depth: int = 0) -> None:
    """A light structural check of a JSON schema: deeper meta-schema checks are left to the emulation."""
    if not isinstance(schema, dict):
        raise wrong_type(where, "a JSON schema object")
    # A body may nest up to orjson's 1024 levels: stop well before Python's recursion limit would.
    if depth > MAX_SCHEMA_DEPTH:
        raise bad_request(f"Invalid value for '{where}': the schema nests more than {MAX_SCHEMA_DEPTH} levels deep.",
                          where)
    kind = schema.get("type")
    if kind is not None and not (isinstance(kind, str)
                                 or isinstance(kind, list) and all(isinstance(k, str) for k in kind)):
        raise wrong_type(f"{where}.type", "a string or a list of strings")
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise wrong_type(f"{where}.properties", "an object")
        for key, sub in properties.items():
            check_schema_shape(sub, f"{where}.properties.{key}", depth + 1)
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise wrong_type(f"{where}.required", "a list of strings")
    if isinstance(schema.get("items"), dict):
        check_schema_shape(schema["items"], f"{where}.items", depth + 1)


def _function(obj: dict, where: str, allowed: set[str]) -> Tool:
    _only_keys(obj, allowed, where)
    name = _name(obj, where)
    description = _optional(obj, "description", str, "a string", where, "")
    parameters = obj.get("parameters")
    if parameters is None:
        parameters = {}   # OpenAI's meaning of no parameters: a function that takes none
    check_schema_shape(parameters, f"{where}.parameters")
    # A call's arguments are always a JSON object, so a schema of any other type could never be met.
    if parameters.get("type", "object") != "object":
        raise wrong_value(f"{where}.parameters.type", "'object' (a function's arguments are an object)")
    strict = _optional(obj, "strict", bool, "true or false", where, False)
    return Tool(name=name, description=description, parameters=parameters, strict=strict)


def _function_entry(entry: dict, where: str, expected_type: str) -> dict:
    """The `function` object of a `{"type": "function", "function": {...}}` entry (a tool, or a call)."""
    if entry.get("type") is None:
        raise missing(f"{where}.type")
    if entry["type"] != "function":
        raise wrong_value(f"{where}.type", expected_type)
    function = entry.get("function")
    if function is None:
        raise missing(f"{where}.function")
    if not isinstance(function, dict):
        raise wrong_type(f"{where}.function", "an object")
    return function


def _tools(raw: list) -> list[Tool]:
    tools = []
    for i, entry in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(entry, dict):
            raise wrong_type(where, "an object")
        _only_keys(entry, TOOL_KEYS, where)
        function = _function_entry(entry, where, "'function' (the only tool type Kimi can be given)")
        tools.append(_function(function, f"{where}.function", FUNCTION_KEYS))
    _unique(tools, "tools[{}]", ".function.name")
    return tools


def _functions(raw: list) -> list[Tool]:
    tools = []
    for i, entry in enumerate(raw):
        where = f"functions[{i}]"
        if not isinstance(entry, dict):
            raise wrong_type(where, "an object")
        tools.append(_function(entry, where, LEGACY_FUNCTION_KEYS))
    _unique(tools, "functions[{}]", ".name")
    return tools


def _unique(tools: list[Tool], entry: str, name_at: str) -> None:
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        if tool.name in seen:
            where = entry.format(i) + name_at
            raise bad_request(f"Invalid value for '{where}': '{tool.name}' is already the name of "
                              f"{entry.format(seen[tool.name])}.", where)
        seen[tool.name] = i


def _offered(name: str, tools: list[Tool], where: str, listed: str) -> None:
    if not any(tool.name == name for tool in tools):
        raise bad_request(f"Invalid value for '{where}': no function named '{name}' is offered in '{listed}'.",
                          where)


def _tool_choice(raw: object, tools: list[Tool]) -> ToolChoice:
    if raw is None:
        return ToolChoice()   # OpenAI's default when tools are present; meaningless without them
    if isinstance(raw, str):
        if raw != "none" and raw != "auto" and not tools:
            raise bad_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                              "specified.", "tool_choice")
        return ToolChoice(mode=raw)
    _only_keys(raw, {"type", "function"}, "tool_choice")
    if raw.get("type") is None:
        raise missing("tool_choice.type")
    if raw["type"] != "function":
        raise wrong_value("tool_choice.type", "'function'")
    function = raw.get("function")
    if function is None:
        raise missing("tool_choice.function")
    if not isinstance(function, dict):
        raise wrong_type("tool_choice.function", "an object")
    _only_keys(function, {"name"}, "tool_choice.function")
    name = _name(function, "tool_choice.function")
    if not tools:
        raise bad_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                          "specified.", "tool_choice")
    _offered(name, tools, "tool_choice.function.name", "tools")
    return ToolChoice(mode="named", name=name)


def _function_call(raw: object, tools: list[Tool]) -> ToolChoice:
    if raw is None or raw in ("none", "auto"):
        return ToolChoice(mode=raw or "auto")
    _only_keys(raw, {"name"}, "function_call")
    name = _name(raw, "function_call")
    if not tools:
        raise bad_request("Invalid value for 'function_call': 'function_call' is only allowed when 'functions' "
                          "are specified.", "function_call")
    _offered(name, tools, "function_call.name", "functions")
    return ToolChoice(mode="named", name=name)


def parse_tool_options(body: dict) -> ToolOptions:
    """tools/tool_choice or the legacy functions/function_call, and parallel_tool_calls (types checked already)."""
    tools_raw, functions_raw = body.get("tools") or [], body.get("functions") or []
    if tools_raw and functions_raw:
        raise bad_request("Use either 'tools' or the legacy 'functions', not both.", "functions")
    if tools_raw and body.get("function_call") is not None:
        raise bad_request("'function_call' goes with the legacy 'functions'; with 'tools' use 'tool_choice'.",
                          "function_call")
    if functions_raw and body.get("tool_choice") is not None:
        raise bad_request("'tool_choice' goes with 'tools'; with the legacy 'functions' use 'function_call'.",
                          "tool_choice")
    parallel = body.get("parallel_tool_calls")
    parallel = True if parallel is None else parallel
    legacy = bool(functions_raw) or body.get("function_call") is not None
    if legacy:
        tools = _functions(functions_raw)
        # The legacy shape holds one call (message.function_call): never ask Kimi for several.
        return ToolOptions(tools, _function_call(body.get("function_call"), tools), False, True)
    tools = _tools(tools_raw)
    return ToolOptions(tools, _tool_choice(body.get("tool_choice"), tools), parallel, False)


def parse_response_format(raw: object) -> ResponseFormat:
    """text, json_object, or json_schema with its name and a usable schema."""
    if raw is None:
        return ResponseFormat()
    kind = raw.get("type")
    if kind is None:
        raise missing("response_format.type")
    if not isinstance(kind, str) or kind not in FORMAT_KEYS:   # a list or object is not hashable
        raise wrong_value("response_format.type", "'text', 'json_object' or 'json_schema'")
    _only_keys(raw, FORMAT_KEYS[kind], "response_format")
    if kind != "json_schema":
        return ResponseFormat(kind=kind)
    spec = raw.get("json_schema")
    if spec is None:
        raise missing("response_format.json_schema")
    if not isinstance(spec, dict):
        raise wrong_type("response_format.json_schema", "an object")
    where = "response_format.json_schema"
    _only_keys(spec, JSON_SCHEMA_KEYS, where)
    name = _name(spec, where)
    _optional(spec, "description", str, "a string", where, "")
    schema = _optional(spec, "schema", dict, "a JSON schema object", where, None)
    if schema is not None and (problem := schema_problem(schema)):
        raise bad_request(f"Invalid value for '{where}.schema': {problem}", f"{where}.schema")
    strict = _optional(spec, "strict", bool, "true or false", where, False)
    return ResponseFormat(kind="json_schema", schema=schema, name=name, strict=strict)


def _arguments(raw: object, where: str) -> dict:
    if raw is None:
        raise missing(where)
    if not isinstance(raw, str):
        raise wrong_type(where, "a string holding a JSON object")
    try:
        arguments = orjson.loads(raw)
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise wrong_value(where, "a JSON object as a string")
    return arguments


def parse_tool_calls(raw: object, where: str) -> list[ToolCallPart]:
    """An assistant message's tool_calls: [{id, type: function, function: {name, arguments}}]."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise wrong_type(where, "a list of tool calls")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise wrong_type(at, "an object")
        _only_keys(call, CALL_KEYS, at)
        call_id = call.get("id")
        if call_id is None:
            raise missing(f"{at}.id")
        if not isinstance(call_id, str) or not call_id:
            raise wrong_type(f"{at}.id", "a non-empty string")
        function = _function_entry(call, at, "'function'")
        _only_keys(function, {"name", "arguments"}, f"{at}.function")
        name = _history_name(function, f"{at}.function")
        calls.append(ToolCallPart(call_id, name, _arguments(function.get("arguments"), f"{at}.function.arguments")))
    return calls


def parse_function_call(raw: object, where: str, index: int) -> ToolCallPart | None:
    """A legacy assistant function_call {name, arguments}, given a stable synthetic id from its message index."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise wrong_type(where, "an object")
    _only_keys(raw, {"name", "arguments"}, where)
    name = _history_name(raw, where)
    return ToolCallPart(synthetic_id(name, index), name, _arguments(raw.get("arguments"), f"{where}.arguments"))


def synthetic_id(name: str, index: int) -> str:
    """The id a legacy call (or a result with no call) gets: the same for the same history, every request."""
    return f"call_{name}_{index}"


def _history_name(obj: dict, where: str) -> str:
    # Names in the history are not held to the offered-tool rule: the tools may have changed since.
    value = obj.get("name")
    if value is None:
        raise missing(f"{where}.name")
    if not isinstance(value, str) or not value:
        raise wrong_type(f"{where}.name", "a non-empty string")
    return value
