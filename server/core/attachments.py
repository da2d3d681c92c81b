"""An image or file part as the caller sent it, and its bytes once loaded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attachment:
    """An image or file part as the caller sent it (validated for shape by the schema)."""

    kind: str        # "image" or "file"
    source: str      # a data: URL, an http(s) URL, or bare base64
    filename: str
    param: str       # where it sat in the request, for error messages


@dataclass(frozen=True)
class Blob:
    """An attachment's bytes, ready to upload."""

    kind: str
    name: str
    content_type: str
    data: bytes
