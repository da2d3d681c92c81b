"""Keep secrets out of logs: fingerprints, and a logging filter that scrubs what slips through."""

from __future__ import annotations

import functools
import hashlib
import logging
import re

# A JWT: three base64url segments, the first two starting with `eyJ` ('{"' encoded).
_JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# `Bearer <anything>` in a header dump.
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)([^\s'\",]+)")


@functools.lru_cache(maxsize=256)
def fingerprint(secret: str | None) -> str:
    """A short, stable, non-reversible label for a secret, safe to log: `fp:1a2b3c4d` (cached: asked per request)."""
    if not secret:
        return "fp:none"
    return "fp:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class SecretScrubber(logging.Filter):
    """Replace JWTs, bearer values and registered secrets in every record with fingerprints."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def register(self, *secrets: str) -> None:
        """Also scrub these exact strings (API keys are not JWT-shaped)."""
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def scrub(self, text: str) -> str:
        """Return `text` with every secret replaced by its fingerprint."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, fingerprint(secret))
        text = _JWT_PATTERN.sub(lambda m: fingerprint(m.group(0)), text)
        return _BEARER_PATTERN.sub(lambda m: m.group(1) + fingerprint(m.group(2)), text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.scrub(message)
        if record.exc_info and record.exc_text is None:
            # Format the traceback now so that it is scrubbed too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


SCRUBBER = SecretScrubber()
