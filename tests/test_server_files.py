"""Images and files: base64, data URLs and fetched URLs reach Kimi byte-exact over REST and Connect; every
refusal is clear; SSRF-safe."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import ipaddress
import socket
import threading

import pytest

from server.upstream.safe_fetch import FetchRefused, SafeFetcher, public_address
from tests.helpers import Stack

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)


class _Files(http.server.BaseHTTPRequestHandler):
    """A stand-in for a public web server: a PDF, and a redirect into our own network."""

    target = ""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path == "/doc.pdf":
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(PDF)))
            self.end_headers()
            self.wfile.write(PDF)
        elif self.path == "/hang-up":
            self.close_connection = True   # no answer at all
        elif self.path == "/to-loopback":
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *_args):
        pass


class _Listener:
    """A TCP listener on 127.0.0.1 that counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module", params=["rest", "connect"])
def world(tmp_path_factory, request):
    listener = _Listener()
    _Files.target = f"http://127.0.0.1:{listener.port}/secret"
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    files_port = files.server_address[1]
    stack = Stack(tmp_path_factory.mktemp("files"), protocol=request.param,
                  server={"fetch_allowed_ports": f"80,443,{listener.port}", "max_file_bytes": 100_000},
                  upstream={"parse_timeout": 2.0},
                  server_env={"KIMI_BRIDGE_TESTING_FETCH_ALLOW": f"127.0.0.1:{files_port}"})
    yield {"stack": stack, "listener": listener, "files": f"http://127.0.0.1:{files_port}"}
    stack.close()
    files.shutdown()
    listener.sock.close()


def _ask(stack, parts: list, model: str = "kimi"):
    return stack.post({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look at this"}, *parts]}]})


def _newest_file(stack) -> dict:
    return stack.emulator.admin_get("files")[-1]


def _check_reached_kimi(stack, response, data: bytes, name: str, kind: str) -> None:
    assert response.status_code == 200, response.text
    record = _newest_file(stack)
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert record["type"] == kind and record["name"] == name and record["status"] == "parsed"
    if stack.protocol == "rest":
        sent = stack.emulator.received("completion")[-1]["body"]
        assert sent["refs"] == [record["id"]] and sent["refs_file"][0]["id"] == record["id"]
    else:
        # Uploaded as multipart field "file", polled until processed, then a file block after the text block.
        upload = stack.emulator.received("connect_file_upload")[-1]["body"]
        assert upload["fields"] == ["file"] and upload["file"]["filename"] == name
        polled = stack.emulator.received("connect_file_progress")[-1]["body"]
        assert polled == {"file_ids": [record["id"]]} and record["polls"] >= 2   # PROCESSING first, then SUCCESS
        blocks = stack.emulator.received("connect_chat")[-1]["body"]["message"]["blocks"]
        assert blocks[0]["text"]["content"] and blocks[1:] == [
            {"file": {"id": record["id"], "status": "PROCESS_STATUS_SUCCESS"}}]
    assert response.json()["choices"][0]["message"]["content"].endswith(f"[files: {name}]")


def test_a_pdf_sent_as_base64_reaches_kimi_byte_exact(world):
    stack = world["stack"]
    part = {"type": "file", "file": {"filename": "report.pdf",
                                     "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode()}}
    _check_reached_kimi(stack, _ask(stack, [part]), PDF, "report.pdf", "file")
    bare = {"type": "file", "file": {"filename": "raw.pdf", "file_data": base64.b64encode(PDF).decode()}}
    _check_reached_kimi(stack, _ask(stack, [bare]), PDF, "raw.pdf", "file")


def test_an_image_sent_as_a_data_url_reaches_kimi_byte_exact(world):
    stack = world["stack"]
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    _check_reached_kimi(stack, _ask(stack, [part]), PNG, "image.png", "image")


def test_a_file_url_is_fetched_and_reaches_kimi_byte_exact(world):
    stack = world["stack"]
    part = {"type": "file", "file_url": {"url": world["files"] + "/doc.pdf"}}
    _check_reached_kimi(stack, _ask(stack, [part]), PDF, "doc.pdf", "file")


@pytest.mark.parametrize("part,code", [
    ({"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,@@@not-base64"}},
     "invalid_base64"),
    ({"type": "file", "file": {"filename": "a.exe", "file_data": "data:application/x-msdownload;base64,TVqQAAM="}},
     "unsupported_file_type"),
    ({"type": "image_url", "image_url": {"url": "data:application/pdf;base64," + base64.b64encode(PDF).decode()}},
     "unsupported_file_type"),
    ({"type": "file", "file": {"filename": "big.pdf",
                               "file_data": base64.b64encode(b"%PDF-" + bytes(200_000)).decode()}}, "file_too_large"),
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "invalid_value"),
    ({"type": "file", "file": {"file_id": "file-abc"}}, "invalid_value"),
])
def test_every_refusal_is_a_clear_400(world, part, code):
    response = _ask(world["stack"], [part])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"].startswith("messages[0].content[1]")


@contextlib.contextmanager
def emulator_switch(stack, name: str):
    """Turn one of the emulator's file settings on for the body of a with block, and off again after it."""
    stack.emulator.admin("settings", {name: True})
    try:
        yield
    finally:
        stack.emulator.admin("settings", {name: False})


def test_a_url_whose_server_hangs_up_is_a_clear_400(world):
    response = _ask(world["stack"], [{"type": "file", "file_url": {"url": world["files"] + "/hang-up"}}])
    assert response.status_code == 400 and response.json()["error"]["code"] == "url_unreachable"


def test_a_document_kimi_cannot_parse_is_a_clear_error(world):
    stack = world["stack"]
    part = {"type": "file", "file": {"filename": "broken.pdf", "file_data": base64.b64encode(PDF).decode()}}
    with emulator_switch(stack, "parse_fail"):
        response = _ask(stack, [part])
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_unreadable"
    assert "broken.pdf" in response.json()["error"]["message"]


def test_ssrf_table_leaves_a_loopback_listener_untouched(world):
    stack, port = world["stack"], world["listener"].port
    urls = [f"http://{host}:{port}/secret" for host in (
        "127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "2130706433", "0x7f000001",
        "0177.0.0.1", "127.1", "127.0.0.2", "0.0.0.0", "0")]
    urls += [world["files"] + "/to-loopback", f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/closed-port"]
    for url in urls:
        response = _ask(stack, [{"type": "image_url", "image_url": {"url": url}}])
        assert response.status_code == 400, (url, response.text)
        assert response.json()["error"]["code"] == "url_refused", (url, response.json())
        assert "secret" not in response.json()["error"]["message"]
    assert world["listener"].connections == 0


@pytest.mark.parametrize("address,public", [
    ("169.254.169.254", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("100.64.0.1", False), ("127.0.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False),
    ("fc00::1", False), ("fe80::1", False), ("::ffff:10.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("64:ff9b::a00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b:1::1", False), ("2002:7f00:1::", False),
    ("2001::1", False), ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700::1111", True), ("64:ff9b::808:808", True),
    ("::ffff:8.8.8.8", True),
])
def test_address_classification(address, public):
    assert public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http://example.com:8080/x",
                                 "http://user:pw@example.com/x", "gopher://example.com/", "http:///x"])
def test_urls_refused_before_any_lookup(url):
    fetcher = SafeFetcher(1000, 5, frozenset({80, 443}), environ={})
    with pytest.raises(FetchRefused):
        fetcher._check_url(url)


def test_a_document_kimi_never_finishes_reading_times_out(world):
    stack = world["stack"]
    part = {"type": "file", "file": {"filename": "slow.pdf", "file_data": base64.b64encode(PDF).decode()}}
    with emulator_switch(stack, "parse_stall"):
        response = _ask(stack, [part])
    if stack.protocol == "rest":   # the REST emulator parses at once: nothing to wait for
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert "slow.pdf" in response.json()["error"]["message"]


def test_an_upload_kimi_refuses_is_a_clear_error(world):
    stack = world["stack"]
    endpoint = "pre_sign" if stack.protocol == "rest" else "connect_file_upload"
    stack.emulator.fault(endpoint, status=500, times=3, body={"code": "internal", "message": "injected"})
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    response = _ask(stack, [part])
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    assert "injected" not in response.text


def test_a_file_in_the_second_turn_of_a_conversation(world):
    stack = world["stack"]
    first = stack.post({"model": "kimi", "conversation_id": "new", "messages": [{"role": "user", "content": "hi"}]})
    assert first.status_code == 200, first.text
    part = {"type": "file", "file": {"filename": "second.pdf", "file_data": base64.b64encode(PDF).decode()}}
    second = stack.post({"model": "kimi", "conversation_id": first.json()["id"], "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "and this?"}, part]}]})
    assert second.status_code == 200, second.text
    content = second.json()["choices"][0]["message"]["content"]
    assert "turn 2: and this?" in content and content.endswith("[files: second.pdf]")
