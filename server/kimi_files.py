"""Kimi's upload flow: pre-sign, PUT the bytes, register the file, wait for a document to be parsed."""

from __future__ import annotations

import time

import orjson

from common.kimi_sse import SseParser
from server.attachments import Blob
from server.errors import ApiError, UpstreamError, UpstreamTimeout
from server.kimi_client import KimiClient


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
                    raise ApiError(400, f"Kimi could not read the file {name!r}: "
                                   f"{info.get('failed_reason') or 'parsing failed'}.", code="file_unreadable")
    finally:
        response.close()
