"""Kimi's 2026 file flow (kimi-protocol-2026-12.md §3.1): multipart upload, GetFileParseProgress, file blocks."""

from __future__ import annotations

import datetime
import hashlib
import os

import orjson
import tornado.httputil

from tests.kimi_emulator.base import EmulatorHandler
from tests.kimi_emulator.state import EmulatorState
from tests.kimi_emulator.tokens import AuthError, xid

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"


class _ConnectFileHandler(EmulatorHandler):
    """Plain-HTTP Connect-style calls: errors are `{"code", "message"}` with a non-2xx status."""

    def connect_user(self) -> str | None:
        """The caller's user id, or None after answering 401 unauthenticated."""
        try:
            return self.state.tokens.user_for_access(self.bearer())
        except AuthError:
            self.send_json({"code": "unauthenticated", "message": "token is expired"}, 401)
            return None


class UploadHandler(_ConnectFileHandler):
    """POST /apiv2-files/file/upload, multipart field `file`: the `{"file": {id, meta, blob, parseResult}}` record."""

    endpoint = "connect_file_upload"

    async def post(self) -> None:
        args: dict = {}
        files: dict = {}
        tornado.httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), self.request.body,
                                              args, files)
        part = (files.get("file") or [None])[0]
        received = {"fields": sorted(files) + sorted(args),
                    "file": {"filename": part.filename, "content_type": part.content_type, "size": len(part.body)}
                    if part else None}
        if not await self.before(received):
            return
        user_id = self.connect_user()
        if user_id is None:
            return
        if part is None or not part.filename or not part.body:
            self.send_json({"code": "invalid_argument", "message": "multipart field 'file' is required"}, 400)
            return
        image = part.content_type.startswith("image/")
        record = {"id": xid(), "name": part.filename, "type": "image" if image else "file", "size": len(part.body),
                  "content_type": part.content_type, "status": "initialized", "protocol": "connect",
                  "user_id": user_id, "polls": 0, "sha256": hashlib.sha256(part.body).hexdigest(),
                  "created_at": int(self.state.clock.now())}
        self.state.files[record["id"]] = record
        stamp = datetime.datetime.fromtimestamp(record["created_at"], datetime.timezone.utc).isoformat()
        signed = f"{self.request.protocol}://{self.request.host}/apiv2-files/sign-obj/kimi-fs%2Ffiles%2Fblob%2F" \
                 f"{record['sha256']}?filename={part.filename}&sig=emulated&t=o"
        self.send_json({"file": {
            "id": record["id"],
            "meta": {"name": part.filename, "contentType": part.content_type, "sizeBytes": str(len(part.body)),
                     "checksum": record["sha256"], "ext": os.path.splitext(part.filename)[1].lstrip("."),
                     "createTime": stamp, "type": "FILE_TYPE_IMAGE" if image else "FILE_TYPE_DOCUMENT"},
            "blob": {"signUrl": signed, "previewUrl": ""}, "parseResult": {}}})


class ProgressHandler(_ConnectFileHandler):
    """GetFileParseProgress `{"file_ids"}`: PROCESSING for `parse_polls` calls, then SUCCESS (or the faults)."""

    endpoint = "connect_file_progress"

    async def post(self) -> None:
        try:
            body = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError:
            body = None
        if not await self.before(body):
            return
        user_id = self.connect_user()
        if user_id is None:
            return
        ids = (body.get("file_ids") or body.get("fileIds")) if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            self.send_json({"code": "invalid_argument", "message": "file_ids is required"}, 400)
            return
        progresses = []
        for file_id in ids:
            record = self.state.files.get(file_id)
            if record is None or record.get("user_id") != user_id:
                self.send_json({"code": "not_found", "message": f"file {file_id} not found"}, 404)
                return
            progresses.append({"fileId": file_id, "status": self._advance(record)})
        self.send_json({"progresses": progresses})

    def _advance(self, record: dict) -> str:
        """One poll's status for `record`, per the parse faults."""
        faults = self.state.faults
        record["polls"] += 1
        if faults.parse_fail:
            record["status"] = "failed"
            return "PROCESS_STATUS_FAILED"
        if faults.parse_stall or record["polls"] <= faults.parse_polls:
            return "PROCESS_STATUS_PROCESSING"
        record["status"] = "parsed"
        return "PROCESS_STATUS_SUCCESS"


def files_note(state: EmulatorState, user_id: str, blocks: list) -> str:
    """` [files: a, b]` for the message's file blocks; ConnectError for a file that is unknown or not ready."""
    from tests.kimi_emulator.connect import ConnectError   # connect.py imports this module
    names = []
    for block in blocks:
        file = block.get("file") if isinstance(block, dict) else None
        if not isinstance(file, dict):
            continue
        record = state.files.get(str(file.get("id") or ""))
        if record is None or record.get("user_id") != user_id:
            raise ConnectError("invalid_argument", f"unknown file {file.get('id')!r}")
        if record["status"] != "parsed" or file.get("status") != "PROCESS_STATUS_SUCCESS":
            raise ConnectError("failed_precondition", f"file {record['id']} is not processed")
        names.append(record["name"])
    return " [files: " + ", ".join(names) + "]" if names else ""
