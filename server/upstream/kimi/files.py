"""Kimi's upload flows: REST (pre-sign, PUT, register, parse_process) and Connect (multipart upload, then
GetFileParseProgress polled until the file is usable; kimi-protocol-2026-12.md §3.1)."""

from __future__ import annotations

import asyncio
import secrets
import time

import orjson

from common.kimi_sse import SseParser
from server.core.attachments import Blob
from server.core.errors import BAD_REQUEST, Failure
from server.upstream.errors import UpstreamError, UpstreamTimeout
from server.upstream.kimi.client import KimiClient, json_or_none
from server.upstream.kimi.connect.errors import unary_error

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
FIRST_POLL, LAST_POLL = 0.2, 1.0   # seconds between progress polls: quick at first, then as the web app does


async def upload(kimi: KimiClient, access_token: str, chat_id: str, blob: Blob, parse_timeout: float) -> dict:
    """Upload one blob into `chat_id`; return Kimi's file record once it is usable."""
    action = "image" if blob.kind == "image" else "file"
    signed = await kimi.call_json("POST", "/api/pre-sign-url", access_token, {"action": action, "name": blob.name})
    url, object_name, file_id = signed.get("url"), signed.get("object_name"), signed.get("file_id")
    if not isinstance(url, str) or not isinstance(object_name, str):
        raise UpstreamError("pre-sign-url returned no upload URL")
    await _put(kimi, url, blob)
    if blob.kind == "image":
        record = await kimi.call_json("POST", "/api/file", access_token,
                                      {"type": "image", "file_id": file_id, "name": blob.name,
                                       "size": len(blob.data), "object_name": object_name})
    else:
        record = await kimi.call_json("POST", "/api/file", access_token,
                                      {"type": "file", "name": blob.name, "object_name": object_name,
                                       "file_id": file_id or "", "chat_id": chat_id})
        if record.get("status") != "parsed":
            record = await _wait_parsed(kimi, access_token, record, blob.name, parse_timeout)
    if not isinstance(record.get("id"), str):
        raise UpstreamError("registering the file returned no id")
    return record


def refs_file_entry(record: dict) -> dict:
    """The `refs_file` item the web app sends for an attached file (kimi-protocol.md §2.5)."""
    return {"detail": record, "done": True, "file": {}, "file_info": record, "id": record["id"],
            "name": record.get("name", ""), "parse_status": "success", "size": record.get("size", 0),
            "upload_progress": 100, "upload_status": "success"}


async def _put(kimi: KimiClient, url: str, blob: Blob) -> None:
    # A presigned URL carries its own signature: no Kimi headers go to the object store.
    response = await kimi.fetch(url, "PUT", {"Content-Type": blob.content_type}, blob.data,
                                f"uploading {blob.name!r}")
    if not 200 <= response.code < 300:
        raise UpstreamError(f"uploading {blob.name!r} answered HTTP {response.code}")


async def _wait_parsed(kimi: KimiClient, access_token: str, record: dict, name: str, timeout: float) -> dict:
    """Read parse_process's SSE until the file is parsed (or failed)."""
    file_id = record.get("id")
    deadline = time.monotonic() + timeout
    response = await kimi.open_stream(kimi.base_url + "/api/file/parse_process", kimi.headers(access_token),
                                      orjson.dumps({"ids": [file_id]}), timeout, "parse_process")
    parser = SseParser()
    try:
        if response.status != 200:
            raise UpstreamError(f"parse_process answered HTTP {response.status}")
        while True:
            try:
                chunk = await response.next_chunk(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise UpstreamTimeout(f"Kimi took longer than {timeout:g}s to read {name!r}") from None
            except ConnectionError:
                raise UpstreamError("parse_process broke off") from None
            if chunk is None:
                raise UpstreamError(f"parse_process ended without a verdict on {name!r}")
            for event in parser.feed(chunk):
                info = event.get("file_info") if isinstance(event.get("file_info"), dict) else {}
                status = event.get("status") or info.get("status")
                if event.get("id") != file_id and info.get("id") != file_id:
                    continue
                if status == "parsed":
                    return {**record, **info, "status": "parsed"}
                if status == "failed":
                    raise Failure(BAD_REQUEST, f"Kimi could not read the file {name!r}: "
                                  f"{info.get('failed_reason') or 'parsing failed'}.", code="file_unreadable")
    finally:
        response.close()


async def upload_over_connect(kimi: KimiClient, access_token: str, blob: Blob, parse_timeout: float) -> dict:
    """Upload one blob as the 2026 web app does; return its `file` record once Kimi has processed it."""
    boundary = "----kimibridge" + secrets.token_hex(12)
    headers = {**kimi.headers(access_token, "/?chat_enter_method=new_chat"),
               "Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "application/json"}
    response = await kimi.fetch(kimi.base_url + UPLOAD_PATH, "POST", headers, _multipart(boundary, blob),
                                f"uploading {blob.name!r}")
    data = json_or_none(response.body)
    if response.code != 200:
        raise unary_error(response.code, response.body or b"", f"uploading {blob.name!r}")
    record = data.get("file") if isinstance(data, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
        raise UpstreamError(f"uploading {blob.name!r} returned no file id")
    await _wait_processed(kimi, access_token, record["id"], blob.name, parse_timeout)
    return record


def file_block(record: dict) -> dict:
    """The message block that attaches an uploaded file, after the text block as the web app sends it."""
    return {"file": {"id": record["id"], "status": "PROCESS_STATUS_SUCCESS"}}


def _multipart(boundary: str, blob: Blob) -> bytes:
    """A multipart/form-data body with the one field `file`."""
    # As browsers do (WHATWG multipart/form-data): UTF-8 as is, only quotes and line breaks percent-encoded.
    name = blob.name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: {blob.content_type}\r\n\r\n").encode()
    return head + blob.data + f"\r\n--{boundary}--\r\n".encode()


async def _wait_processed(kimi: KimiClient, access_token: str, file_id: str, name: str, timeout: float) -> None:
    """Poll GetFileParseProgress until the file is PROCESS_STATUS_SUCCESS; a 400 if Kimi cannot read it."""
    headers = {**kimi.headers(access_token), "Connect-Protocol-Version": "1"}
    deadline, pause = time.monotonic() + timeout, FIRST_POLL
    while True:
        response = await kimi.fetch(kimi.base_url + PROGRESS_PATH, "POST", headers,
                                    orjson.dumps({"file_ids": [file_id]}), "GetFileParseProgress")
        if response.code != 200:
            raise unary_error(response.code, response.body or b"", "GetFileParseProgress")
        data = json_or_none(response.body)
        progresses = data.get("progresses") if isinstance(data, dict) else None
        progresses = progresses if isinstance(progresses, list) else []
        mine = next((p for p in progresses if isinstance(p, dict) and p.get("fileId") == file_id), {})
        status = mine.get("status")
        if status == "PROCESS_STATUS_SUCCESS":
            return
        if status == "PROCESS_STATUS_FAILED":
            reason = mine.get("failReason") or mine.get("fail_reason") or "processing failed"
            raise Failure(BAD_REQUEST, f"Kimi could not read the file {name!r}: {reason}.", code="file_unreadable")
        if time.monotonic() + pause > deadline:
            raise UpstreamTimeout(f"Kimi took longer than {timeout:g}s to read {name!r}")
        await asyncio.sleep(pause)   # Kimi is still processing: ask again shortly, as the web app does
        pause = min(LAST_POLL, pause * 2)
