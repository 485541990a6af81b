"""Relative times for the dashboard and the CLI (no Rich, no Textual: the CLI starts fast)."""

from __future__ import annotations

from typing import Any


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


def last_connected(presence: Any, now: float) -> str:
    """A user's last connection as the Users view and `users` say it: ``now`` or ``3m ago`` (of the current
    session when online), ``never`` (not while the broker was watched), ``unknown``."""
    if presence is None:
        return "unknown"
    if presence.last_connected is not None:
        age = ago(presence.last_connected, now)
        return age if age == "now" else f"{age} ago"
    return "never" if presence.ever_connected is False else "unknown"
