"""Deployment: the Dockerfile, docker-compose, systemd units and pm2 file refer to what exists, and run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import requests
import yaml

from common.settings import DEFAULTS
from tests.helpers import ROOT, Emulator, child_env, free_port, read_json, stop, wait_until, write_json

DOCKERFILE = open(os.path.join(ROOT, "Dockerfile")).read()
COMPOSE = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))


def _json_array(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(?:--\S+\s+(?:\\\n\s*)?)*(?:CMD\s+)?(\[.*\])", DOCKERFILE, re.M)
    assert match, f"no exec-form {instruction} in the Dockerfile"
    return yaml.safe_load(match.group(1))


def test_dockerfile_copies_what_exists_runs_as_non_root_and_pins_dependencies():
    for source in re.findall(r"^COPY\s+(\S+)\s", DOCKERFILE, re.M):
        assert os.path.exists(os.path.join(ROOT, source)), source
    assert re.search(r"^FROM python:3\.\d+-slim", DOCKERFILE, re.M)
    user = re.search(r"^USER\s+(\S+)", DOCKERFILE, re.M).group(1)
    assert user not in ("root", "0")
    assert re.search(r"^EXPOSE\s+(\d+)", DOCKERFILE, re.M).group(1) == str(DEFAULTS["server"]["port"])
    assert "STOPSIGNAL SIGTERM" in DOCKERFILE
    for line in open(os.path.join(ROOT, "requirements.txt")):
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned: {line}"
    assert "config.json" in open(os.path.join(ROOT, ".dockerignore")).read()   # no secrets baked in


def test_compose_runs_both_processes_from_one_image_on_a_shared_directory():
    services = COMPOSE["services"]
    assert set(services) == {"refresher", "server"}
    images = {s["image"] for s in services.values()}
    assert len(images) == 1
    for name, service in services.items():
        assert service["command"][:3] == ["python", "-m", name]
        assert "./data:/data" in service["volumes"]
        assert service["restart"] in ("unless-stopped", "always", "on-failure")
        assert int(service["stop_grace_period"].rstrip("s")) >= 30
        assert "TZ" in service["environment"]
    assert services["server"]["ports"] == [f"{DEFAULTS['server']['port']}:{DEFAULTS['server']['port']}"]
    for service in services.values():
        assert service["build"] == "."   # `docker compose up server` builds the image on its own


def test_exit_code_2_is_not_restarted_forever():
    """Exit 2 is a config it cannot use: systemd and pm2 do not restart it; compose says what to do."""
    for name in ("kimi-bridge-refresher.service", "kimi-bridge-server.service"):
        text = open(os.path.join(ROOT, "deploy", "systemd", name)).read()
        assert re.search(r"^RestartPreventExitStatus=2$", text, re.M), name
    pm2 = open(os.path.join(ROOT, "deploy", "pm2", "ecosystem.config.js")).read()
    assert re.search(r"stop_exit_codes:\s*\[2\]", pm2)
    compose_text = open(os.path.join(ROOT, "docker-compose.yml")).read()
    assert "Exit code 2" in compose_text and "docker compose logs" in compose_text


def test_probes_use_liveness_and_readiness_where_each_belongs():
    """Docker's HEALTHCHECK shows readiness; Kubernetes restarts on liveness only and routes on readiness."""
    assert _json_array("HEALTHCHECK")[-2:] == ["--probe", "ready"]
    assert COMPOSE["services"]["refresher"]["healthcheck"]["test"][-2:] == ["--probe", "refresher"]
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, "deploy", "kubernetes", "kimi-bridge.yaml"))))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers["server"]["livenessProbe"]["httpGet"]["path"] == "/health"
    assert containers["server"]["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert containers["refresher"]["livenessProbe"]["exec"]["command"][-2:] == ["--probe", "refresher"]
    for name, container in containers.items():
        assert container["command"][:3] == ["python", "-m", name]
    assert deployment["spec"]["replicas"] == 1


def test_pm2_passes_log_stream_split_so_info_is_not_an_error():
    pm2 = open(os.path.join(ROOT, "deploy", "pm2", "ecosystem.config.js")).read()
    for module in ("refresher", "server"):
        assert f'"-m", "{module}", "--config", config, "--log-stream", "split"' in pm2


def test_the_image_commands_run_against_the_emulator(tmp_path):
    """Run compose's commands and the HEALTHCHECK as the image would: WORKDIR is the repo, /data a directory."""
    emulator = Emulator(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    account = emulator.new_account()
    write_json(data / "config.json", {"api_keys": ["sk-docker"], "upstream": {"base_url": emulator.url},
                                      "server": {"host": "127.0.0.1", "port": port},
                                      "accounts": [{"name": "main", "refresh_token": account["refresh_token"]}]})
    procs = []
    try:
        def run(argv: list[str], **kwargs):
            argv = [sys.executable if a == "python" else a.replace("/data", str(data)) for a in argv]
            return subprocess.Popen(argv, cwd=ROOT, env=child_env(), **kwargs)
        procs.append(run(COMPOSE["services"]["refresher"]["command"]))
        wait_until(lambda: read_json(data / "config.json")["accounts"][0].get("access_token"), 30, "a refresh")
        refresher_check = COMPOSE["services"]["refresher"]["healthcheck"]["test"][1:]
        wait_until(lambda: run(refresher_check).wait(30) == 0, 30, "the refresher's healthcheck to pass")
        procs.append(run(COMPOSE["services"]["server"]["command"]))
        health = _json_array("HEALTHCHECK")
        wait_until(lambda: run(health).wait(30) == 0, 30, "the HEALTHCHECK to pass")
        answer = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                               headers={"Authorization": "Bearer sk-docker"},
                               json={"model": "kimi", "messages": [{"role": "user", "content": "in docker"}]})
        assert answer.json()["choices"][0]["message"]["content"] == "收到 🌙 turn 1: in docker"
        assert _json_array("CMD") == COMPOSE["services"]["server"]["command"]
    finally:
        for proc in procs:
            assert stop(proc) == 0
        emulator.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_units_verify(tmp_path):
    python = os.path.realpath(sys.executable)
    for name in ("kimi-bridge-refresher.service", "kimi-bridge-server.service"):
        text = open(os.path.join(ROOT, "deploy", "systemd", name)).read()
        assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text and "StateDirectory=" in text
        assert "Restart=on-failure" in text and int(re.search(r"TimeoutStopSec=(\d+)", text).group(1)) >= 30
        # Point the unit at this checkout so verify can check the command exists.
        text = text.replace("/opt/kimi-bridge/.venv/bin/python", python).replace("/opt/kimi-bridge", ROOT)
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *[str(p) for p in sorted(tmp_path.iterdir())]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed here")
def test_pm2_runs_the_ecosystem_file_and_serves_a_completion(tmp_path):
    tools = tmp_path / "pm2"
    install = subprocess.run(["npm", "install", "--prefix", str(tools), "--no-audit", "--no-fund", "--loglevel=error",
                              "pm2@7.0.4"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    pm2 = str(tools / "node_modules" / ".bin" / "pm2")
    emulator = Emulator(tmp_path)
    port = free_port()
    config = tmp_path / "config.json"
    write_json(config, {"api_keys": ["sk-pm2"], "upstream": {"base_url": emulator.url},
                        "server": {"host": "127.0.0.1", "port": port},
                        "accounts": [{"name": "main", "refresh_token": emulator.new_account()["refresh_token"]}]})
    env = child_env(PM2_HOME=str(tmp_path / "pm2-home"), KIMI_BRIDGE_PYTHON=sys.executable,
                    KIMI_BRIDGE_CONFIG=str(config))
    try:
        started = subprocess.run([pm2, "start", os.path.join(ROOT, "deploy", "pm2", "ecosystem.config.js")],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr

        def answered() -> bool:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5,
                                  headers={"Authorization": "Bearer sk-pm2"},
                                  json={"model": "kimi", "messages": [{"role": "user", "content": "pm2"}]})
            except requests.ConnectionError:
                return False
            return r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "收到 🌙 turn 1: pm2"
        wait_until(answered, 60, "a completion through pm2")
        assert read_json(config)["accounts"][0]["status"]["state"] == "ok"   # the refresher ran too
        # pm2 files stderr as the error log: routine INFO lines belong in the out log.
        logs = tmp_path / "pm2-home" / "logs"
        wait_until(lambda: " INFO " in (logs / "kimi-bridge-server-out.log").read_text(), 30, "INFO in the out log")
        for name in ("kimi-bridge-server", "kimi-bridge-refresher"):
            error_log = logs / f"{name}-error.log"
            assert " INFO " not in (error_log.read_text() if error_log.exists() else ""), name
        text = open(os.path.join(ROOT, "deploy", "pm2", "ecosystem.config.js")).read()
        assert int(re.search(r"kill_timeout:\s*(\d+)", text).group(1)) >= 30000
    finally:
        subprocess.run([pm2, "kill"], env=env, capture_output=True, timeout=60)
        emulator.close()


def test_the_server_stops_cleanly_on_sigterm(tmp_path):
    from tests.helpers import Stack
    stack = Stack(tmp_path)
    try:
        stack.server.send_signal(signal.SIGTERM)
        assert stack.server.wait(30) == 0
    finally:
        stack.close()


def test_the_healthcheck_probes_tell_live_from_ready(tmp_path):
    from tests.helpers import Stack
    stack = Stack(tmp_path)
    try:
        def probe(kind: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "server.healthcheck", "--config", str(stack.config_path),
                                   "--probe", kind], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                                  timeout=60)
        assert probe("ready").returncode == 0 and probe("live").returncode == 0
        doc = read_json(stack.config_path)
        doc["accounts"][0]["enabled"] = False
        write_json(stack.config_path, doc)
        wait_until(lambda: probe("ready").returncode == 1, 30, "readiness to fail")
        assert "/health/ready answered 503" in probe("ready").stderr
        assert probe("live").returncode == 0
        refresher = probe("refresher")
        assert refresher.returncode == 1 and "no fresh refresher heartbeat" in refresher.stderr
    finally:
        stack.close()


def test_the_readme_covers_the_first_hour():
    """The route table lists every route a new user looks for; Docker steps chmod the file; a test account recipe."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    for route in ("`GET /health`", "`GET /health/ready`", "`GET /v1/status`", "`GET /openapi.json`"):
        assert any(line.startswith("| " + route) for line in table), route
    docker = readme.split("### Docker and docker-compose", 1)[1].split("\n### ", 1)[0]
    assert "chmod 600 data/config.json" in docker
    assert "curl -s -X POST http://127.0.0.1:8088/_admin/accounts" in readme
