"""Making device-supplied strings safe to show, and formatting times.

Everything that came from a device (usernames, client ids, peers, context) goes
through :func:`safe_text` before it reaches a widget: the result is a
``rich.text.Text`` (so Rich markup is never interpreted), control and
bidirectional-formatting characters are shown as visible escapes (so they
cannot move the cursor or reverse the line), and very long strings are cut.
"""

from __future__ import annotations

import time

from rich.text import Text

from store.names import suspicious_characters

from .ages import ago  # noqa: F401 - the dashboard's widgets import it from here
from .safe_text import printable

LOOKALIKE_MARKER = "⚠"  # before a name that may pass for another one (store.names)
LOOKALIKE_STYLE = "bold #ffaf00"
SUSPICIOUS_STYLE = "bold reverse #ffaf00"  # the characters that make it so

def clean(value: object, limit: int | None = 64) -> str:
    """A printable, single-line version of ``value`` (the CLI's rules), cut to ``limit``."""
    return printable(value, limit)


def safe_text(value: object, limit: int | None = 64, style: str = "") -> Text:
    """A ``Text`` showing ``value`` literally (no markup), escaped and cut to ``limit``."""
    return Text(clean(value, limit), style=style, no_wrap=True, overflow="ellipsis")


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
        text.append(clean(ch, None), style=SUSPICIOUS_STYLE if ch in odd else "")
    if limit is not None and len(text) > limit + 2:
        text.truncate(max(2, limit + 1))
        text.append("…")
    return text


def countdown(seconds: float) -> str:
    """``m:ss`` for a remaining window, ``h:mm:ss`` from an hour (rounded up, so 0:00 only when closed)."""
    total = max(0, int(seconds + 0.999))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def stamp(t: float | None) -> str:
    """An absolute local timestamp for the details panel."""
    if not t:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
