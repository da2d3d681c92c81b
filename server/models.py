"""The model names the API accepts, and what each one asks of Kimi."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import ApiError

CANONICAL = ("kimi",)
ALIASES = {"moonshot-v1": "kimi"}
# What reverse-kimi and one-api users configured: moonshot-v1-8k, -32k, -128k, -auto.
MOONSHOT_SIZED = re.compile(r"^moonshot-v1-(8k|32k|128k|auto)$")


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: the name the caller used (echoed back) and the canonical one."""

    requested: str
    canonical: str


def resolve_model(name: str) -> ModelChoice:
    """Map a requested model name to a canonical one; 404 model_not_found otherwise."""
    key = name.strip().lower()
    if key in CANONICAL:
        return ModelChoice(name, key)
    if key in ALIASES:
        return ModelChoice(name, ALIASES[key])
    if MOONSHOT_SIZED.match(key):
        return ModelChoice(name, "kimi")
    valid = ", ".join(list(CANONICAL) + list(ALIASES))
    raise ApiError(404, f"The model '{name}' does not exist. Valid models: {valid}.", param="model",
                   code="model_not_found")


def model_list(created: int) -> dict:
    """The /v1/models body."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "kimi-bridge"}
                                       for name in CANONICAL]}
