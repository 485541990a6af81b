"""How long things last: the registry's windows, durations as an operator types them (the unlock dialog,
`rule add --expires`) and reads them (``7 days``, a countdown ``4:59``), and how long ago something happened
(``5m``, ``now``), for the dashboard and the CLI alike (no Rich, no Textual: the CLI starts fast)."""

from __future__ import annotations

import re

MINUTE, HOUR, DAY = 60, 3600, 86400
WEEK = 7 * DAY

UNLOCK_DEFAULT = 5 * MINUTE  # how long `unlock` opens the registry unless told
UNLOCK_LONGEST = WEEK
RECENT = 5 * MINUTE  # "devices knocking" and "throttled" count refused attempts this recent, then forget them
RULE_EXPIRES_LONGEST = 365 * DAY

_UNITS = {"s": 1, "m": MINUTE, "": MINUTE, "h": HOUR, "d": DAY}


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
    if seconds % DAY == 0 and seconds >= DAY:
        days = seconds // DAY
        return f"{days} day{'s' if days != 1 else ''}"
    parts: list[str] = []
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def countdown(seconds: float) -> str:
    """``m:ss`` for a remaining window, ``h:mm:ss`` from an hour (rounded up, so 0:00 only when closed)."""
    total = max(0, int(seconds + 0.999))
    hours, rest = divmod(total, HOUR)
    return f"{hours}:{rest // MINUTE:02d}:{rest % MINUTE:02d}" if hours else f"{rest // MINUTE}:{rest % MINUTE:02d}"


def ago(then: float | None, now: float, *, suffix: str = "", missing: str = "—") -> str:
    """How long ago, in its largest unit: ``now`` (under 2 s), ``12s``, ``5m``, ``3h``, ``2d``, each followed
    by ``suffix`` (the CLI's `` ago``); ``missing`` when there is no moment."""
    if not then:
        return missing
    delta = max(0.0, now - then)
    if delta < 2:
        return "now"
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if delta >= size:
            return f"{int(delta // size)}{unit}{suffix}"
    return f"{int(delta)}s{suffix}"


def last_connected(presence, now: float) -> str:
    """A user's last connection as the Users view and `users` say it: ``now`` or ``3m ago`` (of the current
    session when online), ``never`` (not while the broker was watched), ``unknown``."""
    if presence is None:
        return "unknown"
    if presence.last_connected is not None:
        return ago(presence.last_connected, now, suffix=" ago")
    return "never" if presence.ever_connected is False else "unknown"
