"""Reading: requests (whole, or paged and filtered for the dashboard), users and the changelog. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import json
from typing import Any

import peewee as pw

from . import request_filter
from .base import Base, Part
from .database import guarded, run_sql
from .expiry import Expiry
from .name_patterns import name_matches
from .validation import normalise_username
from .views import EventView, RequestView, UserView


class Queries(Part):
    def __init__(self, base: Base, expiry: Expiry) -> None:
        super().__init__(base)
        self.expiry = expiry

    @guarded
    def requests(self, include_all: bool = False) -> list[RequestView]:
        self.expiry.expire_stale()
        R = self.m.Request
        query = R.select()
        if not include_all:
            query = query.where(R.status == "pending")
        return [RequestView.of(r) for r in query.order_by(*request_filter.order_by(R))]

    @guarded
    def request(self, request_id: int) -> RequestView | None:
        row = self.m.Request.get_or_none(self.m.Request.id == request_id)
        return RequestView.of(row) if row else None

    @guarded
    def pending_matching(self, pattern: str) -> list[RequestView]:
        """The pending requests whose username matches the glob ``pattern`` (store.name_patterns), oldest
        first: what a bulk grant (`grant 'sensor-*'`) previews and then grants by id. A name that holds
        glob characters itself (``cam[1]``) and has a pending request is taken as that name."""
        R = self.m.Request
        pending = list(R.select().where(R.status == "pending").order_by(R.id))
        name = normalise_username(pattern)
        exact = [r for r in pending if r.username == name]
        return [RequestView.of(r) for r in exact or [r for r in pending if name_matches(pattern, r.username)]]

    # -- paged reading, for the dashboard's bounded requests table (added on branch perf-tui) ---------------
    @guarded
    def request_count(self, match: str | None = None) -> int:
        """How many requests (any status) match ``match`` (see ``request_page``); all of them without one."""
        query = self.m.Request.select()
        clause = request_filter.match_clause(self.m.Request, match)
        if clause is not None:
            query = query.where(clause)
        return query.count()

    @guarded
    def request_page(self, limit: int, offset: int = 0, match: str | None = None,
                     expire: bool = True) -> tuple[list[RequestView], int]:
        """``limit`` requests from position ``offset`` in the order of ``store.request_filter`` (pending first,
        newest first), optionally only those matching ``match`` (as ``request_filter.request_matches``); and
        how many match in all.

        The two halves of the order are two index-friendly queries, so the first page of 100,000 requests
        costs about as much as the first page of 100. ``expire=False`` only reads."""
        if expire:
            self.expiry.expire_stale()
        R = self.m.Request
        clause = request_filter.match_clause(R, match)
        pending_q, decided_q = (R.select().where(half if clause is None else half & clause)
                                for half in request_filter.pending_split(R))
        n_pending = pending_q.count()
        n_total = n_pending + decided_q.count()
        rows: list = []
        offset = max(0, offset)
        if limit > 0 and offset < n_pending:
            rows += list(pending_q.order_by(R.id.desc()).limit(limit).offset(offset))
        remaining = limit - len(rows)
        if remaining > 0:
            rows += list(decided_q.order_by(R.id.desc()).limit(remaining).offset(max(0, offset - n_pending)))
        return [RequestView.of(r) for r in rows], n_total

    def _user_view(self, row, permissions, roles) -> UserView:
        return UserView(name=row.name, admin=bool(row.admin), disabled=bool(row.disabled), created_at=row.created_at,
                        created_by=row.created_by, created_how=row.created_how, permissions=permissions,
                        client_id=row.client_id, roles=roles, certificate=row.certificate,
                        certificate_serial=row.certificate_serial)

    def _role_names(self, user_id: int | None = None) -> dict[int, list]:
        """{user id: [role name, ...]} in each user's order (of one user, or of all)."""
        R, UR = self.m.Role, self.m.UserRole
        query = UR.select(UR.user, R.name).join(R, on=(UR.role == R.id))
        if user_id is not None:
            query = query.where(UR.user == user_id)
        names: dict[int, list] = {}
        for uid, name in query.order_by(UR.user, UR.position).tuples():
            names.setdefault(uid, []).append(name)
        return names

    @guarded
    def users(self) -> list[UserView]:
        U, P = self.m.User, self.m.Permission
        perms: dict[int, list] = {}
        for p in P.select().order_by(P.pattern):
            perms.setdefault(p.user_id, []).append((p.pattern, p.access))
        roles = self._role_names()
        return [self._user_view(u, perms.get(u.id, []), roles.get(u.id, [])) for u in U.select().order_by(U.name)]

    @guarded
    def user(self, name: str) -> UserView | None:
        row = self.base.user_row(name)
        if row is None:
            return None
        P = self.m.Permission
        return self._user_view(row, [(p.pattern, p.access) for p in row.permissions.order_by(P.pattern)],
                               self._role_names(row.id).get(row.id, []))

    @guarded
    def events(self, since: int = 0, limit: int | None = None, subject: str | None = None) -> list[EventView]:
        """Events after ``since``, oldest first. Hand-written SQL: the relay reads every event this way, and
        Peewee's model instances cost more than the query (19% of the service's time at 200 new devices/s)."""
        text = 'SELECT "id", "time", "actor", "kind", "subject", "detail" FROM "events" WHERE "id" > ?'
        params: list[Any] = [since]
        if subject is not None:
            text, params = text + ' AND "subject" = ?', [*params, subject]
        text += ' ORDER BY "id"'
        if limit:
            text, params = text + " LIMIT ?", [*params, int(limit)]
        return [EventView(id=i, time=t, actor=a, kind=k, subject=s, detail=json.loads(d) if d else {})
                for i, t, a, k, s, d in run_sql(self.db, text, tuple(params))]

    @guarded
    def last_event_id(self) -> int:
        return self.m.Event.select(pw.fn.COALESCE(pw.fn.MAX(self.m.Event.id), 0)).scalar()
