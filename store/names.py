"""Names that look like other names: what an operator should look at twice before granting.

A username is marked (never refused: a whole-Cyrillic or Japanese name is a fine name) when it mixes scripts
the way a spoofed name does (Cyrillic ``е`` among Latin letters), or holds invisible or format characters
(zero-width, bidi controls, soft hyphen) or punctuation and spaces that look like ASCII ones (U+2011
NON-BREAKING HYPHEN for ``-``, fullwidth forms), or stacks more than MAX_STACKED combining marks on one
character (a tower of accents that hides its neighbours). Only the standard library: the script of a letter is the
first word of its Unicode name (after NFKC folding, so a fullwidth or mathematical ``a`` counts as Latin);
the mixes allowed are UTS #39's "highly restrictive" ones (Latin with Han and Japanese kana, with Han and
Bopomofo, or with Han and Hangul).

:func:`name_marks` is what the CLI, ``requests --json`` and the dashboard show; :func:`suspicious_characters`
says which characters to point at.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Punctuation, symbols and spaces that pass for ASCII in a terminal font. (Fullwidth and other compatibility
# forms are found by NFKC folding to ASCII; these do not fold to it.)
_LOOKS_LIKE = {
    "-": "\u02d7\u058a\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u2796\u2e3a\u2e3b\ufe58\ufe63",
    ".": "\u00b7\u0387\u06d4\u2024\u2027\u2219\u22c5\u30fb\ua4f8\uff61",
    "/": "\u2044\u2215\u2571\u29f8\u3033",
    "_": "\u02cd\u2017",
    ":": "\u02d0\u0589\u05c3\u2236\ua789",
    "'": "\u00b4\u02b9\u02bb\u02bc\u02bd\u02c8\u2018\u2019\u201b\u2032\u2035",
    '"': "\u02ba\u02dd\u201c\u201d\u201f\u2033\u2036",
    "+": "\u16ed\u2795",
    "*": "\u2217\u204e\u2731",
    "!": "\u01c3",
    "=": "\u2550\ua60c",
}
LOOKS_LIKE = {ch: ascii_ for ascii_, chars in _LOOKS_LIKE.items() for ch in chars}

# Default-ignorable characters that are not format characters (category Cf, all invisible or reordering):
# they render as nothing, or as a blank the width of a letter.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0") | frozenset(
    chr(c) for c in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), *range(0x180B, 0x1810)))
_EMOJI_GLUE = frozenset("\u200d\ufe0e\ufe0f")  # zero width joiner and emoji/text presentation selectors

# Scripts that may share a name without marking it (UTS #39, highly restrictive); any other mix is marked.
_SCRIPT_SETS = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),
    frozenset({"Latin", "Han", "Bopomofo"}),
    frozenset({"Latin", "Han", "Hangul"}),
)
_SCRIPT_WORDS = {"CJK": "Han", "KATAKANA-HIRAGANA": "Katakana", "IDEOGRAPHIC": "Han", "ARABIC-INDIC": "Arabic"}
_LISTED = 4  # characters named in one mark; more are counted
MAX_STACKED = 3  # combining marks on one base character beyond this are marked: no script needs more in NFC
#                  (Vietnamese and Indic text stay within it), and a tower of them can cover its neighbours


def code_point(ch: str) -> str:
    """``U+0435`` for ``е``."""
    return f"U+{ord(ch):04X}"


def describe(ch: str) -> str:
    """``U+0435 CYRILLIC SMALL LETTER IE``."""
    name = unicodedata.name(ch, "")
    return f"{code_point(ch)} {name}" if name else code_point(ch)


def _script(ch: str) -> str | None:
    """The script of a letter or a non-ASCII digit (first word of its Unicode name), None for the rest."""
    if ch.isascii():
        return "Latin" if ch.isalpha() else None
    category = unicodedata.category(ch)
    if category[0] != "L" and category != "Nd":
        return None
    folded = unicodedata.normalize("NFKC", ch)
    base = next((c for c in folded if unicodedata.category(c)[0] in "LN"), ch)
    if base.isascii():
        return "Latin" if base.isalpha() else None
    words = unicodedata.name(base, "").split()
    if not words or words[0] in ("MODIFIER", "COMBINING"):
        return None
    word = words[0]
    return _SCRIPT_WORDS.get(word, word.title())


def _character_mark(ch: str, prev: str) -> str | None:
    """Why one character is suspicious on its own, or None."""
    category = unicodedata.category(ch)
    if ch in _EMOJI_GLUE and prev and unicodedata.category(prev) in ("So", "Sk", "Mn", "Cf"):
        return None  # part of an emoji sequence
    if category == "Cf" or ch in _INVISIBLE:
        return f"invisible {describe(ch)}"
    if category == "Cs":
        return f"lone surrogate {code_point(ch)}"
    if category == "Cn":
        return f"unassigned {code_point(ch)}"
    if category == "Co":
        return f"private-use {code_point(ch)}"
    if category == "Zs":
        return f"look-alike space {describe(ch)}"
    if ch in LOOKS_LIKE:
        return f"look-alike {describe(ch)} (looks like {LOOKS_LIKE[ch]!r})"
    folded = unicodedata.normalize("NFKC", ch)
    if folded != ch and folded.isascii() and folded.isprintable() and folded.strip():
        return f"look-alike {describe(ch)} (looks like {folded!r})"
    return None


def _mixed(scripts: dict[str, list[str]]) -> bool:
    if len(scripts) < 2:
        return False
    return not any(set(scripts) <= allowed for allowed in _SCRIPT_SETS)


def _listing(chars: list[str]) -> str:
    shown = ", ".join(describe(ch) for ch in chars[:_LISTED])
    return shown + (f" and {len(chars) - _LISTED} more" if len(chars) > _LISTED else "")


@lru_cache(maxsize=4096)
def _analyse(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(marks, suspicious characters in order of first appearance) of one name."""
    marks: list[str] = []
    odd: dict[str, None] = {}
    prev_base = ""
    scripts: dict[str, list[str]] = {}  # script -> its distinct characters, in order
    prev = ""
    stacked: list[str] = []  # the combining marks on the current base character
    for ch in name:
        script = _script(ch)
        if script is not None:
            chars = scripts.setdefault(script, [])
            if ch not in chars:
                chars.append(ch)
        if ch not in odd:
            mark = _character_mark(ch, prev)
            if mark is not None:
                odd[ch] = None
                marks.append(mark)
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
            stacked.append(ch)
            if len(stacked) == MAX_STACKED + 1:
                base = f"on {describe(prev_base)}" if prev_base else "at the start"
                marks.append(f"stacked marks: more than {MAX_STACKED} combining marks {base}")
            if len(stacked) > MAX_STACKED:
                odd.setdefault(ch, None)
        else:
            stacked, prev_base = [], ch
        prev = ch
    if _mixed(scripts):
        # The script with the most letters is what the name pretends to be; the others are the odd ones.
        counts = {s: sum(1 for ch in name if _script(ch) == s) for s in scripts}
        main = max(scripts, key=lambda s: counts[s])  # the first seen wins a tie
        others = [ch for s, chars in scripts.items() if s != main for ch in chars]
        marks.insert(0, f"mixed scripts: {'+'.join([main, *(s for s in scripts if s != main)])} "
                        f"({_listing(others)})")
        odd = {**dict.fromkeys(others), **odd}
    return tuple(marks), tuple(odd)


def name_marks(name: object) -> list[str]:
    """Why ``name`` may pass for another name, one line each; [] for an unremarkable name (and for every
    ASCII name: its look-alikes are refused or escaped elsewhere).

    >>> name_marks("s\u0435nsor-1")
    ['mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)']
    """
    if not isinstance(name, str) or name.isascii():
        return []
    return list(_analyse(name)[0])


def suspicious_characters(name: object) -> list[str]:
    """The distinct characters :func:`name_marks` is about (the odd script's letters, invisible and
    look-alike characters), in order of first appearance."""
    if not isinstance(name, str) or name.isascii():
        return []
    return list(_analyse(name)[1])
