"""Device-supplied strings in log lines: quoted, escaped and bounded, never raw control characters."""

from __future__ import annotations

from typing import Any


def safe(value: Any, limit: int = 80) -> str:
    if value is None:
        return "-"
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)
