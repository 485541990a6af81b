"""MQTT topic filters: validity, matching a topic name, and one filter covering another."""

from __future__ import annotations

import re

MAX_PATTERN = 1024
ACCESS_VALUES = ("read", "write", "readWrite")
_PLACEHOLDER = re.compile(r"\{(username|client_id)\}")


def filter_problem(pattern: str) -> str | None:
    """Why this is not a valid MQTT topic filter, or None when it is."""
    if not pattern:
        return "topic pattern is empty"
    if len(pattern) > MAX_PATTERN:
        return f"topic pattern is longer than {MAX_PATTERN} characters"
    if "\0" in pattern:
        return "topic pattern contains NUL"
    levels = pattern.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def matches(pattern: str, topic: str) -> bool:
    """Does the filter `pattern` match the topic name `topic` (MQTT 3.1.1 section 4.7)?"""
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for index, p in enumerate(p_levels):
        if p == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if index >= len(t_levels):
            return False
        if p != "+" and p != t_levels[index]:
            return False
    return len(p_levels) == len(t_levels)


def covers(pattern: str, requested: str) -> bool:
    """Is every topic matched by the filter `requested` also matched by the filter `pattern`?"""
    p_levels = pattern.split("/")
    r_levels = requested.split("/")
    for index, p in enumerate(p_levels):
        if p == "#":
            return True
        if index >= len(r_levels):
            return False
        r = r_levels[index]
        if r == "#":
            return False  # only "#" covers "#" and that returned above
        if p == "+":
            continue
        if r == "+" or p != r:
            return False
    return len(p_levels) == len(r_levels)


def has_placeholder(pattern: str) -> bool:
    """Does the pattern hold {username} or {client_id} (so it differs per user)?"""
    return _PLACEHOLDER.search(pattern) is not None


def shared_pattern(pattern: str) -> bool:
    """Is this role pattern the same for every member? Not when it holds {username}/{client_id}, nor for a
    `$` topic (kept for admin members only, see Registry.grants)."""
    return not has_placeholder(pattern) and not pattern.startswith("$")


def expand(pattern: str, username: str, client_id: str | None) -> str | None:
    """Fill {username} and {client_id}. A value that holds '/', '+' or '#' would widen the pattern into
    someone else's topics, so such a pattern matches nothing (None)."""
    values = {"username": username, "client_id": client_id}
    used = [name for name in values if "{" + name + "}" in pattern]
    if not used:
        return pattern
    if any(not (value := values[name]) or any(c in value for c in "/+#") for name in used):
        return None
    # One pass, so a username that itself reads "{client_id}" is not expanded again.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] or "", pattern)


def access_allows(access: str, action: str) -> bool:
    if action == "publish":
        return access in ("write", "readWrite")
    return access in ("read", "readWrite")  # subscribe, receive
