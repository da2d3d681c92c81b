"""Model names and the Kimi features they switch on: kimi-free-api's combinable flags, and the catalog's ids."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.core.errors import NOT_FOUND, Failure
from server.core.model_catalog import Catalog, kimi_effort

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
    catalog_id: str = ""     # a catalog model's id (kimi-k3, ...); "" = the account's default model
    effort: str = ""         # the REASONING_EFFORT_* asked for ("" = the model's own default)


def resolve_model(name: str, catalog: Catalog | None = None, reasoning_effort: str | None = None) -> ModelChoice:
    """Map a model name to its features; 404 model_not_found for anything else, 400 for a bad reasoning_effort."""
    key = name.strip().lower()
    effort = kimi_effort(reasoning_effort)
    if AGENT_ID.match(key):
        return ModelChoice(name, agent_id=key, effort=effort)
    flags = legacy_flags(key)
    if flags is None and catalog is not None and (model := catalog.get(key)) is not None:
        return ModelChoice(name, thinking=model.thinking, catalog_id=model.id, effort=effort)
    if flags is None:
        valid = ", ".join((catalog.ids() if catalog is not None else []) + list(CANONICAL) + list(ALIASES))
        raise Failure(NOT_FOUND, f"The model '{name}' does not exist. Valid models: {valid}; flags combine "
                      f"(kimi-search-silent, kimi-k1-search, ...); a 20-character kimi+ agent id also works.",
                      field="model", code="model_not_found")
    return ModelChoice(name, search="search" in flags or "silent" in flags, research="research" in flags,
                       thinking=bool(flags & {"k1", "thinking"}), math="math" in flags, silent="silent" in flags,
                       effort=effort)


def legacy_flags(name: str) -> set[str] | None:
    """The flags of one of kimi-bridge's own names (kimi, kimi-search-silent, moonshot-v1-8k, ...); None if not one."""
    key = ALIASES.get(name, name)
    if MOONSHOT_SIZED.match(key):
        key = "kimi"
    parts = key.split("-")
    if parts[0] != "kimi" or any(p not in FLAGS for p in parts[1:]) or len(set(parts)) != len(parts):
        return None
    return set(parts[1:])


def model_object(model_id: str, created: int) -> dict:
    """One entry of /v1/models, and the body of /v1/models/{id}."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "kimi-bridge"}


def model_list(created: int, catalog: Catalog | None = None) -> dict:
    """The /v1/models body: the catalog's ids first, then kimi-bridge's own names."""
    ids = list(dict.fromkeys((catalog.ids() if catalog is not None else []) + list(CANONICAL)))
    return {"object": "list", "data": [model_object(name, created) for name in ids]}
