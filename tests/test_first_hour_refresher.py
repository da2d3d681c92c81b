"""The refresher as a new user meets it: malformed tokens named, a heartbeat beside the file, logs by stream."""

from __future__ import annotations

import json
import subprocess
import sys

from common.heartbeat import heartbeat_path, read_heartbeat
from tests.helpers import ROOT, child_env, read_json, spawn, stop, wait_until, write_json

FAST = {"tick_seconds": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 1.0}
PLACEHOLDER = json.load(open(f"{ROOT}/config.example.json"))["accounts"][0]["refresh_token"]


def _config(emulator, accounts: list[dict]) -> dict:
    return {"api_keys": ["sk-first-hour"], "upstream": {"base_url": emulator.url, "refresh_timeout": 5},
            "refresher": FAST, "accounts": accounts}


def _once(path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refresher", "--config", str(path), "--once", *args],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)


def test_once_names_a_malformed_refresh_token_and_sends_nothing_of_it(emulator, tmp_path):
    good = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, _config(emulator, [{"name": "example", "refresh_token": PLACEHOLDER, "access_token": ""},
                                        {"name": "garbage", "refresh_token": "hello world"},
                                        {"name": "good", "refresh_token": good["refresh_token"]}]))
    result = _once(path)
    assert result.returncode == 1, result.stderr
    for name in ("example", "garbage"):
        assert f"account {name!r}: refresh_token is malformed" in result.stderr
    assert "needs a new login" not in result.stderr and PLACEHOLDER not in result.stderr
    assert emulator.stats()["refresh_calls"] == 1            # the good account only
    after = read_json(path)["accounts"]
    assert after[2]["status"]["state"] == "ok" and "status" not in after[0] and "status" not in after[1]


def test_a_garbled_access_token_beside_a_good_refresh_token_is_just_refreshed(emulator, tmp_path):
    account = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, _config(emulator, [{"name": "main", "refresh_token": account["refresh_token"],
                                         "access_token": "garbled"}]))
    result = _once(path)
    assert result.returncode == 0, result.stderr
    assert "malformed" not in result.stderr
    assert read_json(path)["accounts"][0]["access_token"].startswith("eyJ")


def test_the_daemon_reports_a_malformed_token_once_and_never_sends_it(emulator, tmp_path):
    path = tmp_path / "config.json"
    write_json(path, _config(emulator, [{"name": "main", "refresh_token": PLACEHOLDER, "access_token": ""}]))
    log = tmp_path / "refresher.log"
    with open(log, "wb") as sink:
        proc = spawn("refresher", "--config", str(path), stderr=sink)
    try:
        wait_until(lambda: "malformed" in log.read_text(), 30, "the malformed-token report")
        beat = wait_until(lambda: read_heartbeat(str(path)), 30, "a heartbeat")
        wait_until(lambda: read_heartbeat(str(path)).time > beat.time, 30, "two more ticks")
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    assert text.count("refresh_token is malformed") == 1 and "account 'main'" in text
    assert "needs a new login" not in text
    assert emulator.stats()["refresh_calls"] == 0


def test_the_heartbeat_is_a_sidecar_file_and_config_json_is_not_rewritten_per_tick(emulator, tmp_path):
    account = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, _config(emulator, [{"name": "main", "refresh_token": account["refresh_token"],
                                         "access_token": account["access_token"]}]))
    proc = spawn("refresher", "--config", str(path), stderr=subprocess.DEVNULL)
    try:
        first = wait_until(lambda: read_heartbeat(str(path)), 30, "a heartbeat")
        before = path.stat().st_mtime_ns
        assert heartbeat_path(str(path)) == str(path) + ".refresher"
        assert first.pid == proc.pid and first.stale_after >= 30 and first.alive(first.time)
        for _ in range(3):
            last = read_heartbeat(str(path)).time
            wait_until(lambda: (b := read_heartbeat(str(path))) is not None and b.time > last, 30, "the next beat")
        assert path.stat().st_mtime_ns == before                  # the tokens' file was left alone
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("config.json.refresher")) == [
            "config.json.refresher"]                               # no temp files left behind
    finally:
        assert stop(proc) == 0
    assert read_heartbeat(str(path)) is None                       # a clean stop takes the beat away
    # A beat whose writer is gone is believed only as long as another refresher would take to beat.
    write_json(tmp_path / "config.json.refresher", {"pid": proc.pid, "host": first.host, "time": first.time,
                                                    "stale_after": 1e9, "tick_seconds": 0.05})
    assert read_heartbeat(str(path)).alive(first.time) and not read_heartbeat(str(path)).alive(first.time + 60)
    assert not read_heartbeat(str(path)).alive(first.time + 2e9)


def test_log_stream_split_sends_info_to_stdout_and_warnings_to_stderr(emulator, tmp_path):
    """pm2 files stderr as the error log: a routine INFO line must not land there."""
    account = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, {**_config(emulator, [{"name": "main", "refresh_token": account["refresh_token"]}]),
                      "api_kyes": ["x"]})
    result = _once(path, "--log-stream", "split")
    assert result.returncode == 0, result.stderr
    assert "INFO refresher: refreshed account 'main'" in result.stdout and "WARNING" not in result.stdout
    assert "WARNING config:" in result.stderr and "api_kyes" in result.stderr and "INFO" not in result.stderr


def test_log_format_json_on_the_refresher(emulator, tmp_path):
    account = emulator.new_account()
    path = tmp_path / "config.json"
    write_json(path, _config(emulator, [{"name": "main", "refresh_token": account["refresh_token"]}]))
    result = _once(path, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    refreshed = next(r for r in records if r["message"].startswith("refreshed account 'main'"))
    assert refreshed["level"] == "INFO" and refreshed["logger"] == "refresher"
    assert account["refresh_token"] not in result.stderr
