"""Username globs (``sensor-*``, ``line-?-plc``, ``cam-[0-9]*``): what a bulk grant selects and what an approval
rule matches. One definition, so "which names does this pattern cover" has one answer everywhere.

Shell-style (fnmatch), case-sensitive, matched against the stored (NFC) form of the name: a pattern typed in
NFD matches the same names as its NFC form, and a look-alike (Cyrillic ``е`` for ``e``) never matches a Latin
pattern by accident.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

from .validation import normalise_username

GLOB_CHARACTERS = frozenset("*?[")


def is_name_pattern(text: str) -> bool:
    """Does this text select names by a glob rather than name one? (A name may hold these characters too:
    callers treat an exact pending name first.)"""
    return any(ch in GLOB_CHARACTERS for ch in text)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(fnmatch.translate(normalise_username(pattern)), re.DOTALL)


def name_matches(pattern: str, name: str) -> bool:
    return _compiled(pattern).match(normalise_username(name)) is not None
