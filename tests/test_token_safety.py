"""Issue 14 items 1 and 2: a pair that cannot be saved, and an editor's stale save, never lead to a re-spent token."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import orjson
import pytest

from common.jwt_claims import decode_claims
from common.token_ledger import LedgerFile
from tests.helpers import ROOT, Stack, child_env, read_json, stop, wait_until

# Root ignores file permissions; the refresher must meet them as a normal user would.
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def spawn_refresher(path, log_path, unprivileged: bool = False) -> subprocess.Popen:
    """A real refresher process, logging to `log_path`; `unprivileged` drops root's permission override."""
    prefix = NO_DAC if unprivileged and os.geteuid() == 0 else []
    with open(log_path, "ab") as log:
        return subprocess.Popen([*prefix, sys.executable, "-m", "refresher", "--config", str(path)],
                                cwd=ROOT, env=child_env(), stderr=log)


def chat_ok(stack: Stack) -> bool:
    """One non-streamed answer through the server."""
    response = stack.post({"model": "kimi", "messages": [{"role": "user", "content": "hi"}]})
    return response.status_code == 200


def rotations(emu, count: int):
    """A condition: `count` more successful refreshes than now, or any reuse (so a failure shows at once)."""
    start = emu.stats()["refresh_ok"]

    def done() -> bool:
        stats = emu.stats()
        return stats["refresh_ok"] >= start + count or stats["refresh_token_reuses"] > 0
    return done


def refresh_tokens(path) -> list[str]:
    return [a["refresh_token"] for a in read_json(path)["accounts"]]


@pytest.fixture
def short_stack(tmp_path):
    """Emulator (strict rotation, 3 s access tokens) and a server over two accounts; no refresher."""
    stack = Stack(tmp_path / "stack", accounts=2, access_ttl=3)
    yield stack
    stack.close()


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs util-linux setpriv as root")
def test_a_pair_that_cannot_be_saved_is_never_followed_by_spending_the_old_token(short_stack, tmp_path):
    stack, path = short_stack, short_stack.config_path
    directory = path.parent
    log_path = tmp_path / "refresher.log"
    emu = stack.emulator
    proc = spawn_refresher(path, log_path, unprivileged=True)
    procs = [proc]
    try:
        first = [a["refresh_token"] for a in stack.accounts]
        wait_until(lambda: all(new != old for new, old in zip(refresh_tokens(path), first)), 60,
                   "the first refresh of both accounts to be saved")
        # A: the directory refuses new files, the file itself stays writable: in place, under flock.
        os.chmod(directory, 0o555)
        wait_until(rotations(emu, 6), 90, "three more rotations per account")
        assert emu.stats()["refresh_token_reuses"] == 0
        assert "writing the file in place" in log_path.read_text()
        assert emu.stats()["refresh_token_reuses"] == 0
        wait_until(lambda: read_json(path)["accounts"][0].get("status", {}).get("state") == "ok", 30, "a saved pair")
        assert chat_ok(stack)

        # B: the file refuses writes too: the pair lives in the token ledger, which the server reads.
        os.chmod(path, 0o444)
        wait_until(rotations(emu, 4), 90, "rotations with a read-only file")
        assert emu.stats()["refresh_token_reuses"] == 0
        assert "saved only in the token ledger" in log_path.read_text()
        frozen = read_json(path)
        # The file's access tokens are long dead (3 s); answers are served with the ledger's.
        wait_until(lambda: all(decode_claims(a["access_token"]).exp < emu.admin("clock")["now"] - 1
                               for a in frozen["accounts"]), 30, "the file's access tokens to expire")
        assert chat_ok(stack)
        # A refresher killed now restarts from the ledger, not from the spent tokens in the file.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = spawn_refresher(path, log_path, unprivileged=True)
        procs.append(proc)
        wait_until(rotations(emu, 4), 90, "rotations after a restart")
        assert emu.stats()["refresh_token_reuses"] == 0 and emu.stats()["refresh_rejected"] == 0

        # C: the ledger refuses writes as the pair comes back: held in memory, the account only retries the save.
        emu.fault("refresh", stall=2, proceed=True)
        wait_until(lambda: emu.stats()["max_stalled"].get("refresh"), 60, "a refresh stalled on the wire")
        for slot in LedgerFile(str(path)).slots:
            os.chmod(slot, 0o444)
        wait_until(lambda: log_path.read_text().count("held in memory only") >= 1, 90, "a failed save")
        calls = emu.stats()["refresh_calls"]
        wait_until(lambda: log_path.read_text().count("held in memory only") >= 4, 90, "three more tries to save")
        # Neither account spent anything meanwhile: the held one only retries its save, and the other
        # cannot record an intent in the ledger, so it waits too.
        assert emu.stats()["refresh_calls"] == calls
        assert emu.stats()["refresh_token_reuses"] == 0
        for slot in LedgerFile(str(path)).slots:
            os.chmod(slot, 0o600)
        os.chmod(path, 0o600)
        os.chmod(directory, 0o755)
        wait_until(lambda: all(a.get("status", {}).get("state") == "ok" and
                               decode_claims(a["access_token"]).exp > emu.admin("clock")["now"]
                               for a in read_json(path)["accounts"]), 60, "both accounts saved and live again")
        wait_until(rotations(emu, 4), 90, "rotations after the repair")
        stats = emu.stats()
        assert stats["refresh_token_reuses"] == 0 and stats["refresh_rejected"] == 0, stats
        assert chat_ok(stack)
    finally:
        os.chmod(directory, 0o755)
        with_mode = [path, *LedgerFile(str(path)).slots]
        for file in with_mode:
            if file and os.path.exists(file):
                os.chmod(file, 0o600)
        for p in procs:
            stop(p)
    assert "Traceback" not in log_path.read_text()


def editor_save(path, doc: dict, style: str) -> None:
    """Save `doc` the way editors do: a temp file renamed over the old one, or truncate-and-write in place."""
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    if style == "rename":
        temp = path.with_name(path.name + ".swp")
        temp.write_bytes(data)
        os.replace(temp, path)
    else:
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(data)


@pytest.mark.parametrize("style", ["rename", "truncate"])
def test_an_editors_stale_save_never_puts_a_spent_refresh_token_back_into_use(short_stack, tmp_path, style):
    stack, path, emu = short_stack, short_stack.config_path, short_stack.emulator
    log_path = tmp_path / "refresher.log"
    procs = [spawn_refresher(path, log_path) for _ in range(2)]
    try:
        wait_until(lambda: emu.stats()["refresh_ok"] >= 2, 60, "the first refreshes")
        stale = read_json(path)                       # the person opens the file...
        opened = refresh_tokens(path)
        wait_until(lambda: all(new != old for new, old in zip(refresh_tokens(path), opened)), 60,
                   "a rotation of both accounts while the editor is open")
        # ...and edits: a new API key, a new account, and a genuinely new login for acct1.
        fresh, newcomer = emu.new_account("fresh"), emu.new_account("newcomer")
        stale["api_keys"].append("sk-added-by-hand-0123")
        stale["accounts"][1]["refresh_token"] = fresh["refresh_token"]
        stale["accounts"][1]["access_token"] = ""
        stale["accounts"].append({"name": "added", "refresh_token": newcomer["refresh_token"], "access_token": ""})
        editor_save(path, stale, style)
        wait_until(rotations(emu, 6), 90, "two more rotations of each account")
        stats = emu.stats()
        assert stats["refresh_token_reuses"] == 0 and stats["refresh_rejected"] == 0, stats
        doc = read_json(path)
        assert doc["api_keys"] == [Stack.API_KEY, "sk-added-by-hand-0123"]
        assert [a["name"] for a in doc["accounts"]] == ["acct0", "acct1", "added"]
        subs = [decode_claims(a["refresh_token"]).sub for a in doc["accounts"]]
        assert subs == [stack.accounts[0]["user_id"], fresh["user_id"], newcomer["user_id"]]
        assert [a["status"]["state"] for a in doc["accounts"]] == ["ok", "ok", "ok"]
        assert stack.post({"model": "kimi", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"Authorization": "Bearer sk-added-by-hand-0123"}).status_code == 200
    finally:
        for p in procs:
            stop(p)
    log = log_path.read_text() + stack.server_log.read_text()
    assert "Traceback" not in log
    assert log.count("already spent: wrote back its newer pair") == 1, "one clear line about the stale save"
    for account in read_json(path)["accounts"]:
        assert account["refresh_token"] not in log and account["access_token"] not in log
    for slot in LedgerFile(str(path)).slots:
        assert os.stat(slot).st_mode & 0o777 == 0o600
