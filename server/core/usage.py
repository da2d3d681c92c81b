"""An honest token estimate from text (Kimi's web chat reports no usage)."""

from __future__ import annotations

import math
import re

# CJK ideographs, kana and hangul: about one token each in Moonshot's tokenizer.
_WIDE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """Wide characters count one token each, everything else one per four characters (rounded up)."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / 4)
