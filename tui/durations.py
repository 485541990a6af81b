"""Durations typed by an operator (the dashboard's unlock dialog, the CLI's `rule add --expires`)."""

from __future__ import annotations

import re

WEEK = 7 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, longest: int = WEEK) -> int:
    """``"10"`` (minutes), ``"90s"``, ``"10m"``, ``"2h"``, ``"3d"`` -> seconds; raises ValueError saying what
    to write."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise ValueError("write a number of minutes, or e.g. 90s, 10m, 2h, 3d")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not 1 <= value <= longest:
        raise ValueError(f"between 1 second and {describe(longest)}")
    return int(value)


def describe(seconds: float) -> str:
    """``7 days``, ``2h 5m``, ``45s``: a duration in its two largest units."""
    seconds = int(seconds)
    if seconds % 86400 == 0 and seconds >= 86400:
        days = seconds // 86400
        return f"{days} day{'s' if days != 1 else ''}"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
