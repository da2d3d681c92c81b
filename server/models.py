"""Model names and the Kimi features they switch on (kimi-free-api's combinable flags)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import ApiError

K1_AGENT_ID = "crm40ee9e5jvhsn7ptcg"     # Kimi's agent id for the K1 thinking model
AGENT_ID = re.compile(r"^[0-9a-z]{20}$")  # anchored: a kimi+ agent id is exactly this
FLAGS = ("search", "research", "k1", "thinking", "math", "silent")
CANONICAL = ("kimi", "kimi-search", "kimi-research", "kimi-k1", "kimi-thinking", "kimi-math", "kimi-silent",
             "kimi-search-silent")
ALIASES = {"moonshot-v1": "kimi", "k2": "kimi", "k1.5": "kimi-k1"}
# What reverse-kimi and one-api users configured: moonshot-v1-8k, -32k, -128k, -auto.
MOONSHOT_SIZED = re.compile(r"^moonshot-v1-(8k|32k|128k|auto)$")


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: the name the caller used (echoed back) and the features it asks for."""

    requested: str
    search: bool = False
    research: bool = False
    thinking: bool = False
    math: bool = False
    silent: bool = False
    agent_id: str = "kimi"   # kimiplus_id of the chat


def resolve_model(name: str) -> ModelChoice:
    """Map a model name to its features; 404 model_not_found for anything else."""
    key = name.strip().lower()
    if AGENT_ID.match(key):
        return ModelChoice(name, agent_id=key)
    key = ALIASES.get(key, key)
    if MOONSHOT_SIZED.match(key):
        key = "kimi"
    parts = key.split("-")
    if parts[0] != "kimi" or any(p not in FLAGS for p in parts[1:]) or len(set(parts)) != len(parts):
        valid = ", ".join(list(CANONICAL) + list(ALIASES))
        raise ApiError(404, f"The model '{name}' does not exist. Valid models: {valid}; flags combine "
                       f"(kimi-search-silent, kimi-k1-search, ...); a 20-character kimi+ agent id also works.",
                       param="model", code="model_not_found")
    flags = set(parts[1:])
    return ModelChoice(name, search="search" in flags or "silent" in flags, research="research" in flags,
                       thinking=bool(flags & {"k1", "thinking"}), math="math" in flags, silent="silent" in flags)


def model_list(created: int) -> dict:
    """The /v1/models body."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "kimi-bridge"}
                                       for name in CANONICAL]}
