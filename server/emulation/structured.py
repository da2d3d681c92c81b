"""Structured output: extracting and checking Kimi's JSON answer, and the re-ask (the prompt asks for it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing import Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from server.core.request import ResponseFormat
from server.emulation.json_text import NAMED_SCHEMAS, compact_json

PROBLEM_LIMIT = 300          # one short line: it goes into a re-ask prompt and a 502 message
SCAN_PASSES = 4              # bracket scans over chatter stop after this many passes' worth of text
PARSE_ATTEMPTS = 256         # and JSON parses of balanced spans after this many
NO_JSON = "the answer holds no JSON value"
_STRUCTURAL = re.compile(r'[{}\[\]"\\]')
_CLOSER = {"{": "}", "[": "]"}
_OPENERS = re.compile(r"[{\[]")
# Keywords whose values are data, not subschemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


@dataclass(frozen=True, slots=True)
class StructuredResult:
    """The verdict on an answer: `json_text` is the bare JSON when ok, `problem` says why not."""

    ok: bool
    json_text: str = ""
    problem: str = ""


def reask_prompt(fmt: ResponseFormat, problem: str) -> str:
    """The follow-up message, sent in the same Kimi chat, naming what was wrong and asking again."""
    _require_json(fmt)
    text = (f"Your previous answer could not be used: {problem}. Reply again with only the corrected "
            f"{'JSON object' if fmt.kind == 'json_object' else 'JSON value'}: no prose, no code fences.")
    if fmt.kind == "json_schema":
        # Repeated because a long chat may have pushed the first statement of it out of focus.
        text += f"\nIt must be valid against this JSON schema: {compact_json(fmt.schema if fmt.schema is not None else {})}"
    return text


def check_answer(fmt: ResponseFormat, text: str) -> StructuredResult:
    """Find the one JSON value in Kimi's whole answer and check it against the response format."""
    _require_json(fmt)
    found = _extract(text, objects_only=fmt.kind == "json_object")
    if isinstance(found, str):
        return StructuredResult(False, problem=found)
    json_text, value = found
    if fmt.kind == "json_object" and not isinstance(value, dict):
        return StructuredResult(False, problem=f"the answer is {_type_name(value)}, not a JSON object")
    if fmt.kind == "json_schema" and fmt.schema is not None:
        problem = _schema_violation(fmt.schema, value)
        if problem:
            return StructuredResult(False, problem=problem)
    return StructuredResult(True, json_text=json_text)


def schema_problem(schema: object) -> str | None:
    """Why `schema` is not a usable JSON schema (one line, naming where), or None when it is."""
    if not isinstance(schema, dict):
        return f"the schema must be a JSON object, not {_type_name(schema)}"
    dialect = schema.get("$schema")
    if dialect is not None and not isinstance(dialect, str):
        return f"at $.$schema: must be a string, not {_type_name(dialect)}"
    cls = validator_for(schema, default=None) if dialect is not None else Draft202012Validator
    if cls is None:
        return _clip(f"at $.$schema: unknown meta-schema {dialect!r}")
    try:
        meta_cls = validator_for(cls.META_SCHEMA, default=cls)
        # The meta-schema's own format checker, so that an invalid "pattern" regex is caught here.
        meta = meta_cls(cls.META_SCHEMA, format_checker=meta_cls.FORMAT_CHECKER, registry=METASCHEMAS)
        error = best_match(meta.iter_errors(schema))
        if error is not None:
            return _clip(f"at {error.json_path}: {error.message}")
        return _ref_problem(schema)
    except RecursionError:
        return "the schema is nested too deeply"


def _require_json(fmt: ResponseFormat) -> None:
    """Refuse a plain-text format: the caller should not check or re-ask those."""
    if fmt.kind not in ("json_object", "json_schema"):
        raise ValueError(f"response format {fmt.kind!r} asks for no JSON")


def _extract(text: str, *, objects_only: bool) -> tuple[str, object] | str:
    """(json_text, value) of the answer's JSON value, or the problem when there is none."""
    bare = _unfence(text.strip())
    try:
        # The answer as a whole is the common case and is final: a whole-answer string or array is
        # what the model meant, and searching inside it would invent a different value.
        return bare, orjson.loads(bare)
    except orjson.JSONDecodeError as exc:
        decode_error = str(exc)
    other = None
    for candidate, value in _json_values(text):
        if not objects_only or isinstance(value, dict):
            return candidate, value
        other = other if other is not None else value
    if other is not None:
        return f"the answer is {_type_name(other)}, not a JSON object"
    if bare[:1] in ("{", "["):
        return _clip(f"the answer is not valid JSON: {decode_error}")
    return NO_JSON


def _unfence(text: str) -> str:
    """The inside of a ``` (or ```json) fence that wraps the whole text; otherwise the text itself."""
    if not text.startswith("```"):
        return text
    newline = text.find("\n")
    if newline < 0:
        return text
    body = text[newline + 1:]
    if body.rstrip().endswith("```"):
        body = body.rstrip()[:-3]
    return body.strip()


def _json_values(text: str):
    """Yield (text, value) of each complete, valid JSON object or array in `text`, in order.

    The values inside a valid one are not yielded. A balanced span that is not JSON (prose such as
    "{name}") moves the search one character on. The work is bounded for any text: each scan of
    the brackets records the end of every bracket it passed, so later starts rarely scan again,
    fresh scans stop after SCAN_PASSES passes' worth of text, and parse attempts after PARSE_ATTEMPTS.
    """
    ends: dict[int, int | None] = {}
    budget, attempts, pos = SCAN_PASSES * (len(text) + 1), 0, 0
    while attempts < PARSE_ATTEMPTS:
        opener = _OPENERS.search(text, pos)
        if opener is None:
            return
        start = opener.start()
        pos = start + 1
        if start not in ends:
            if budget <= 0:
                return
            budget -= _scan(text, start, ends)
        end = ends[start]
        if end is None:
            continue
        attempts += 1
        try:
            value = orjson.loads(text[start:end])
        except orjson.JSONDecodeError:
            continue
        yield text[start:end], value
        pos = end


def _scan(text: str, start: int, ends: dict[int, int | None]) -> int:
    """Match the brackets from `start`, respecting strings and escapes; return the characters scanned.

    Records in `ends` the end (exclusive) of each bracket met outside a string, or None for one that
    never closes or meets the wrong closer: a fresh scan from that bracket would find the same.
    """
    open_at: list[tuple[str, int]] = []
    in_string, escaped_at, at = False, -1, start
    for token in _STRUCTURAL.finditer(text, start):
        char, at = token.group(), token.start()
        if at == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSER:
            open_at.append((_CLOSER[char], at))
        elif char in "}]":
            closer, opened = open_at.pop()
            if closer != char:
                open_at.append((closer, opened))
                break
            ends[opened] = at + 1
            if not open_at:
                return at + 1 - start
    for _, opened in open_at:
        ends[opened] = None
    return at + 1 - start


def _schema_violation(schema: dict, value: object) -> str | None:
    """The most relevant way `value` breaks `schema`, as "at <path>: <reason>", or None."""
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        return f"the schema is not usable: {exc}"
    validator, problem = _compiled(key)
    if validator is None:
        return f"the schema is not usable: {problem}"
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as exc:
        return _clip(f"the schema is not usable: {exc}")
    except RecursionError:
        return "the answer is nested too deeply to check against the schema"
    return None if error is None else _clip(f"at {error.json_path}: {error.message}")


@lru_cache(maxsize=128)
def _compiled(key: bytes) -> tuple[Validator | None, str | None]:
    """A validator for the schema whose sorted-key JSON is `key` (or None and why it is unusable)."""
    schema = orjson.loads(key)
    problem = schema_problem(schema)
    if problem:
        return None, problem
    cls = validator_for(schema, default=Draft202012Validator)
    # The meta-schemas only, with no retrieval: the default registry would fetch remote $refs over
    # the network, a request forgery a caller could aim anywhere.
    return cls(schema, registry=METASCHEMAS), None


def _ref_problem(schema: dict) -> str | None:
    """The first $ref in `schema` that cannot be resolved locally, as a problem, or None."""
    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = METASCHEMAS.resolver_with_root(root)
    for path, ref in _refs(schema, "$"):
        try:
            resolver.lookup(ref)
        except (Unresolvable, ValueError):   # ValueError: a target that is not even a URI
            return _clip(f"at {path}: cannot resolve $ref {ref!r} (only references inside the schema work)")
    return None


def _refs(node: object, path: str, named: bool = False):
    """Yield (json path, target) of every string $ref under `node`, outside data-valued keywords.

    `named` says that `node` maps names to subschemas (properties, $defs...), so that a property
    called "enum" or "$ref" is walked as the schema it is.
    """
    if isinstance(node, dict):
        for key, child in node.items():
            if named:
                yield from _refs(child, f"{path}.{key}")
            elif key == "$ref" and isinstance(child, str):
                yield f"{path}.$ref", child
            elif key not in _DATA_KEYWORDS:
                yield from _refs(child, f"{path}.{key}", key in NAMED_SCHEMAS)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _refs(child, f"{path}[{index}]")


def _type_name(value: object) -> str:
    """The JSON type of `value`, with its article, for messages."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _clip(problem: str) -> str:
    """`problem` cut to PROBLEM_LIMIT characters: a message may quote a long instance."""
    return problem if len(problem) <= PROBLEM_LIMIT else problem[:PROBLEM_LIMIT - 1] + "…"
