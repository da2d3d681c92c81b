"""The error raised for a config that cannot be used, worded for the person who edits it."""

from __future__ import annotations


class ConfigError(Exception):
    """A config problem: which file (or the environment), which field, and what was expected."""

    def __init__(self, source: str, field: str, expected: str, got: object = ..., detail: str = "") -> None:
        self.source, self.field, self.expected = source, field, expected
        message = f"{source}: {field}: expected {expected}"
        if got is not ...:
            # Name the type, never the value: the value may be a token.
            message += f", got {_describe(got)}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    return type(value).__name__
