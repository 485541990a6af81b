"""Making device-supplied strings safe to show, and formatting times.

Everything that came from a device (usernames, client ids, peers, context) goes
through :func:`safe_text` before it reaches a widget: the result is a
``rich.text.Text`` (so Rich markup is never interpreted), control and
bidirectional-formatting characters are shown as visible escapes (so they
cannot move the cursor or reverse the line), and very long strings are cut.
"""

from __future__ import annotations

import time
import unicodedata

from rich.text import Text

#: Unicode categories that must never reach the terminal raw: controls,
#: format characters (bidi overrides, zero-width joiners), line/paragraph
#: separators, surrogates.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def clean(value: object, limit: int | None = 64) -> str:
    """Return a printable, single-line version of ``value``."""
    if value is None:
        return ""
    s = str(value)
    out: list[str] = []
    for ch in s:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    result = "".join(out)
    if limit is not None and len(result) > limit:
        result = result[: max(1, limit - 1)] + "…"
    return result


def safe_text(value: object, limit: int | None = 64, style: str = "") -> Text:
    """A ``Text`` showing ``value`` literally (no markup), escaped and cut to ``limit``."""
    return Text(clean(value, limit), style=style, no_wrap=True, overflow="ellipsis")


def ago(then: float | None, now: float) -> str:
    """A short relative age: ``now``, ``12s``, ``5m``, ``3h``, ``2d``."""
    if not then:
        return "—"
    delta = now - then
    if delta < 0:
        delta = 0
    if delta < 2:
        return "now"
    if delta < 60:
        return f"{int(delta)}s"
    if delta < 3600:
        return f"{int(delta // 60)}m"
    if delta < 86400:
        return f"{int(delta // 3600)}h"
    return f"{int(delta // 86400)}d"


def countdown(seconds: float) -> str:
    """``m:ss`` for a remaining window (rounded up, so 0:00 only when closed)."""
    total = max(0, int(seconds + 0.999))
    return f"{total // 60}:{total % 60:02d}"


def stamp(t: float | None) -> str:
    """An absolute local timestamp for the details panel."""
    if not t:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
