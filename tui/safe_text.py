"""Device strings (usernames, client ids, context) come from strangers: make them safe to print."""

from __future__ import annotations

import unicodedata

# Control characters move the cursor; format characters include the bidi overrides and isolates, which
# reorder the rest of a terminal line; line and paragraph separators start a new one.
_ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")
_ZWJ = "\u200d"  # joins emoji sequences: harmless, keep it


def printable(text: object, limit: int | None = None) -> str:
    """Control and bidi-control characters shown as escapes; optionally cut to `limit` characters."""
    if text is None:
        return ""
    result = str(text)
    if not result.isprintable():  # the common case skips the per-character look-up
        result = "".join(
            ascii(ch)[1:-1] if unicodedata.category(ch) in _ESCAPED_CATEGORIES and ch != _ZWJ else ch
            for ch in result)
    if limit is not None and len(result) > limit:
        return result[: max(0, limit - 1)] + "…"
    return result
