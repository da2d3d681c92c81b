"""Chaos (issue 14): SIGKILL three refreshers and the server, editors saving stale copies, a client asking throughout.

CI runs it for 60 s; `make soak` runs the long variant (bench/soak.py --chaos-minutes).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import orjson
import requests

from common.redact import fingerprint
from common.token_ledger import INTERRUPTED, LedgerFile
from tests.helpers import Stack, read_json, stop, wait_until
from tests.kimi_emulator.tokens import token_digest
from tests.test_token_safety import editor_save, spawn_refresher

CI_SECONDS = 60.0
ANSWER_WAIT = 60.0   # the longest a window may go without an answer before the run fails


@dataclass
class ChaosReport:
    """What a chaos run did and saw."""

    seed: int
    seconds: float = 0.0
    refresher_kills: int = 0
    server_kills: int = 0
    editor_saves: int = 0
    answers: int = 0
    failures: dict = field(default_factory=dict)
    rotations: int = 0
    reuses: int = 0
    rejected: int = 0
    # Kills that landed between an intent record and its outcome: {account, fp, why, spent_at_kimi, after}
    interrupted: list = field(default_factory=list)
    unexpected_relogins: list = field(default_factory=list)
    final_states: list = field(default_factory=list)
    edits_kept: bool = False
    forced: bool = False   # the one kill placed inside a refresh on purpose has happened

    def line(self) -> str:
        """One human line with the figures."""
        minted = sum(1 for hit in self.interrupted if hit["spent_at_kimi"])
        return (f"{self.seconds:.0f} s, seed {self.seed}: {self.refresher_kills} refresher and {self.server_kills} "
                f"server SIGKILLs, {self.editor_saves} editor saves, {self.rotations} rotations, {self.answers} "
                f"answers (failed: {dict(self.failures) or 'none'}), {self.reuses} reuses, {self.rejected} rejected; "
                f"kills inside a refresh: {len(self.interrupted)} of {self.refresher_kills} ({minted} after Kimi "
                f"had minted the new pair{'; one kill placed inside a refresh on purpose' if self.forced else ''}), "
                f"each marked and never re-spent")


class Chaos:
    """One run: the stack, three refreshers, a client thread, an editor thread, and the killer (the caller)."""

    def __init__(self, tmp_path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.report = ChaosReport(seed)
        self.stack = Stack(tmp_path / "stack", accounts=3, access_ttl=4)
        self.path = self.stack.config_path
        self.log_path = tmp_path / "refreshers.log"
        self.refreshers = [spawn_refresher(self.path, self.log_path) for _ in range(3)]
        self.stop = threading.Event()
        self.answer_times: list[float] = []
        self.failures: collections.Counter = collections.Counter()
        self.note = 0
        self.threads = [threading.Thread(target=self._client, daemon=True),
                        threading.Thread(target=self._editor, daemon=True)]

    # --- the actors -------------------------------------------------------------------------

    def _client(self) -> None:
        """Ask for answers back to back; count them (a refused connection while the server is down is a gap)."""
        body = orjson.dumps({"model": "kimi", "messages": [{"role": "user", "content": "hi"}]})
        headers = {**self.stack.headers(), "Content-Type": "application/json"}
        while not self.stop.is_set():
            try:
                response = requests.post(self.stack.url + "/v1/chat/completions", data=body, headers=headers,
                                         timeout=30)
                if response.status_code == 200 and response.json()["choices"][0]["message"]["content"]:
                    self.answer_times.append(time.monotonic())
                else:
                    self.failures[str(response.status_code)] += 1
            except requests.RequestException:
                self.failures["server down"] += 1
                self.stop.wait(0.05)

    def _editor(self) -> None:
        """A person: open the file, think a while, save the (by then stale) copy; paste new logins when needed."""
        while not self.stop.is_set():
            try:
                doc = orjson.loads(self.path.read_bytes())
            except ValueError:
                continue   # caught another writer between truncate and write; open it again
            self.stop.wait(self.rng.uniform(0.5, 3.0))
            self.relogin_where_needed(doc)
            self.note += 1
            doc["chaos_note"] = self.note
            editor_save(self.path, doc, self.rng.choice(("rename", "truncate")))
            self.report.editor_saves += 1

    def relogin_where_needed(self, doc: dict) -> None:
        """For each account now marked relogin_required: record why, and paste a new login into `doc`."""
        try:
            current = read_json(self.path)
        except ValueError:
            return
        ledger = LedgerFile(str(self.path)).read()
        for account in current["accounts"]:
            if not marked(account):
                continue
            token = account["refresh_token"]
            record = ledger.fate(token) or {}
            hit = {"account": account["name"], "token": token, "why": record.get("why", "(not in the ledger)"),
                   "last_error": account["status"].get("last_error", ""), "after": self.report.refresher_kills,
                   "spent_at_kimi": False, "calls": 0}   # asked of the emulator once everything settled
            if hit["why"] == INTERRUPTED and "interrupted" in hit["last_error"]:
                self.report.interrupted.append(hit)
            else:
                self.report.unexpected_relogins.append(hit)
            fresh = self.stack.emulator.new_account(f"relogin-{len(self.report.interrupted)}")
            entry = next(a for a in doc["accounts"] if a["name"] == account["name"])
            entry["refresh_token"], entry["access_token"] = fresh["refresh_token"], ""

    # --- the killer -------------------------------------------------------------------------

    def run(self, seconds: float) -> ChaosReport:
        """Kill and restart processes at random for `seconds`, then settle and collect the figures."""
        for thread in self.threads:
            thread.start()
        wait_until(lambda: self.answer_times, ANSWER_WAIT, "a first answer")
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                # Answers in every window between kills: the next kill waits for one since the last.
                since = time.monotonic()
                self.stop.wait(self.rng.uniform(1.0, 3.0))
                wait_until(lambda: any(t > since for t in self.answer_times), ANSWER_WAIT,
                           "an answer between two kills")
                if not self.report.forced and time.monotonic() - start > seconds / 2:
                    self._kill_inside_a_refresh()
                elif self.rng.random() < 0.75:
                    self._kill_refresher(self.rng.randrange(len(self.refreshers)))
                else:
                    self._kill_server()
            self.report.seconds = time.monotonic() - start
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(60)
        self._settle()
        return self.report

    def _kill_refresher(self, i: int) -> None:
        self.refreshers[i].send_signal(signal.SIGKILL)
        self.refreshers[i].wait()
        self.report.refresher_kills += 1
        self.refreshers[i] = spawn_refresher(self.path, self.log_path)

    def _kill_inside_a_refresh(self) -> None:
        """Once per run, on purpose: hold a refresh on the wire and SIGKILL every refresher meanwhile.

        Kimi mints the pair after the stall, for nobody: the unavoidable case, which must end marked
        and never re-spent. The random kills land there only now and then.
        """
        self.stack.emulator.fault("refresh", stall=1.5, proceed=True)
        wait_until(lambda: self.stack.emulator.stats()["stalled"].get("refresh", 0), ANSWER_WAIT,
                   "a refresh held on the wire")
        for i in range(len(self.refreshers)):
            self._kill_refresher(i)
        self.report.forced = True

    def _kill_server(self) -> None:
        self.stack.server.send_signal(signal.SIGKILL)
        self.stack.server.wait()
        self.report.server_kills += 1
        self.stack._log_file.close()
        self.stack.start_server()

    def _settle(self) -> None:
        """With the chaos over: log in again where a kill left an account marked, then read the outcome."""
        def settled() -> bool:
            doc = read_json(self.path)
            if any(marked(a) for a in doc["accounts"]):
                self.relogin_where_needed(doc)
                editor_save(self.path, doc, "rename")
                return False
            return all(a.get("status", {}).get("state") == "ok" for a in doc["accounts"])
        wait_until(settled, 60, "every account to be ok again")
        for proc in self.refreshers:
            stop(proc)
        doc = read_json(self.path)
        stats = self.stack.emulator.stats()
        self.report.final_states = [a["status"]["state"] for a in doc["accounts"]]
        self.report.edits_kept = doc.get("chaos_note") == self.note
        self.report.answers = len(self.answer_times)
        self.report.failures = dict(self.failures)
        self.report.rotations, self.report.reuses = stats["refresh_ok"], stats["refresh_token_reuses"]
        self.report.rejected = stats["refresh_rejected"]
        # Whether Kimi got to mint a pair for it or not, the token was presented at most once, ever.
        for hit in self.report.interrupted:
            fate = self.stack.emulator.admin_get(f"token?digest={token_digest(hit['token'])}")
            hit["spent_at_kimi"], hit["calls"] = fate["used"], fate["calls"]

    def close(self) -> None:
        """Stop whatever still runs."""
        self.stop.set()
        for proc in self.refreshers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.stack.close()


def marked(account: dict) -> bool:
    """True while the account awaits a new login for the token it holds (not yet for one pasted since)."""
    status = account.get("status", {})
    return status.get("state") == "relogin_required" and status.get("rejected_token") == fingerprint(
        account["refresh_token"])


def run_chaos(tmp_path, seconds: float, seed: int | None = None) -> ChaosReport:
    """A whole chaos run; the caller checks the report with check_report()."""
    seed = int(os.environ.get("CHAOS_SEED", "0")) or seed or random.randrange(1 << 30)
    chaos = Chaos(tmp_path, seed)
    try:
        return chaos.run(seconds)
    finally:
        chaos.close()


def check_report(report: ChaosReport) -> None:
    """The issue's bar: no reuse, nobody left in relogin_required, every kill inside a refresh made safe."""
    assert report.reuses == 0 and report.rejected == 0, report.line()
    assert report.final_states and set(report.final_states) == {"ok"}, report.final_states
    assert not report.unexpected_relogins, [{k: v for k, v in hit.items() if k != "token"}
                                            for hit in report.unexpected_relogins]
    for hit in report.interrupted:
        # Kimi may have spent it (the new pair died with the refresher) or not (the kill came first);
        # either way nobody sent it again afterwards.
        assert hit["calls"] <= 1, hit["account"]
    # The kill placed inside a refresh on purpose must have been seen and made safe: never a silent pass.
    assert not report.forced or any(hit["spent_at_kimi"] for hit in report.interrupted), report.line()
    assert report.edits_kept, "the person's last save was lost"
    assert report.answers > 0 and report.refresher_kills >= 3 and report.editor_saves >= 3, report.line()


def test_chaos_kills_and_editors_never_cost_a_refresh_token(tmp_path):
    report = run_chaos(tmp_path, float(os.environ.get("CHAOS_SECONDS", CI_SECONDS)))
    print("chaos:", report.line())
    check_report(report)
    assert "Traceback" not in (tmp_path / "refreshers.log").read_text()
