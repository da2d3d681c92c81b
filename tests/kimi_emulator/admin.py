"""Admin hooks for tests: mint accounts, move the clock, expire or revoke, inject faults, read back."""

from __future__ import annotations

from tests.kimi_emulator.base import EmulatorHandler, KimiError
from tests.kimi_emulator.scripts import ScriptError
from tests.kimi_emulator.state import STREAM_DEFAULTS

SETTINGS = {"access_ttl", "rotation", "stream_pushing_status", "stream_pushing_scope", "camouflage_errors",
            "research_total", "research_used", "agents", "parse_fail", "parse_stall", "parse_polls", "latency",
            "chaos_rate", "chaos_seed"}


class AdminHandler(EmulatorHandler):
    """POST /_admin/<action>, GET /_admin/stats, /_admin/received and /_admin/script."""

    def get(self, action: str) -> None:
        if action == "stats":
            self.send_json(self.state.stats())
        elif action == "token":
            self.send_json(self.state.tokens.lookup(self.get_argument("digest", "")))
        elif action == "files":
            self.send_json(list(self.state.files.values()))
        elif action == "received":
            endpoint = self.get_argument("endpoint", "")
            self.send_json([r for r in self.state.received if not endpoint or r["endpoint"] == endpoint])
        elif action == "script":
            self.send_json(self.state.script.snapshot())
        else:
            raise KimiError(404, "admin.unknown", f"unknown admin action {action}")

    def post(self, action: str) -> None:
        body = self.body_json()
        state = self.state
        if action == "accounts":
            self.send_json(state.new_account(str(body.get("name", ""))))
        elif action == "settings":
            self._apply_settings(body)
            self.send_json({"ok": True})
        elif action == "stream":
            unknown = set(body) - set(STREAM_DEFAULTS)
            if unknown:
                raise KimiError(400, "admin.bad", f"unknown stream switches {sorted(unknown)}")
            state.faults.stream.update(body)
            self.send_json(state.faults.stream)
        elif action == "connect":
            unknown = set(body) - set(state.faults.connect)
            if unknown:
                raise KimiError(400, "admin.bad", f"unknown connect switches {sorted(unknown)}")
            state.faults.connect.update(body)
            self.send_json(state.faults.connect)
        elif action == "models":
            try:
                self.send_json(state.models.configure(body))
            except ValueError as exc:
                raise KimiError(400, "admin.bad", str(exc)) from None
        elif action == "script":
            try:
                state.script.configure(body)
            except ScriptError as exc:
                raise KimiError(400, "admin.bad", str(exc)) from None
            self.send_json(state.script.snapshot())
        elif action == "faults":
            state.faults.add(str(body["endpoint"]), body)
            self.send_json({"ok": True})
        elif action == "expire_access":
            self.send_json({"expired": state.tokens.expire_access_tokens()})
        elif action == "revoke":
            self.send_json({"revoked": state.tokens.revoke_user(str(body.get("user_id", "")))})
        elif action == "clock":
            state.clock.offset += float(body.get("advance", 0))
            self.send_json({"offset": state.clock.offset, "now": state.clock.now()})
        elif action == "release":
            self.send_json({"released": state.release_pauses()})
        elif action == "reset":
            state.reset()
            self.send_json({"ok": True})
        else:
            raise KimiError(404, "admin.unknown", f"unknown admin action {action}")

    def _apply_settings(self, body: dict) -> None:
        unknown = set(body) - SETTINGS
        if unknown:
            raise KimiError(400, "admin.bad", f"unknown settings {sorted(unknown)}")
        state = self.state
        if "access_ttl" in body:
            state.tokens.access_ttl = float(body["access_ttl"])
        if "rotation" in body:
            if body["rotation"] not in ("strict", "lenient"):
                raise KimiError(400, "admin.bad", "rotation is strict or lenient")
            state.tokens.rotation = body["rotation"]
        if "stream_pushing_status" in body:
            state.faults.stream_pushing_status = int(body["stream_pushing_status"])
        if "stream_pushing_scope" in body:
            state.faults.stream_pushing_scope = str(body["stream_pushing_scope"])
        if "latency" in body:
            state.faults.latency = float(body["latency"])
        if "chaos_rate" in body:
            state.faults.chaos_rate = float(body["chaos_rate"])
        if "chaos_seed" in body:
            state.faults.chaos.seed(int(body["chaos_seed"]))
        if "parse_fail" in body:
            state.faults.parse_fail = bool(body["parse_fail"])
        if "parse_stall" in body:
            state.faults.parse_stall = bool(body["parse_stall"])
        if "parse_polls" in body:
            state.faults.parse_polls = int(body["parse_polls"])
        if "camouflage_errors" in body:
            state.faults.camouflage_errors = bool(body["camouflage_errors"])
        if "research_total" in body:
            state.research["total"] = int(body["research_total"])
        if "research_used" in body:
            state.research["used"] = int(body["research_used"])
        if "agents" in body:
            state.agents.update(str(a) for a in body["agents"])
