"""The server as a new user meets it: HEAD, size limits, request ids, access log, readiness, the example key."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import orjson
import pytest
import requests

from tests.helpers import ROOT, Emulator, Stack, free_port, read_json, spawn, stop, wait_until, write_json

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One stack for the request-level checks (each leaves the stack as it found it)."""
    s = Stack(tmp_path_factory.mktemp("first-hour"))
    yield s
    s.close()


def _envelope(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


def _expired_jwt() -> str:
    def part(doc: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'typ': 'access', 'exp': 1, 'iat': 0})}.c2ln"


def test_head_is_answered_wherever_get_is(shared):
    for path, headers in (("/health", {}), ("/health/ready", {}), ("/openapi.json", {}),
                          ("/v1/models", shared.headers()), ("/v1/status", shared.headers())):
        response = requests.head(shared.url + path, headers=headers, timeout=10)
        assert response.status_code == 200, path
        assert response.content == b""
    refused = requests.head(shared.url + "/v1/chat/completions", headers=shared.headers(), timeout=10)
    assert refused.status_code == 405 and "POST" in refused.headers["Allow"]


def test_a_too_long_path_is_414_and_too_large_headers_431_in_the_envelope(shared):
    response = requests.get(shared.url + "/v1/" + "x" * 10_000, headers=shared.headers(), timeout=10)
    assert _envelope(response, 414)["code"] == "uri_too_long"
    response = requests.get(shared.url + "/v1/models", timeout=10,
                            headers={**shared.headers(), "X-Big": "y" * 100_000})
    assert _envelope(response, 431)["code"] == "request_header_fields_too_large"
    assert requests.get(shared.url + "/v1/models", headers=shared.headers(), timeout=10).status_code == 200


def test_every_answer_carries_an_x_request_id_echoed_when_sane(shared):
    mine = requests.get(shared.url + "/v1/models", headers={**shared.headers(), "X-Request-Id": "trace-42.a"},
                        timeout=10)
    assert mine.headers["X-Request-Id"] == "trace-42.a"
    for response in (requests.get(shared.url + "/health", timeout=10),
                     requests.get(shared.url + "/v1/models", timeout=10),                       # 401
                     requests.get(shared.url + "/v1/nothing", headers=shared.headers(), timeout=10),  # 404
                     requests.get(shared.url + "/v1/models", timeout=10,
                                  headers={**shared.headers(), "X-Request-Id": "no spaces <script>"})):
        generated = response.headers["X-Request-Id"]
        assert len(generated) == 32 and generated.isalnum(), response.status_code
    first, second = (requests.get(shared.url + "/health", timeout=10).headers["X-Request-Id"] for _ in range(2))
    assert first != second


def test_the_access_log_names_method_path_status_model_account_and_request_id(shared):
    response = shared.post({"model": "kimi", "messages": USER}, headers={"X-Request-Id": "access-log-check"})
    assert response.status_code == 200
    line = wait_until(lambda: next((l for l in shared.server_log.read_text().splitlines()
                                    if "id=access-log-check" in l), None), 10, "the access log line")
    assert "server.access" in line and "200 POST /v1/chat/completions model=kimi account=acct0" in line
    assert "ms id=access-log-check" in line and shared.API_KEY not in shared.server_log.read_text()


def test_temperature_out_of_its_range_says_so(shared):
    error = _envelope(shared.post({"model": "kimi", "messages": USER, "temperature": 5}), 400)
    assert error["param"] == "temperature" and "out of range" in error["message"]
    assert "Invalid type" not in error["message"]
    error = _envelope(shared.post({"model": "kimi", "messages": USER, "temperature": "hot"}), 400)
    assert "Invalid type" in error["message"]


def test_readiness_is_503_with_a_reason_while_no_account_is_usable_and_liveness_stays_200(shared):
    ready = requests.get(shared.url + "/health/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    doc = read_json(shared.config_path)
    doc["accounts"][0]["enabled"] = False
    write_json(shared.config_path, doc)
    try:
        wait_until(lambda: requests.get(shared.url + "/health/ready", timeout=10).status_code == 503, 10,
                   "readiness to drop")
        ready = requests.get(shared.url + "/health/ready", timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready" and body["reason"] == "no Kimi account is usable"
        assert body["accounts"] == {"total": 1, "usable": 0, "disabled": 1} and body["refresher_alive"] is False
        assert shared.API_KEY not in ready.text and "acct0" not in ready.text
        assert requests.head(shared.url + "/health/ready", timeout=10).status_code == 503
        assert requests.get(shared.url + "/health", timeout=10).status_code == 200
    finally:
        doc["accounts"][0]["enabled"] = True
        write_json(shared.config_path, doc)
        wait_until(lambda: requests.get(shared.url + "/health/ready", timeout=10).status_code == 200, 10, "ready")


def test_without_a_refresher_an_expired_token_is_a_503_at_once_and_a_warning_at_start(tmp_path):
    """refresh_wait_seconds is far beyond the client's timeout: waiting for nobody would time the client out."""
    emulator = Emulator(tmp_path)
    try:
        account = emulator.new_account()
        path, port = tmp_path / "config.json", free_port()
        write_json(path, {"api_keys": ["sk-first-hour"], "upstream": {"base_url": emulator.url},
                          "server": {"host": "127.0.0.1", "port": port, "refresh_wait_seconds": 600},
                          "accounts": [{"name": "main", "refresh_token": account["refresh_token"],
                                        "access_token": _expired_jwt()}]})
        log = tmp_path / "server.log"
        with open(log, "wb") as sink:
            server = spawn("server", "--config", str(path), stderr=sink)
        try:
            url = f"http://127.0.0.1:{port}"
            # One line, written in one go after the "listening" one.
            wait_until(lambda: "no Kimi account is usable" in log.read_text(), 30, "the start-up warning")
            text = log.read_text()
            assert "'main': its access token expired" in text
            assert "no refresher is running" in text
            response = requests.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-first-hour"},
                                     json={"model": "kimi", "messages": USER}, timeout=30)
            assert _envelope(response, 503)["code"] == "no_available_account"
            assert read_json(path)["accounts"][0]["status"]["refresh_requested"]   # still asked, for a later refresher
        finally:
            assert stop(server) == 0
    finally:
        emulator.close()


def test_the_example_config_on_a_public_address_refuses_to_start_until_the_key_is_changed(tmp_path):
    path = tmp_path / "config.json"
    shutil.copy(f"{ROOT}/config.example.json", path)
    proc = spawn("server", "--config", str(path), "--port", str(free_port()), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "sk-change-me" in err and "api_keys" in err and "Traceback" not in err
    # On loopback it is only a local test: allowed.
    port = free_port()
    proc = spawn("server", "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
                 stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), 30, "the server on loopback")
    finally:
        assert stop(proc) == 0


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_log_format_json_gives_one_object_per_line_with_the_access_fields(tmp_path):
    stack = Stack(tmp_path, server_env={})
    stop(stack.server)
    stack._log_file.close()
    log = tmp_path / "json.log"
    with open(log, "wb") as sink:
        stack.server = spawn("server", "--config", str(stack.config_path), "--log-format", "json", stderr=sink)
    stack._log_file = open(log, "ab")
    try:
        wait_until(stack._healthy, 30, "the server")
        assert stack.post({"model": "kimi", "messages": USER}, headers={"X-Request-Id": "json-1"}).status_code == 200

        def access() -> dict | None:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return next((r for r in lines if r.get("request_id") == "json-1"), None)
        record = wait_until(access, 10, "the JSON access line")
        assert record["logger"] == "server.access" and record["level"] == "INFO"
        assert {k: record[k] for k in ("method", "path", "status", "model", "account")} == {
            "method": "POST", "path": "/v1/chat/completions", "status": 200, "model": "kimi", "account": "acct0"}
        assert record["duration_ms"] >= 0 and record["time"]
        # A key sent as a request id (sane by its characters) is still never logged.
        assert stack.post({"model": "kimi", "messages": USER}, headers={"X-Request-Id": stack.API_KEY}).status_code == 200
        from common.redact import fingerprint
        wait_until(lambda: f'"request_id":"{fingerprint(stack.API_KEY)}"' in log.read_text(), 10, "the scrubbed id")
        assert stack.API_KEY not in log.read_text()
    finally:
        stack.close()


def test_an_upper_case_http_scheme_in_base_url_works(tmp_path):
    stack = Stack(tmp_path)
    try:
        stop(stack.server)
        stack._log_file.close()
        doc = read_json(stack.config_path)
        doc["upstream"]["base_url"] = stack.emulator.url.replace("http://", "HTTP://")
        write_json(stack.config_path, doc)
        stack.start_server()
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 200, response.text
    finally:
        stack.close()


def test_an_upper_case_http_scheme_in_a_file_url_is_fetched(tmp_path):
    import http.server
    import threading
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(pdf)))
            self.end_headers()
            self.wfile.write(pdf)

        def log_message(self, *_args):
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    port = files.server_address[1]
    stack = Stack(tmp_path, server_env={"KIMI_BRIDGE_TESTING_FETCH_ALLOW": f"127.0.0.1:{port}"})
    try:
        response = stack.post({"model": "kimi", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read"}, {"type": "file", "file_url": {"url": f"HTTP://127.0.0.1:{port}/a.pdf"}}]}]})
        assert response.status_code == 200, response.text
        assert stack.emulator.admin_get("files")[-1]["size"] == len(pdf)
    finally:
        stack.close()
        files.shutdown()
