"""Kimi's model catalog (ConfigService/GetAvailableModels, kimi-protocol-2026-12.md §3.3): the table, and how
its entries become stable OpenAI model ids and Kimi reasoning efforts."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from server.core.errors import bad_request

# Kimi's effort levels, weakest first (§5(a): NONE/LOW/HIGH/MAX).
EFFORTS = ("REASONING_EFFORT_NONE", "REASONING_EFFORT_LOW", "REASONING_EFFORT_HIGH", "REASONING_EFFORT_MAX")
# OpenAI's reasoning_effort values onto Kimi's; "max" is Kimi's own top level, taken too.
OPENAI_EFFORTS = {"none": "REASONING_EFFORT_NONE", "minimal": "REASONING_EFFORT_LOW", "low": "REASONING_EFFORT_LOW",
                  "medium": "REASONING_EFFORT_HIGH", "high": "REASONING_EFFORT_HIGH", "xhigh": "REASONING_EFFORT_MAX",
                  "max": "REASONING_EFFORT_MAX"}
AGENT_SCENARIO = "SCENARIO_OK_COMPUTER"
SWARM_MODE = "TYPE_ULTRA"
_VERSION = re.compile(r"^k(\d+)d(\d+)$")   # Kimi spells K2.6 as k2d6


@dataclass(frozen=True)
class CatalogModel:
    """One model Kimi offers, with what a Chat request must send to get it."""

    id: str                    # the stable OpenAI id derived from it, e.g. kimi-k2.6-thinking
    key: str                   # Kimi's own key, e.g. k2d6-thinking
    scenario: str
    thinking: bool = False
    kimiplus_id: str = ""      # "ok-computer" for the agent (OK Computer) models
    agent_mode: str = ""       # TYPE_NORMAL, or TYPE_ULTRA for the swarm
    display_name: str = ""
    description: str = ""
    efforts: tuple[str, ...] = ()   # the REASONING_EFFORT_* levels it takes; () when it takes none
    default_effort: str = ""

    def effort(self, wanted: str) -> str | None:
        """The level to send for `wanted` (a REASONING_EFFORT_*): itself if offered, else the nearest offered
        (the weaker on a tie); None when the model takes no effort at all or none was asked for."""
        if not wanted or not self.efforts:
            return None
        if wanted in self.efforts:
            return wanted
        rank = EFFORTS.index(wanted)
        return min(self.efforts, key=lambda e: (abs(EFFORTS.index(e) - rank), EFFORTS.index(e)))


@dataclass(frozen=True)
class Catalog:
    """An account's models in Kimi's order, and the one it uses by default (what `kimi` means)."""

    models: tuple[CatalogModel, ...]
    default: CatalogModel

    def get(self, model_id: str) -> CatalogModel | None:
        """The model with this OpenAI id, if the catalog has it."""
        return next((m for m in self.models if m.id == model_id), None)

    def ids(self) -> list[str]:
        """The OpenAI ids, in Kimi's order."""
        return [m.id for m in self.models]


def derive_id(key: str, thinking: bool, kimiplus_id: str, agent_mode: str, scenario: str) -> str:
    """`kimi-` + the key's model part (k2d6 → k2.6) + `-agent-swarm` (TYPE_ULTRA), `-agent` (OK Computer or a
    kimi+ id) or `-thinking`: from the entry's fields, not the key's own suffixes, so ids stay stable."""
    base = _key_id(key).split("-")[0]
    if agent_mode == SWARM_MODE:
        suffix = "-agent-swarm"
    elif kimiplus_id or scenario == AGENT_SCENARIO:
        suffix = "-agent"
    else:
        suffix = "-thinking" if thinking else ""
    return f"kimi-{base}{suffix}"


def _key_id(key: str) -> str:
    """The whole key as an id part: lower case, `-` for anything odd, k2d6 → k2.6, a leading `kimi-` dropped."""
    parts = re.sub(r"[^a-z0-9.]+", "-", key.strip().lower()).strip("-").split("-")
    parts = [_VERSION.sub(r"k\1.\2", p) for p in parts if p]
    if parts[:1] == ["kimi"]:
        parts = parts[1:]
    return "-".join(parts) or "default"


def parse_catalog(data: object, reserved: Callable[[str], object] = lambda _: False) -> Catalog:
    """A GetAvailableModels answer as a Catalog; ValueError when it holds no usable model.

    Entries without a key or scenario are skipped. An entry whose id is taken already (by an earlier
    entry, or by one of the `reserved` names kimi-bridge gives a meaning of its own) is named after its
    whole key instead (kimi-k3-fast), and skipped only if that is taken too."""
    if not isinstance(data, dict) or not isinstance(data.get("availableModels"), list):
        raise ValueError("the answer has no availableModels list")
    models: list[CatalogModel] = []
    taken: set[str] = set()
    for raw in data["availableModels"]:
        model = _entry(raw)
        if model is not None and (model.id in taken or reserved(model.id)):
            model = replace(model, id=f"kimi-{_key_id(model.key)}")
        if model is not None and model.id not in taken and not reserved(model.id):
            taken.add(model.id)
            models.append(model)
    if not models:
        raise ValueError("availableModels names no usable model")
    return Catalog(tuple(models), _default(models, data.get("defaultScenario")))


def _entry(raw: object) -> CatalogModel | None:
    """One availableModels item, or None when it lacks a key or a scenario."""
    if not isinstance(raw, dict):
        return None
    key, scenario = _text(raw, "key"), _text(raw, "scenario")
    if not key or not scenario:
        return None
    kimiplus, mode, thinking = _text(raw, "kimiPlusId", "kimiplusId", "kimiplus_id"), _text(raw, "agentMode"), \
        raw.get("thinking") is True
    kimiplus = "" if kimiplus == "kimi" else kimiplus   # "kimi" is the plain chat, not an agent
    options = raw.get("reasoningEffortOptions")
    efforts = tuple(e for e in EFFORTS if isinstance(options, list) and e in options)
    default_effort = _text(raw, "defaultReasoningEffort")
    return CatalogModel(derive_id(key, thinking, kimiplus, mode, scenario), key, scenario, thinking, kimiplus, mode,
                        _text(raw, "displayName"), _text(raw, "description"), efforts,
                        default_effort if default_effort in efforts else "")


def _default(models: list[CatalogModel], wanted: object) -> CatalogModel:
    """defaultScenario's model: by key when it names one, else its scenario + thinking, else the first chat model."""
    wanted = wanted if isinstance(wanted, dict) else {}
    plain = [m for m in models if not m.kimiplus_id and not m.agent_mode] or models
    key = _text(wanted, "model", "key")
    scenario, thinking = _text(wanted, "scenario"), wanted.get("thinking") is True
    return (next((m for m in models if key and m.key == key), None)
            or next((m for m in plain if m.scenario == scenario and m.thinking == thinking), None)
            or next((m for m in plain if m.scenario == scenario), None)
            or plain[0])


def _text(data: dict, *names: str) -> str:
    """The first of `names` that holds a non-blank string, stripped; "" if none does."""
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def kimi_effort(value: str | None) -> str:
    """OpenAI's `reasoning_effort` (or a REASONING_EFFORT_* name) as Kimi's level; "" when absent; 400 if unknown."""
    if value is None:
        return ""
    text = value.strip().lower()
    level = OPENAI_EFFORTS.get(text.removeprefix("reasoning_effort_"))
    if level is None:
        raise bad_request(f"Invalid value for 'reasoning_effort': '{value}'. Use one of {', '.join(OPENAI_EFFORTS)}.",
                      "reasoning_effort")
    return level


_K3_EFFORTS = {"reasoningEffortOptions": list(EFFORTS[1:]), "defaultReasoningEffort": "REASONING_EFFORT_MAX"}
_K26_EFFORTS = {"reasoningEffortOptions": list(EFFORTS[:2]), "defaultReasoningEffort": "REASONING_EFFORT_NONE"}
# Used when an account's catalog cannot be read: what the evidence shows the web offered in late 2026
# (K3 the default since 2026-07-16; K2.6 under SCENARIO_K2D5; agents = OK Computer, the swarm TYPE_ULTRA).
FALLBACK_ANSWER = {"availableModels": [
    {"key": "k3", "scenario": "SCENARIO_K3", "displayName": "K3", "thinking": False, **_K3_EFFORTS},
    {"key": "k3-thinking", "scenario": "SCENARIO_K3", "displayName": "K3 Thinking", "thinking": True, **_K3_EFFORTS},
    {"key": "k3-agent", "scenario": AGENT_SCENARIO, "displayName": "K3 Agent", "thinking": True,
     "kimiPlusId": "ok-computer", "agentMode": "TYPE_NORMAL", **_K3_EFFORTS},
    {"key": "k3-agent-ultra", "scenario": AGENT_SCENARIO, "displayName": "K3 Agent Swarm", "thinking": True,
     "kimiPlusId": "ok-computer", "agentMode": SWARM_MODE, **_K3_EFFORTS},
    {"key": "k2d6", "scenario": "SCENARIO_K2D5", "displayName": "K2.6 Instant", "thinking": False, **_K26_EFFORTS},
    {"key": "k2d6-thinking", "scenario": "SCENARIO_K2D5", "displayName": "K2.6 Thinking", "thinking": True,
     **_K26_EFFORTS},
    {"key": "k2d6-agent", "scenario": AGENT_SCENARIO, "displayName": "K2.6 Agent", "thinking": False,
     "kimiPlusId": "ok-computer", "agentMode": "TYPE_NORMAL"}],
    "defaultScenario": {"scenario": "SCENARIO_K3", "thinking": False}}
FALLBACK = parse_catalog(FALLBACK_ANSWER)
