"""Device strings (usernames, client ids, context) come from strangers: make them safe to print."""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates can reorder the rest of a terminal line.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")

_ZWJ = "\u200d"  # joins emoji sequences: harmless, keep it


def printable(text: object, limit: int | None = None) -> str:
    """Control and bidi-control characters shown as escapes; optionally cut to `limit` characters."""
    if text is None:
        return ""
    out = []
    for ch in str(text):
        if ch in _BIDI_CONTROLS or (unicodedata.category(ch) in ("Cc", "Cf", "Cs") and ch != _ZWJ):
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    result = "".join(out)
    if limit is not None and len(result) > limit:
        return result[: max(0, limit - 1)] + "…"
    return result
