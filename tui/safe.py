"""Device-supplied strings as widgets show them, and absolute times.

Everything that came from a device (usernames, client ids, peers, context) goes through :func:`safe_text`
before it reaches a widget: the result is a ``rich.text.Text`` (so Rich markup is never interpreted), escaped
as ``store.device_text.printable`` escapes it (control and bidirectional-formatting characters shown as visible
escapes, so they cannot move the cursor or reverse the line), and very long strings are cut.
"""

from __future__ import annotations

import time

from rich.text import Text

from store.device_text import printable
from store.names import suspicious_characters

LOOKALIKE_MARKER = "⚠"  # before a name that may pass for another one (store.names)
LOOKALIKE_STYLE = "bold #ffaf00"
SUSPICIOUS_STYLE = "bold reverse #ffaf00"  # the characters that make it so


def safe_text(value: object, limit: int | None = 64, style: str = "") -> Text:
    """A ``Text`` showing ``value`` literally (no markup), escaped and cut to ``limit``."""
    return Text(printable(value, limit), style=style, no_wrap=True, overflow="ellipsis")


def name_text(name: object, limit: int | None = 64, style: str = "") -> Text:
    """A device's username as :func:`safe_text` shows it, but a name that may pass for another one (mixed
    scripts, invisible or look-alike characters: ``store.names``) starts with ``⚠`` and its suspicious
    characters (escaped when invisible) are highlighted, so the odd ``е`` or ``‑`` stands out."""
    odd = set(suspicious_characters(name))
    if not odd:
        return safe_text(name, limit, style)
    text = Text(style=style, no_wrap=True, overflow="ellipsis")
    text.append(LOOKALIKE_MARKER + " ", style=LOOKALIKE_STYLE)
    for ch in str(name):
        text.append(printable(ch), style=SUSPICIOUS_STYLE if ch in odd else "")
    if limit is not None and len(text) > limit + 2:
        text.truncate(max(2, limit + 1))
        text.append("…")
    return text


def stamp(t: float | None) -> str:
    """An absolute local timestamp for the details panel."""
    if not t:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
