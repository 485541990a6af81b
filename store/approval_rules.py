"""Approval rules: while the registry is unlocked, a new request that matches a rule is granted at once with
the rule's permission template and roles. A part of :class:`store.registry.Registry`, the one entry point.

- **Where**: inside :meth:`record_attempt`'s transaction, right after a new request is recorded, through the
  operator's own grant code (``Decisions.grant_one``): the same rows and the same ``request.granted`` event
  (actor ``rule:<name>``, detail ``rule`` and ``rule_id``), so the broker side provisions it exactly as a
  manual grant, and the device's next CONNECT succeeds.
- **Matching**: a username glob (``store.name_patterns``, as bulk grants use: case-sensitive, on the NFC name as
  stored), optionally a peer network (CIDR, IPv4 or IPv6; an IPv4-mapped IPv6 peer counts as IPv4), the protocol
  (``mqtt``/``http``) and a client-id glob (a request without a client id never matches one). The oldest matching rule
  with room left admits the device. Only new requests: a request pending before the rule existed waits for an
  operator.
- **Roles**: a rule grants its roles (names checked when it is added); if one of them has been removed since,
  the request waits for a person instead.
- **Never automatic**: a conflicting request (another request for the name is pending), a name that is
  already a user (it never becomes a request), a name that may pass for another one (``store.names``
  marks it: mixed scripts, invisible, look-alike or stacked combining characters). These wait for a person.
  (A name not sent in NFC never becomes a request: ``store.validation.nfc_problem``.)
- **Limit per window**: a counter on the rule, tied to the opening time of the unlock window it counts in
  (meta ``window_opened_at``, set when the registry goes from locked to unlocked; extending an open window
  keeps it). A new window starts every rule at 0 without a write. A slot is taken by one conditional UPDATE,
  so two processes never both take the last one. Undone admissions still count.
- **Expiry**: a rule past ``expires_at`` never matches; it stays listed (as expired) until removed.
- **Off by default**: with no rules a new request costs one SELECT of an empty table.
"""

from __future__ import annotations

import ipaddress
import json
import unicodedata
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from .access import AccessCache
from .base import Base, Part
from .database import guarded, run_sql
from .decisions import Decisions
from .durations import RULE_EXPIRES_LONGEST
from .errors import InvalidValueError, RefusedError
from .name_patterns import name_matches
from .names import name_marks
from .roles import Roles
from .users import Users
from .validation import normalise_username, parse_permission, text_problem
from .views import AttemptResult, RuleView, rule_actor
from .window import Window

PROTOCOLS = ("mqtt", "http")
NAME_MAX = 64  # the actor "rule:<name>" fits the audit log's 128 characters
PATTERN_MAX = 256
LIMIT_MAX = 1_000_000

_LIVE_RULES = ('SELECT "id", "name", "pattern", "peer_network", "protocol", "client_id_pattern", "permissions", '
               '"roles" FROM "approval_rules" WHERE "expires_at" IS NULL OR "expires_at" > ? ORDER BY "id"')
# One slot of the rule's limit in the window that opened at ? (a counter of an older window starts again at 1).
UNDONE = "rule_undone."  # meta key prefix + rule id: {"window": ..., "undone": N} (rule undo)
_TAKE_SLOT = ('UPDATE "approval_rules" SET "admitted" = CASE WHEN "admitted_window" = ? THEN "admitted" + 1 '
              'ELSE 1 END, "admitted_window" = ? WHERE "id" = ? AND ("admitted_window" IS NULL OR '
              '"admitted_window" <> ? OR "admitted" < "admit_limit")')


@lru_cache(maxsize=256)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _without_port(peer: str) -> str:
    if peer.startswith("[") and "]" in peer:
        return peer[1:peer.index("]")]
    if peer.count(":") == 1:  # IPv4:PORT (a bare IPv6 address has several colons)
        return peer.split(":", 1)[0]
    return peer


def peer_in(peer: str | None, network: str) -> bool:
    """Is the peer address (as the broker or the HTTP server gives it: an address, or ``IP:PORT`` /
    ``[IPv6]:PORT``) inside ``network``?"""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(_without_port(peer))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    net = _network(network)
    return address.version == net.version and address in net


def _field_problem(value: Any, what: str, longest: int) -> str | None:
    """A glob or a rule name: a string UTF-8 can carry, not empty, no surrounding whitespace, no control
    characters, at most ``longest`` characters."""
    problem = text_problem(value, what)
    if problem:
        return problem
    if not value or value != value.strip():
        return f"{what} must not be empty or start or end with whitespace"
    if len(value) > longest:
        return f"{what} must be at most {longest} characters"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return f"{what} must not contain control characters"
    return None


class ApprovalRules(Part):
    def __init__(self, base: Base, window: Window, cache: AccessCache, roles: Roles, users: Users,
                 decisions: Decisions) -> None:
        super().__init__(base)
        self.window, self.cache, self.roles, self.users, self.decisions = window, cache, roles, users, decisions

    # ------------------------------------------------------------------ the operator's side
    @guarded
    def add_rule(self, pattern: str, *, name: str | None = None, permissions: Iterable[Any] = (),
                 roles: Iterable[str] = (), peer_network: str | None = None, protocol: str | None = None,
                 client_id_pattern: str | None = None,
                 limit: int = 100, expires_in: float | None = None, actor: str = "cli") -> RuleView:
        """A rule that grants new requests matching ``pattern`` (a username glob) while unlocked, with
        ``permissions`` (``"PATTERN=ACCESS"`` or pairs, ``{username}``/``{client_id}`` allowed) and ``roles``
        (names of existing roles, in order). ``name`` defaults to the pattern; ``expires_in`` is seconds from
        now (None: never)."""
        pattern = normalise_username(pattern)  # names are compared in NFC: so is the glob
        problem = _field_problem(pattern, "username pattern", PATTERN_MAX)
        if name is None and not problem and len(pattern) > NAME_MAX:
            problem = f"a pattern over {NAME_MAX} characters needs a shorter rule name"
        name = pattern if name is None else normalise_username(name)
        problem = problem or _field_problem(name, "rule name", NAME_MAX)
        if not problem and name.isdigit():
            problem = "rule name must not be a number (numbers are rule ids)"
        if client_id_pattern is not None:
            problem = problem or _field_problem(client_id_pattern, "client-id pattern", PATTERN_MAX)
        if protocol is not None and protocol not in PROTOCOLS:
            problem = problem or f"protocol must be one of {', '.join(PROTOCOLS)}"
        if not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
            problem = problem or f"limit must be between 1 and {LIMIT_MAX:,}"
        if expires_in is not None and not 0 < expires_in <= RULE_EXPIRES_LONGEST:
            problem = problem or "expiry must be between 1 second and 365 days from now"
        if problem:
            raise InvalidValueError(problem)
        if peer_network is not None:
            try:
                peer_network = str(_network(peer_network.strip()))
            except ValueError:
                raise InvalidValueError(f"{peer_network!r} is not a network (write e.g. 10.0.0.0/8 or fd00::/8)"
                                        ) from None
        try:
            template = list(dict(parse_permission(p) for p in permissions).items())
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        now = self.base.clock()
        R = self.m.ApprovalRule
        with self.base.write():
            role_names = [r.name for r in self.roles.existing(list(roles))]
            if R.get_or_none(R.name == name) is not None:
                raise RefusedError(f"a rule named {name!r} exists: remove it or give this one another name")
            row = R.create(name=name, pattern=pattern, peer_network=peer_network, protocol=protocol,
                           client_id_pattern=client_id_pattern, permissions=json.dumps(template),
                           roles=json.dumps(role_names), admit_limit=limit,
                           expires_at=None if expires_in is None else now + expires_in,
                           created_at=now, created_by=actor)
            self.base.event(actor, "rule.added", name, rule_id=row.id, pattern=pattern, peer_network=peer_network,
                            protocol=protocol, client_id_pattern=client_id_pattern, limit=limit,
                            expires_at=row.expires_at,
                            permissions=[{"pattern": p, "access": a} for p, a in template], roles=role_names)
        return self._rule_view(row, self.window.opened(), now)

    def _rule_row(self, id_or_name: int | str) -> Any:
        R = self.m.ApprovalRule
        text = normalise_username(str(id_or_name))
        row = R.get_or_none(R.id == int(text)) if text.isdigit() else R.get_or_none(R.name == text)
        if row is None:
            raise RefusedError(f"no rule {'#' if text.isdigit() else 'named '}{text if text.isdigit() else repr(text)}")
        return row

    @guarded
    def remove_rule(self, id_or_name: int | str, actor: str = "cli") -> RuleView:
        """Delete a rule (by id or name). The devices it admitted stay users (see revoke_admitted)."""
        with self.base.write():
            row = self._rule_row(id_or_name)
            view = self._rule_view(row, self.window.opened(), self.base.clock())
            row.delete_instance()
            self.base.event(actor, "rule.removed", row.name, rule_id=row.id, admitted=view.admitted)
        return view

    @guarded
    def rules(self) -> list[RuleView]:
        """Every rule, oldest first (the order they are tried in), expired ones too."""
        R = self.m.ApprovalRule
        window, now = self.window.opened(), self.base.clock()
        undone = self._undone(window)
        return [self._rule_view(row, window, now, undone.get(row.id, 0)) for row in R.select().order_by(R.id)]

    @staticmethod
    def _rule_view(row: Any, window: float, now: float, undone: int = 0) -> RuleView:
        return RuleView(
            id=row.id, name=row.name, pattern=row.pattern, peer_network=row.peer_network, protocol=row.protocol,
            client_id_pattern=row.client_id_pattern, permissions=[tuple(p) for p in json.loads(row.permissions)],
            roles=json.loads(row.roles or "[]"), limit=row.admit_limit,
            admitted=row.admitted if row.admitted_window == window else 0, expires_at=row.expires_at,
            expired=row.expires_at is not None and row.expires_at <= now, created_at=row.created_at,
            created_by=row.created_by, undone=min(undone, row.admitted) if row.admitted_window == window else 0)

    @guarded
    def revoke_admitted(self, name: str, actor: str = "cli") -> list[str]:
        """Undo what the rule ``name`` admitted in the current (or, while locked, the last) window: each user
        it created is removed (``user.removed``, detail ``rule``; the broker account goes, sessions close)
        and its request is denied, so the same credentials do not come back in by the rule. Works after the
        rule itself was removed. Returns the names removed."""
        name = normalise_username(str(name))
        if name.isdigit():
            name = self._rule_row(name).name
        who = rule_actor(name)
        R, U = self.m.Request, self.m.User
        removed = []
        with self.base.write():
            now = self.base.clock()
            granted = list(R.select().where((R.decided_by == who) & (R.status == "granted")
                                            & (R.decided_at >= self.window.opened())).order_by(R.id))
            for row in granted:
                user = U.get_or_none((U.name == row.username) & (U.created_by == who))
                if user is not None:
                    self.users.delete_row(user, actor, rule=name, request_id=row.id)
                    removed.append(row.username)
                R.update(status="denied", decided_by=actor, decided_at=now).where(R.id == row.id).execute()
                self.base.event(actor, "request.denied", row.username, request_id=row.id,
                                reason=f"admission by rule {name} undone", rule=name)
            self._note_undone(name, len(granted))
        for username in removed:
            self.cache.invalidate(username)
        return removed

    def _note_undone(self, name: str, count: int) -> None:
        """An undone admission still counts against the rule's limit in its window (so the rule does not at
        once admit as many again); ``RuleView.undone`` says how many of ``admitted`` were undone."""
        rule = self.m.ApprovalRule.get_or_none(self.m.ApprovalRule.name == name)
        if rule is None or not count:
            return
        window, key = self.window.opened(), f"{UNDONE}{rule.id}"
        before = json.loads(self.base.meta_values(key).get(key) or "{}")
        total = count + (before.get("undone", 0) if before.get("window") == window else 0)
        self.base.meta(key, json.dumps({"window": window, "undone": total}))

    def _undone(self, window: float) -> dict[int, int]:
        """Rule id -> admissions undone in ``window`` (meta rows written by _note_undone)."""
        out = {}
        for row in self.m.Meta.select().where(self.m.Meta.key.startswith(UNDONE)):
            note = json.loads(row.value)
            if note.get("window") == window:
                out[int(row.key.removeprefix(UNDONE))] = int(note["undone"])
        return out

    # ------------------------------------------------------------------ the hot path
    def admit(self, row: Any) -> AttemptResult | None:
        """Called inside record_attempt's transaction for a new request without rivals (``row``, just
        inserted): grant it if a live rule matches and has room left in this window."""
        rules = run_sql(self.db, _LIVE_RULES, (row.first_seen,)).fetchall()
        if not rules:
            return None
        if name_marks(row.username):  # a name that may pass for another: a person decides
            return None
        window = None
        for rule_id, name, pattern, network, protocol, client_pattern, permissions, roles in rules:
            if not (name_matches(pattern, row.username)
                    and (protocol is None or protocol == row.source)
                    and (client_pattern is None or (row.client_id is not None
                                                    and fnmatchcase(row.client_id, client_pattern)))
                    and (network is None or peer_in(row.peer, network))):
                continue
            if window is None:
                window = self.window.opened()
            with self.db.atomic() as savepoint:
                if run_sql(self.db, _TAKE_SLOT, (window, window, rule_id, window)).rowcount != 1:
                    continue  # this rule's limit is reached for this window: a later rule may still admit
                template = [tuple(p) for p in json.loads(permissions)]
                result = self.decisions.grant_one(row.username, row.id, template, False, rule_actor(name), False,
                                                  json.loads(roles or "[]"), rule=name, rule_id=rule_id)
                if not result.ok:  # one of its roles was removed since: a person decides; the slot stays free
                    savepoint.rollback()
                    return None
            return AttemptResult("granted", f"admitted by rule {name!r}", request=result.request)
        return None
