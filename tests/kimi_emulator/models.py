"""The emulator's model catalog (ConfigService/GetAvailableModels) and the Chat request's model fields
(kimi-protocol-2026-12.md §1.3-1.4, §3.2, §3.3, §3.5): scenario, kimiplusId, agentMode, thinking, effort."""

from __future__ import annotations

import copy

# Scenarios every Chat takes: K3's, K2.5/K2.6's (today's), OK Computer's, and proto3's zero value.
BASE_SCENARIOS = frozenset({"SCENARIO_UNSPECIFIED", "SCENARIO_K3", "SCENARIO_K2D5", "SCENARIO_OK_COMPUTER"})
AGENT_MODES = frozenset({"TYPE_UNSPECIFIED", "TYPE_NORMAL", "TYPE_ULTRA"})
EFFORTS = frozenset({"REASONING_EFFORT_UNSPECIFIED", "REASONING_EFFORT_NONE", "REASONING_EFFORT_LOW",
                     "REASONING_EFFORT_HIGH", "REASONING_EFFORT_MAX"})
OK_COMPUTER = "ok-computer"
_K3 = {"reasoningEffortOptions": ["REASONING_EFFORT_LOW", "REASONING_EFFORT_HIGH", "REASONING_EFFORT_MAX"],
       "defaultReasoningEffort": "REASONING_EFFORT_MAX"}
_K26 = {"reasoningEffortOptions": ["REASONING_EFFORT_NONE", "REASONING_EFFORT_LOW"],
        "defaultReasoningEffort": "REASONING_EFFORT_NONE"}


def _model(key: str, scenario: str, name: str, thinking: bool, kimiplus: str = "", mode: str = "",
           efforts: dict | None = None) -> dict:
    """One availableModels item with every field the evidence names."""
    return {"key": key, "scenario": scenario, "displayName": name, "thinking": thinking, "kimiPlusId": kimiplus,
            "agentMode": mode, "description": f"{name} (emulated)", "inputPlaceholder": "", **(efforts or {})}


def default_catalog() -> dict:
    """What the 2026 web offers: K3 (the default since 2026-07-16), its thinking, agent and swarm forms, K2.6."""
    return {"availableModels": [
        _model("k3", "SCENARIO_K3", "K3", False, efforts=_K3),
        _model("k3-thinking", "SCENARIO_K3", "K3 Thinking", True, efforts=_K3),
        _model("k3-agent", "SCENARIO_OK_COMPUTER", "K3 Agent", True, OK_COMPUTER, "TYPE_NORMAL", _K3),
        _model("k3-agent-ultra", "SCENARIO_OK_COMPUTER", "K3 Agent Swarm", True, OK_COMPUTER, "TYPE_ULTRA", _K3),
        _model("k2d6", "SCENARIO_K2D5", "K2.6 Instant", False, efforts=_K26),
        _model("k2d6-thinking", "SCENARIO_K2D5", "K2.6 Thinking", True, efforts=_K26),
        _model("k2d6-agent", "SCENARIO_OK_COMPUTER", "K2.6 Agent", False, OK_COMPUTER, "TYPE_NORMAL")],
        "defaultScenario": {"scenario": "SCENARIO_K3", "thinking": False}}


class ModelTable:
    """The catalog answered to every user (or to one, when a test gives a user its own), and a failure switch."""

    def __init__(self) -> None:
        self.default = default_catalog()
        self.per_user: dict[str, dict] = {}
        self.fail = False   # GetAvailableModels answers 503 unavailable while set

    def answer(self, user_id: str) -> dict:
        """The GetAvailableModels answer for this user (a copy: callers may not change the table)."""
        return copy.deepcopy(self.per_user.get(user_id, self.default))

    def scenarios(self) -> frozenset[str]:
        """The scenarios a Chat takes: the base ones plus any a configured catalog names (the table is configurable)."""
        named = {m.get("scenario") for c in (self.default, *self.per_user.values()) for m in c["availableModels"]}
        return BASE_SCENARIOS | {s for s in named if isinstance(s, str)}

    def configure(self, body: dict) -> dict:
        """POST /_admin/models: {"availableModels", "defaultScenario"} [+ "user_id"], {"fail": bool}, {"reset": true};
        ValueError for anything else."""
        unknown = set(body) - {"availableModels", "defaultScenario", "user_id", "fail", "reset"}
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}")
        if body.get("reset"):
            self.__init__()
        if "fail" in body:
            self.fail = bool(body["fail"])
        if "availableModels" in body:
            if not isinstance(body["availableModels"], list):
                raise ValueError("availableModels is a list")
            catalog = {"availableModels": body["availableModels"],
                       "defaultScenario": body.get("defaultScenario") or {"scenario": "SCENARIO_K3"}}
            if body.get("user_id"):
                self.per_user[str(body["user_id"])] = catalog
            else:
                self.default = catalog
        return {"fail": self.fail, "default": self.default, "per_user": sorted(self.per_user)}


def _pick(data: dict, *names: str) -> object:
    """Protobuf JSON takes snake_case and lowerCamelCase alike."""
    for name in names:
        if name in data:
            return data[name]
    return None


def model_fields_problem(request: dict, scenarios: frozenset[str], known_agent) -> str | None:
    """Why a protobuf-JSON Connect server would refuse this Chat's model fields (invalid_argument), or None.

    Enum fields take only their names (an unknown one fails to parse); kimiplusId must name an agent."""
    message = request.get("message") if isinstance(request.get("message"), dict) else {}
    options = request.get("options") if isinstance(request.get("options"), dict) else {}
    checks = (("scenario", request.get("scenario"), scenarios),
              ("message.scenario", message.get("scenario"), scenarios),
              ("agentMode", _pick(request, "agentMode", "agent_mode"), AGENT_MODES),
              ("options.reasoningEffort", _pick(options, "reasoningEffort", "reasoning_effort"), EFFORTS))
    for field, value, allowed in checks:
        if value not in (None, "") and value not in allowed:
            return f"invalid value for enum field {field}: {value!r}"
    thinking = options.get("thinking")
    if thinking is not None and not isinstance(thinking, bool):
        return f"invalid value for bool field options.thinking: {thinking!r}"
    kimiplus = _pick(request, "kimiplusId", "kimiplus_id")
    if kimiplus not in (None, "", "kimi", OK_COMPUTER) and not known_agent(str(kimiplus)):
        return f"kimiplus {kimiplus!r} not found"
    return None
