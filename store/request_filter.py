"""What a requests filter matches, and the order requests are listed in: the one definition behind the
database's pages (``Registry.request_page``, SQL) and the dashboard's live rows (Python, on ``RequestView``s).

A filter matches a request when one of these contains it, ignoring the case of ASCII letters (as SQLite's
``LIKE`` does; PostgreSQL's ``ILIKE`` also folds other letters): username, client id, peer, source, pairing
code, who decided it (``op``, ``rule:fleet``) and its label as shown (``shown_label``). The order is pending
first, then newest first (by id)."""

from __future__ import annotations

from typing import Any

import peewee as pw

from .views import CONFLICT, REKEY, ROTATION, RULE_ACTOR_PREFIX, request_label

BY_RULE = "by rule"  # the label of a request an approval rule granted (the dashboard's z undoes it)

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def shown_label(req: Any) -> str:
    """A request's label as the dashboard shows it: ``by rule`` when an approval rule granted it, else
    ``RequestView.label`` (its status, or ``re-key``/``rotation``/``conflict`` while pending)."""
    if req.status == "granted" and (req.decided_by or "").startswith(RULE_ACTOR_PREFIX):
        return BY_RULE
    return request_label(req.status, req.conflict, req.rekey, req.rotation)


def _fold(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def request_matches(req: Any, text: str | None) -> bool:
    """Whether the filter ``text`` matches the request (no filter matches everything)."""
    if not text:
        return True
    needle = _fold(text)
    return any(needle in _fold(value) for value in (req.username, req.client_id, req.peer, req.source,
                                                     req.pairing_code, req.decided_by, shown_label(req)) if value)


def request_order_key(req: Any) -> tuple:
    """Sorts requests as they are listed: pending first, newest first."""
    return (0 if req.status == "pending" else 1, -req.id)


def match_clause(R: Any, text: str | None) -> Any:
    """``request_matches`` as a WHERE clause on the Request model ``R``; None without a filter."""
    if not text:
        return None
    label = pw.Case(None, [
        ((R.status == "granted") & R.decided_by.startswith(RULE_ACTOR_PREFIX), BY_RULE),
        ((R.status == "pending") & (R.rekey == True), REKEY),  # noqa: E712 - SQL, not Python
        ((R.status == "pending") & (R.rotation == True), ROTATION),  # noqa: E712
        ((R.status == "pending") & (R.conflict == True), CONFLICT),  # noqa: E712
    ], R.status)
    clause = label.contains(text)
    for field in (R.username, R.client_id, R.peer, R.source, R.pairing_code, R.decided_by):
        clause = clause | field.contains(text)
    return clause


def pending_split(R: Any) -> tuple[Any, Any]:
    """The two halves of the order as WHERE clauses (pending, then decided), each read by ``R.id`` descending:
    two index-friendly queries instead of one sort over every row."""
    return R.status == "pending", R.status != "pending"


def order_by(R: Any) -> list:
    """``request_order_key`` as an ORDER BY, for reading every request at once."""
    return [pw.Case(None, [(R.status == "pending", 0)], 1), R.id.desc()]
