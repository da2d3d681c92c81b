"""Images and files in user messages: decode or download them, check type and size, name them."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
from urllib.parse import unquote, urlsplit

from server.core.attachments import Attachment, Blob
from server.core.errors import BAD_REQUEST, Failure
from server.upstream.safe_fetch import FetchFailed, FetchRefused, SafeFetcher

IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif", "image/svg+xml",
               "image/heic", "image/heif", "image/tiff"}
DOCUMENT_TYPES = {
    "application/pdf", "text/plain", "text/markdown", "text/csv", "text/html", "application/json", "text/xml",
    "application/xml", "application/x-yaml", "text/yaml", "application/epub+zip", "application/x-mobipocket-ebook",
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "text/x-python", "text/x-c", "text/javascript", "application/javascript", "text/x-java-source",
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+/-]*)(?P<params>(?:;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$",
                       re.DOTALL)


async def load(attachment: Attachment, fetcher: SafeFetcher, max_bytes: int) -> Blob:
    """Decode or download one attachment; a 400 that names the part for anything wrong with it."""
    source = attachment.source.strip()
    if source.startswith("data:"):
        declared, data = _decode_data_url(source, attachment.param)
        name_hint = ""
    elif source[:8].lower().startswith(("http://", "https://")):   # a scheme is case-insensitive
        try:
            fetched = await fetcher.fetch(source)
        except FetchRefused as exc:
            raise Failure(BAD_REQUEST, f"Refused to fetch the URL in '{attachment.param}': {exc}.",
                          field=attachment.param, code="url_refused") from None
        except FetchFailed as exc:
            raise Failure(BAD_REQUEST, f"Could not fetch the URL in '{attachment.param}': {exc}.",
                          field=attachment.param, code="url_unreachable") from None
        declared, data = fetched.content_type, fetched.data
        name_hint = os.path.basename(unquote(urlsplit(fetched.url).path))
    else:
        declared, data = "", _b64(source, attachment.param)
        name_hint = ""
    if len(data) > max_bytes:
        raise Failure(BAD_REQUEST, f"The file in '{attachment.param}' is {len(data)} bytes; the limit is {max_bytes}.",
                      field=attachment.param, code="file_too_large")
    if not data:
        raise Failure(BAD_REQUEST, f"The file in '{attachment.param}' is empty.", field=attachment.param,
                      code="invalid_value")
    name = attachment.filename or name_hint
    content_type = _content_type(declared, name, data)
    allowed = IMAGE_TYPES if attachment.kind == "image" else IMAGE_TYPES | DOCUMENT_TYPES
    if content_type not in allowed:
        what = "an image" if attachment.kind == "image" else "a supported file"
        raise Failure(BAD_REQUEST, f"'{attachment.param}' is {content_type or 'of an unknown type'}, not {what}.",
                      field=attachment.param, code="unsupported_file_type")
    kind = "image" if content_type in IMAGE_TYPES else "file"
    if not name:
        name = ("image" if kind == "image" else "file") + (mimetypes.guess_extension(content_type) or "")
    return Blob(kind, name, content_type, data)


def _decode_data_url(url: str, param: str) -> tuple[str, bytes]:
    match = _DATA_URL.match(url)
    if match is None:
        raise Failure(BAD_REQUEST, f"'{param}' is not a valid data: URL.", field=param, code="invalid_value")
    if match["b64"]:
        return match["type"].lower(), _b64(match["data"], param)
    return match["type"].lower(), unquote(match["data"]).encode()


def _b64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Failure(BAD_REQUEST, f"'{param}' is not valid base64.", field=param, code="invalid_base64") from None


def _content_type(declared: str, name: str, data: bytes) -> str:
    if declared and declared != "application/octet-stream":
        return declared
    sniffed = _sniff(data)
    if sniffed:
        return sniffed
    guessed = mimetypes.guess_type(name)[0] if name else None
    return (guessed or declared or "").lower()


def _sniff(data: bytes) -> str:
    """The few magic numbers worth knowing when a caller gives no type."""
    signatures = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                  (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
    for magic, content_type in signatures:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""
