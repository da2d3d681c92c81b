"""The refresher as a process against the strict-rotation emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from common.jwt_claims import decode_claims
from common.store import UNSAFE_NO_LOCK_ENV
from tests.helpers import ROOT, Emulator, child_env, read_json, spawn, stop, wait_until, write_json

FAST = {"tick_seconds": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 1.0}


def _modern(emulator, *accounts, refresher=None, **extra) -> dict:
    doc = {"api_keys": ["sk-local-secret-key"], "upstream": {"base_url": emulator.url, "refresh_timeout": 5},
           "accounts": [{"name": f"acct{i}", "refresh_token": a["refresh_token"], "access_token": ""}
                        for i, a in enumerate(accounts)]}
    doc["refresher"] = {**FAST, **(refresher or {})}
    doc.update(extra)
    return doc


def _once(path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refresher", "--config", str(path), "--once", *args],
                          cwd=ROOT, env=env or child_env(), capture_output=True, text=True, timeout=120)


def test_refresh_rotates_both_tokens_and_keeps_the_rest_of_the_file(emulator, tmp_path):
    a, b = emulator.new_account(), emulator.new_account()
    path = tmp_path / "config.json"
    doc = _modern(emulator, a, b, custom={"user": "field"})
    doc["accounts"][1]["note"] = "kept"
    write_json(path, doc)
    result = _once(path)
    assert result.returncode == 0, result.stderr
    after = read_json(path)
    assert list(after) == ["api_keys", "upstream", "accounts", "refresher", "custom"]
    assert after["custom"] == {"user": "field"} and after["accounts"][1]["note"] == "kept"
    for old, new in zip((a, b), after["accounts"]):
        assert new["refresh_token"] != old["refresh_token"]
        assert decode_claims(new["access_token"]).typ == "access"
        assert decode_claims(new["refresh_token"]).typ == "refresh"
        assert new["status"]["state"] == "ok" and new["status"]["access_token_expires_at"]
    assert emulator.stats()["refresh_ok"] == 2
    # Not due any more: a second run spends nothing.
    assert _once(path).returncode == 0
    assert emulator.stats()["refresh_calls"] == 2


def test_a_legacy_reverse_kimi_file_stays_legacy(emulator, tmp_path):
    account = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, {"token": "sk-legacy", "auth_token": "", "refresh_token": "Bearer " + account["refresh_token"]})
    result = _once(path, env=child_env(KIMI_BRIDGE_UPSTREAM_BASE_URL=emulator.url))
    assert result.returncode == 0, result.stderr
    after = read_json(path)
    assert set(after) == {"token", "auth_token", "refresh_token", "account_status"}
    assert after["token"] == "sk-legacy"
    assert after["auth_token"].startswith("Bearer eyJ") and after["refresh_token"].startswith("Bearer eyJ")
    assert after["refresh_token"] != "Bearer " + account["refresh_token"]


def _race(tmp_path, seconds: float, unsafe: bool, web: str = "2026") -> dict:
    emulator = Emulator(tmp_path, access_ttl=2, web=web)
    try:
        path = tmp_path / "config.json"
        write_json(path, _modern(emulator, emulator.new_account(), emulator.new_account()))
        env = child_env(**({UNSAFE_NO_LOCK_ENV: "1"} if unsafe else {}))
        procs = [spawn("refresher", "--config", str(path), env=env, stderr=subprocess.DEVNULL) for _ in range(8)]
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if unsafe and emulator.stats()["refresh_token_reuses"]:
                    break   # the control has shown what it needed to
                assert all(p.poll() is None for p in procs), "a refresher died"
                time.sleep(0.2)
        finally:
            codes = [stop(p) for p in procs]
        stats = emulator.stats()
        doc = read_json(path)
        # Is the final pair live and whole? Its refresh token still refreshes, and both halves were
        # minted together (same user, same issue time).
        live = []
        for account in doc["accounts"] if not unsafe else []:
            access, refresh = decode_claims(account["access_token"]), decode_claims(account["refresh_token"])
            again = emulator.refresh(account["refresh_token"])
            live.append((again.status_code, access.sub == refresh.sub and access.iat == refresh.iat))
        return {"stats": stats, "codes": codes, "doc": doc, "live": live}
    finally:
        emulator.close()


@pytest.mark.parametrize("web", ["2026", "legacy"])   # over the RPC, and over the GET after its fallback
def test_eight_racing_refreshers_never_reuse_a_refresh_token(tmp_path, web):
    result = _race(tmp_path, 30, unsafe=False, web=web)
    stats = result["stats"]
    assert stats["refresh_token_reuses"] == 0 and stats["refresh_rejected"] == 0
    assert stats["refresh_ok"] >= 10, "the race never got going"
    assert result["codes"] == [0] * 8
    assert [a["status"]["state"] for a in result["doc"]["accounts"]] == ["ok", "ok"]
    assert result["live"] == [(200, True), (200, True)]
    assert stats["requests"].get("refresh_rpc" if web == "2026" else "refresh", 0) >= 10


def test_the_race_test_fails_without_the_lock(tmp_path):
    result = _race(tmp_path, 30, unsafe=True)
    assert result["stats"]["refresh_token_reuses"] > 0


def test_a_rejected_refresh_token_needs_relogin_and_the_rest_carry_on(tmp_path):
    emulator = Emulator(tmp_path, access_ttl=2)
    try:
        dead, live = emulator.new_account(), emulator.new_account()
        emulator.admin("revoke", {"user_id": dead["user_id"]})
        path = tmp_path / "config.json"
        write_json(path, _modern(emulator, dead, live))
        proc = spawn("refresher", "--config", str(path), stderr=subprocess.PIPE, text=True)
        try:
            # The live account keeps being refreshed (several 2 s tokens) while the dead one waits.
            wait_until(lambda: emulator.stats()["refresh_ok"] >= 4, 60, "four refreshes of the live account")
            assert proc.poll() is None
        finally:
            stop(proc)
        log = proc.stderr.read()
        proc.stderr.close()
        stats = emulator.stats()
        assert stats["refresh_rejected"] == 1, "the dead token was tried more than once"
        doc = read_json(path)
        assert doc["accounts"][0]["status"]["state"] == "relogin_required"
        assert doc["accounts"][0]["refresh_token"] == dead["refresh_token"]
        assert doc["accounts"][1]["status"]["state"] == "ok"
        assert log.count("needs a new login") == 1
        # A new token pasted by the user is picked up without a restart.
        assert _once(path).returncode == 1
        # Re-read: that run may have rotated the live account's 2 s tokens, and an old copy would be spent.
        doc = read_json(path)
        doc["accounts"][0]["refresh_token"] = emulator.new_account()["refresh_token"]
        write_json(path, doc)
        assert _once(path).returncode == 0
        assert read_json(path)["accounts"][0]["status"]["state"] == "ok"
    finally:
        emulator.close()


@pytest.mark.parametrize("web,endpoint", [("2026", "refresh_rpc"), ("legacy", "refresh")])
def test_server_errors_and_timeouts_are_retried_with_backoff_keeping_the_old_tokens(tmp_path, web, endpoint):
    emulator = Emulator(tmp_path, web=web)
    try:
        _retried_with_backoff(emulator, tmp_path, endpoint)
    finally:
        emulator.close()


def _retried_with_backoff(emulator, tmp_path, endpoint: str) -> None:
    account = emulator.new_account()
    for _ in range(2):
        emulator.fault(endpoint, status=502)
    emulator.fault(endpoint, stall=3)            # longer than the 1 s refresh timeout below
    emulator.fault(endpoint, status=503)
    path = tmp_path / "config.json"
    doc = _modern(emulator, account)
    doc["upstream"]["refresh_timeout"] = 1
    write_json(path, doc)
    proc = spawn("refresher", "--config", str(path), stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: emulator.stats()["requests"].get(endpoint, 0) >= 2, 30, "a retried refresh")
        during = read_json(path)["accounts"][0]
        assert during["refresh_token"] == account["refresh_token"], "the old token was dropped on failure"
        assert during["status"]["state"] == "retrying" and "HTTP 502" in during["status"]["last_error"]
        wait_until(lambda: emulator.stats()["refresh_ok"] == 1, 60, "the refresh to succeed")
        wait_until(lambda: read_json(path)["accounts"][0].get("status", {}).get("state") == "ok", 10, "the save")
    finally:
        stop(proc)
    stats = emulator.stats()
    assert stats["refresh_token_reuses"] == 0 and stats["requests"][endpoint] == 5
    times = [r["at"] for r in emulator.received(endpoint)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Exponential back-off with jitter in [0.5, 1]: each wait is at least half the doubling step.
    for i, gap in enumerate(gaps[:2]):
        assert gap >= 0.5 * 0.2 * 2 ** i * 0.9, gaps


def test_debug_logs_of_a_full_refresh_cycle_hold_no_secret(emulator, tmp_path):
    ok, dead = emulator.new_account(), emulator.new_account()
    emulator.admin("revoke", {"user_id": dead["user_id"]})
    path = tmp_path / "config.json"
    write_json(path, _modern(emulator, ok, dead))
    result = _once(path, "--log-level", "DEBUG")
    after = read_json(path)
    planted = [ok["refresh_token"], ok["access_token"], dead["refresh_token"], "sk-local-secret-key",
               after["accounts"][0]["access_token"], after["accounts"][0]["refresh_token"]]
    log = result.stdout + result.stderr
    assert "DEBUG" in log and "fp:" in log
    for secret in planted:
        assert secret not in log
        assert secret[-40:] not in log     # nor a recognisable piece of one


def test_sigterm_lets_a_refresh_in_flight_finish_and_save(emulator, tmp_path):
    account = emulator.new_account()
    emulator.fault("refresh_rpc", stall=2, proceed=True)   # the stall ends, then the refresh succeeds
    path = tmp_path / "config.json"
    write_json(path, _modern(emulator, account))
    proc = spawn("refresher", "--config", str(path), stderr=subprocess.DEVNULL)
    wait_until(lambda: emulator.stats()["requests"].get("refresh_rpc"), 30, "the refresh call to arrive")
    assert stop(proc) == 0
    assert emulator.stats()["refresh_ok"] == 1
    saved = read_json(path)["accounts"][0]
    assert saved["refresh_token"] != account["refresh_token"] and saved["status"]["state"] == "ok"


@pytest.mark.parametrize("case,field", [
    ("missing", "(file)"), ("directory", "(file)"), ("invalid-json", "(file)"), ("empty", "(file)"),
    ("wrong-type", "accounts[0].refresh_token"), ("no-accounts", "accounts"), ("bad-port", "server.port"),
    ("top-level-list", "(top level)"),
])
def test_a_config_it_cannot_use_exits_2_with_one_clear_message(tmp_path, case, field):
    path = tmp_path / "config.json"
    if case == "directory":
        path.mkdir()
    elif case == "invalid-json":
        path.write_text('{"accounts": [}')
    elif case == "empty":
        path.write_text("")
    elif case == "wrong-type":
        write_json(path, {"accounts": [{"refresh_token": 42}]})
    elif case == "no-accounts":
        write_json(path, {"api_keys": ["k"], "accounts": []})
    elif case == "bad-port":
        write_json(path, {"server": {"port": "http"}, "accounts": [{"refresh_token": "r"}]})
    elif case == "top-level-list":
        path.write_text("[]")
    result = _once(path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(path) in lines[0] and f": {field}: expected" in lines[0]


def test_an_unreadable_config_exits_2_naming_the_problem(tmp_path, monkeypatch, capsys):
    from refresher.__main__ import main
    path = tmp_path / "config.json"
    write_json(path, {"accounts": [{"refresh_token": "r"}]})
    os.chmod(path, 0)
    if os.access(path, os.R_OK):   # root reads anything: make the kernel's answer the non-root one
        real_open = os.open

        def denied(file, *args, **kwargs):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(os, "open", denied)
    assert main(["--config", str(path), "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"refresher: cannot use the config: {path}: (file): expected a file this user may read and " \
                  "write (permission denied)"


def test_a_kimi_auth_only_account_is_warned_about_then_marked_for_relogin(emulator, tmp_path):
    from tests.kimi_emulator.tokens import mint_jwt
    now = time.time()
    soon = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "u1", "iat": int(now), "exp": int(now + 3600)})
    gone = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "u2", "iat": int(now - 7200), "exp": int(now - 60)})
    path = tmp_path / "config.json"
    # One pasted into refresh_token by mistake: its `typ` says access, so it is read as one.
    write_json(path, {"api_keys": ["k"], "upstream": {"base_url": emulator.url}, "refresher": FAST,
                      "accounts": [{"name": "soon", "refresh_token": soon},
                                   {"name": "gone", "access_token": gone}]})
    result = _once(path)
    assert result.returncode == 1
    assert "holds only a kimi-auth token" in result.stderr and "needs a new login" in result.stderr
    doc = read_json(path)
    assert doc["accounts"][1]["status"]["state"] == "relogin_required"
    assert "status" not in doc["accounts"][0] and doc["accounts"][0]["refresh_token"] == soon
    assert emulator.stats()["refresh_calls"] == 0
