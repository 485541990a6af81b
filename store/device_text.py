"""Device text (usernames, client ids, peers, context) comes from strangers: the one place that makes it safe
to print, on a terminal (:func:`printable`) and in a log line (:func:`quoted`, :func:`escaped`)."""

from __future__ import annotations

import unicodedata

# Control characters move the cursor; format characters include the bidi overrides and isolates, which
# reorder the rest of a terminal line; line and paragraph separators start a new one.
_ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")
_ZWJ = "\u200d"  # joins emoji sequences: harmless on a terminal, keep it


def printable(text: object, limit: int | None = None) -> str:
    """For a terminal (CLI, dashboard): control and bidi-control characters shown as escapes; optionally cut
    to ``limit`` characters."""
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


def _text(value: object) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def quoted(value: object, limit: int = 80) -> str:
    """For a log line: a device string as one quoted, escaped, bounded token (``-`` for none)."""
    if value is None:
        return "-"
    text = _text(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def escaped(value: object) -> str:
    """For a log line: a whole line someone else wrote (Mosquitto's, holding client ids) escaped as
    :func:`quoted` escapes, without the quotes: control, format (bidi) and line-separator characters become
    ``\\x1b``, ``\\u202e``, ``\\u2028``."""
    return repr(_text(value))[1:-1]
