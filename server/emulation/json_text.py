"""JSON as the prompt writes it: compact, non-ASCII kept, whatever a caller's schema holds."""

from __future__ import annotations

import json

import orjson

# Keywords whose values map names to subschemas (a property called "title" is a name, not a keyword).
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                           "dependencies"})


def compact_json(value: object) -> str:
    """Compact JSON; the stdlib for what orjson refuses (integers beyond 64 bits a caller may send)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
