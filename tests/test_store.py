"""The locked store: atomic writes, crash safety under kill -9, the single-file bind-mount mode."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys

import orjson
import pytest

from common.config import set_tokens
from common.errors import ConfigError
from common.redact import fingerprint
from common.store import ConfigStore
from common.token_ledger import SPENT_LIMIT, LedgerFile
from tests.helpers import ROOT, child_env, read_json, wait_until, write_json


def _config(path, n: int = 0) -> None:
    write_json(path, {"api_keys": ["k"], "accounts": [{"name": "main", "access_token": f"a{n}",
                                                       "refresh_token": f"r{n}"}], "extra": {"keep": True}})


def test_update_preserves_order_mode_and_other_fields(tmp_path):
    path = tmp_path / "config.json"
    _config(path)
    os.chmod(path, 0o640)
    store = ConfigStore(str(path))
    store.update(lambda doc: set_tokens(doc, "main", "a1", "r1"))
    doc = read_json(path)
    assert list(doc) == ["api_keys", "accounts", "extra"] and doc["extra"] == {"keep": True}
    assert doc["accounts"][0] == {"name": "main", "access_token": "a1", "refresh_token": "r1"}
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert path.read_text().startswith('{\n  "api_keys"')   # two-space indent
    assert sorted(os.listdir(tmp_path)) == ["config.json", "config.json.lock"]


def test_load_is_cached_until_the_file_changes(tmp_path):
    path = tmp_path / "config.json"
    _config(path)
    store = ConfigStore(str(path))
    first = store.load()
    assert store.load() is first
    _config(path, 7)
    assert store.load().accounts[0].access_token == "a7"


def test_a_bad_edit_keeps_the_last_good_config(tmp_path):
    path = tmp_path / "config.json"
    _config(path, 3)
    store = ConfigStore(str(path))
    store.load()
    path.write_text("{ not json")
    assert store.current().accounts[0].access_token == "a3"
    with pytest.raises(ConfigError, match="valid JSON"):
        store.load()


def test_writes_that_would_not_parse_are_refused(tmp_path):
    path = tmp_path / "config.json"
    _config(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="accounts"):
        ConfigStore(str(path)).update(lambda doc: doc.update(accounts=[]))
    assert path.read_bytes() == before


def test_ebusy_on_replace_falls_back_to_writing_in_place(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    _config(path)
    inode = os.stat(path).st_ino
    real_replace = os.replace

    def busy(src, dst):
        if os.fspath(dst) == str(path):
            raise OSError(errno.EBUSY, "Device or resource busy", dst)
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", busy)
    store = ConfigStore(str(path))
    store.update(lambda doc: set_tokens(doc, "main", "a1", "r1"))
    store.update(lambda doc: set_tokens(doc, "main", "a2", "r2"))
    assert store.in_place
    assert os.stat(path).st_ino == inode          # the same file, written in place
    assert read_json(path)["accounts"][0]["refresh_token"] == "r2"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".config.json")]


def test_an_interrupted_in_place_write_rolls_forward_from_its_journal(tmp_path):
    path = tmp_path / "config.json"
    _config(path, 1)
    old = path.read_bytes()
    store = ConfigStore(str(path))
    new = old.replace(b"a1", b"a2").replace(b"r1", b"r2")
    # The state a crash leaves: journal written, data file half-written.
    (tmp_path / ".config.json.journal").write_bytes(
        __import__("hashlib").sha256(old).hexdigest().encode() + b"\n" + new)
    path.write_bytes(new[: len(new) // 2])
    store.update(lambda doc: None)
    assert read_json(path)["accounts"][0]["refresh_token"] == "r2"
    assert not (tmp_path / ".config.json.journal").exists()


def test_a_stale_journal_never_overwrites_newer_tokens(tmp_path):
    path = tmp_path / "config.json"
    _config(path, 1)
    stale = path.read_bytes()
    (tmp_path / ".config.json.journal").write_bytes(b"0" * 64 + b"\n" + stale)
    _config(path, 5)   # written since the journal: must win
    ConfigStore(str(path)).update(lambda doc: None)
    assert read_json(path)["accounts"][0]["refresh_token"] == "r5"


def _kill_loop(tmp_path, kills: int, *flags: str) -> None:
    path = tmp_path / "config.json"
    _config(path)
    acknowledged = 0
    rng = random.Random(1234)
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "tests.store_worker", "write", str(path), *flags],
                                cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
        # Kill after a random number of acknowledged saves: the writer is mid-write most of the time.
        for _ in range(rng.randint(1, 4)):
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            acknowledged = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Saves it announced before dying are still in the pipe.
        for line in proc.stdout.read().split():
            acknowledged = int(line)
        proc.stdout.close()
        doc = read_json(path)   # always parses
        account = doc["accounts"][0]
        n = int(account["access_token"][1:])
        assert account["refresh_token"] == f"r{n}", "a mixed token pair"
        assert n >= acknowledged, "an acknowledged save was lost"
        assert n <= acknowledged + 1, "the file holds a save nobody made"
    # The next start clears whatever temp files the kills left behind.
    ConfigStore(str(path)).update(lambda doc: None)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "config.json.lock"]


def test_kill_9_during_writes_never_tears_or_loses_the_file(tmp_path):
    _kill_loop(tmp_path, 200)


def test_kill_9_during_in_place_writes_is_recovered_by_the_journal(tmp_path):
    _kill_loop(tmp_path, 60, "--ebusy")


def test_readers_never_see_a_torn_file_while_writers_work_in_place(tmp_path):
    path = tmp_path / "config.json"
    _config(path)
    env = child_env()
    writers = [subprocess.Popen([sys.executable, "-m", "tests.store_worker", "write", str(path), "--ebusy"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for writer in writers:
            wait_until(lambda w=writer: w.stdout.readline(), 30, "a writer's first save")
        readers = [subprocess.run([sys.executable, "-m", "tests.store_worker", "read", str(path), "4"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                   for _ in range(1)]
        concurrent = [subprocess.Popen([sys.executable, "-m", "tests.store_worker", "read", str(path), "4"],
                                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for _ in range(3)]
        results = readers + [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in concurrent]
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
            writer.stdout.close()
    for result in results:
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) > 10, "the reader barely ran"
    assert read_json(path)["accounts"][0]["access_token"] != "a0"


def test_a_directory_that_refuses_temp_files_gets_in_place_writes(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    _config(path)
    inode = os.stat(path).st_ino
    real_open = os.open

    def refused(file, flags, *args, **kwargs):
        if ".tmp-" in os.fspath(file):
            raise PermissionError(errno.EACCES, "Permission denied", file)
        return real_open(file, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", refused)
    store = ConfigStore(str(path))
    store.update(lambda doc: set_tokens(doc, "main", "a1", "r1"))
    assert os.stat(path).st_ino == inode and read_json(path)["accounts"][0]["refresh_token"] == "r1"
    monkeypatch.setattr(os, "open", real_open)
    store.update(lambda doc: set_tokens(doc, "main", "a2", "r2"))   # atomic replaces again once it can
    assert os.stat(path).st_ino != inode and read_json(path)["accounts"][0]["refresh_token"] == "r2"


def test_a_transaction_replays_its_change_over_an_edit_made_meanwhile(tmp_path):
    path = tmp_path / "config.json"
    _config(path)
    store = ConfigStore(str(path))
    with store.transaction() as tx:
        tx.apply(lambda doc: set_tokens(doc, "main", "a1", "r1"))
        edited = read_json(path)
        edited["api_keys"].append("k2")
        with open(path, "r+b") as f:   # an editor rewriting in place, unlocked
            f.truncate(0)
            f.write(orjson.dumps(edited))
        tx.save()
    doc = read_json(path)
    assert doc["api_keys"] == ["k", "k2"] and doc["accounts"][0]["refresh_token"] == "r1"


def test_the_ledger_keeps_its_last_whole_slot_is_private_and_bounded(tmp_path):
    ledger_file = LedgerFile(str(tmp_path / "config.json"))
    ledger = ledger_file.read()
    for n in range(SPENT_LIMIT + 20):
        ledger.rotated("main", f"r{n}", f"a{n + 1}", f"r{n + 1}", float(n))
    ledger_file.write(ledger)
    ledger.begin("main", f"r{SPENT_LIMIT + 20}", 0.0)
    ledger_file.write(ledger)
    assert len(ledger_file.read().spent) == SPENT_LIMIT and ledger_file.read().intents
    assert all(os.stat(slot).st_mode & 0o777 == 0o600 for slot in ledger_file.slots)
    assert b"r1\"" not in b"".join(open(slot, "rb").read() for slot in ledger_file.slots)   # ids, not tokens
    newest = max(ledger_file.slots, key=os.path.getmtime)
    with open(newest, "r+b") as f:   # a write torn by a crash
        f.truncate(os.path.getsize(newest) // 2)
    survivor = LedgerFile(str(tmp_path / "config.json")).read()
    assert not survivor.intents and survivor.newest_pair(f"r{SPENT_LIMIT}")["refresh_token"] == f"r{SPENT_LIMIT + 20}"
    assert survivor.fate("r5") is None and survivor.fate(f"r{SPENT_LIMIT + 19}")["why"] == "rotated"


def test_a_stale_token_is_healed_and_an_unknown_outcome_is_never_spent(tmp_path):
    path = tmp_path / "config.json"
    _config(path, 1)
    store = ConfigStore(str(path))
    with store.transaction() as tx:
        tx.ledger.rotated("main", "r1", "a2", "r2", 0.0)
        tx.ledger.begin("main", "r2", 0.0)   # ...and the refresher dies mid-refresh with r2
        tx.save_ledger()
    _config(path, 1)                          # an editor's stale save puts r1 back
    assert store.load().accounts[0].refresh_token == "r2"   # readers see the newer pair at once
    store.update(lambda doc: None)            # a writer settles the dead refresh: r2's outcome is unknown
    account = read_json(path)["accounts"][0]
    assert account["refresh_token"] == "r2" and account["status"]["state"] == "relogin_required"
    assert "interrupted" in account["status"]["last_error"]
    assert store.load().accounts[0].status.rejected_token == fingerprint("r2")


def test_the_spent_record_of_a_token_the_file_still_holds_outlives_the_bound(tmp_path):
    # The file keeps handing back its first token (an unwritable file, or a stale copy saved again and again)
    # while every newer pair lives in the ledger: after more rotations than the ledger keeps records of,
    # that first token must still read as spent, or it would be handed out and spent again.
    path = tmp_path / "config.json"
    store = ConfigStore(str(path))
    for n in range(1, SPENT_LIMIT + 40):
        _config(path, 1)
        with store.transaction() as tx:
            tx.ledger.rotated("main", f"r{n}", f"a{n + 1}", f"r{n + 1}", float(n))
            tx.save_ledger()
    _config(path, 1)
    assert store.load().accounts[0].refresh_token == f"r{SPENT_LIMIT + 40}"
    assert len(LedgerFile(str(path)).read().spent) <= SPENT_LIMIT + 1
