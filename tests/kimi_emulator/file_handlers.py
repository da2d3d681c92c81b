"""Kimi's file flow (kimi-protocol.md §2.10, §4 items 17-19): pre-sign, PUT, register, parse_process."""

from __future__ import annotations

import hashlib

import orjson

from tests.kimi_emulator.base import EmulatorHandler, KimiError
from tests.kimi_emulator.tokens import xid


class PreSignHandler(EmulatorHandler):
    """POST /api/pre-sign-url {"action": "image"|"file", "name"} -> a PUT URL on this emulator."""

    endpoint = "pre_sign"

    async def post(self) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        self.authenticated_user()
        name = body.get("name")
        if body.get("action") not in ("image", "file") or not isinstance(name, str) or not name:
            raise KimiError(400, "validation.error", "参数验证错误", ["action and name are required"])
        object_name = f"{xid()}/{name}"
        file_id = xid()
        self.state.uploads[object_name] = {"file_id": file_id, "data": None, "content_type": ""}
        url = f"{self.request.protocol}://{self.request.host}/_upload/{object_name}"
        self.send_json({"url": url, "object_name": object_name, "file_id": file_id})


class UploadHandler(EmulatorHandler):
    """PUT <presigned url>: the object store (no auth, as a presigned URL)."""

    endpoint = "upload"

    async def put(self, object_name: str) -> None:
        if not await self.before():
            return
        upload = self.state.uploads.get(object_name)
        if upload is None:
            raise KimiError(403, "storage.denied", "signature does not match")
        upload["data"] = self.request.body
        upload["content_type"] = self.request.headers.get("Content-Type", "")
        self.send_json({})


class FileHandler(EmulatorHandler):
    """POST /api/file: register an uploaded object as an image or a document."""

    endpoint = "file"

    async def post(self) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        self.authenticated_user()
        kind = body.get("type")
        upload = None
        if kind == "image":
            upload = next((u for u in self.state.uploads.values() if u["file_id"] == body.get("file_id")), None)
        elif kind == "file":
            upload = self.state.uploads.get(str(body.get("object_name")))
            if body.get("chat_id") not in self.state.chats:
                raise KimiError(404, "chat.not_found", "找不到指定的会话")
        if upload is None or upload["data"] is None:
            raise KimiError(400, "file.not_uploaded", "文件未上传")
        record = {"id": upload["file_id"], "name": str(body.get("name") or ""), "type": kind,
                  "size": len(upload["data"]), "content_type": upload["content_type"],
                  "status": "parsed" if kind == "image" else "initialized",
                  "sha256": hashlib.sha256(upload["data"]).hexdigest(), "created_at": int(self.state.clock.now())}
        self.state.files[record["id"]] = record
        self.send_json({k: v for k, v in record.items() if k != "sha256"})


class ParseProcessHandler(EmulatorHandler):
    """POST /api/file/parse_process {"ids"}: an SSE answer per file, parsed or failed."""

    endpoint = "parse_process"

    async def post(self) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        self.authenticated_user()
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids:
            raise KimiError(400, "validation.error", "参数验证错误", ["ids"])
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        for file_id in ids:
            record = self.state.files.get(file_id)
            if record is None:
                raise KimiError(404, "file.not_found", "文件不存在")
            record["status"] = "failed" if self.state.faults.parse_fail else "parsed"
            info = {k: v for k, v in record.items() if k != "sha256"}
            if record["status"] == "failed":
                info["failed_reason"] = "injected parse failure"
            self.write(b"data: " + orjson.dumps({"event": "resp", "id": file_id, "status": record["status"],
                                                 "file_info": info}) + b"\n\n")
            await self.flush()
        self.finish()
