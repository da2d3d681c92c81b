"""Where an OpenAI client puts its API key: `Authorization: Bearer <key>`."""

from __future__ import annotations

from collections.abc import Mapping

from server.core.errors import AUTH, Failure


def api_key(headers: Mapping[str, str]) -> str:
    """The key the caller sent; a Failure that says how to send it when there is none."""
    header = headers.get("Authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise Failure(AUTH, "Missing API key: send it as 'Authorization: Bearer <key>'.", code="invalid_api_key")
    return header[7:].strip()
