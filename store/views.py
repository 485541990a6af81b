"""Read-only snapshots handed to the CLI, the broker and the dashboard (never a verifier or password; a
certificate's fingerprint is public: it is what an operator compares with the device)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .names import name_marks

CONFLICT = "conflict"  # the label of a pending request whose name was tried with another password too
REKEY = "re-key"  # the label of a pending request that would give an existing user a new password
ROTATION = "rotation"  # the label of a pending request that would bind an existing user to another certificate
REQUEST_LABELS = ("pending", CONFLICT, REKEY, ROTATION, "granted", "denied", "expired")


def request_label(status: str, conflict: bool, rekey: bool = False, rotation: bool = False) -> str:
    """What a request is called on screen and in the CLI: its status, or while it is pending "re-key" (a
    user's name with another password), "rotation" (a user's name and password with another certificate) or
    "conflict" (its name was tried with another password or certificate too)."""
    if status != "pending":
        return status
    return REKEY if rekey else ROTATION if rotation else CONFLICT if conflict else status


@dataclass(frozen=True)
class RequestView:
    id: int
    username: str
    client_id: str | None
    peer: str | None
    source: str
    requested_permissions: list | None
    context: dict | None
    first_seen: float
    last_seen: float
    attempts: int
    status: str
    conflict: bool
    decided_by: str | None
    decided_at: float | None
    pairing_code: str | None  # while pending only (docs/SECURITY.md)
    marks: tuple[str, ...] = ()  # why the name may pass for another one (store.names); () for most names
    requested_roles: list | None = None  # role names the device asked for (HTTP flow)
    rekey: bool = False  # a user's name with another password: granting replaces the user's password
    # Issue 18. ``certificate``: the SHA-256 (hex) the device can print, of the certificate it presented (TLS)
    # or of its CSR's public key; the pairing code is its first characters. ``certificate_info``: subject,
    # issuer, serial (hex), not_before/not_after (epoch) of a presented certificate; subject and key_type of a
    # CSR. ``csr``: the device sent a CSR (granting signs it). ``rotation``: a user's name and password with
    # another certificate: granting (with force) binds the user to this one.
    certificate: str | None = None
    certificate_info: dict | None = None
    csr: bool = False
    rotation: bool = False

    @property
    def label(self) -> str:
        return request_label(self.status, self.conflict, self.rekey, self.rotation)

    @property
    def needs_force(self) -> bool:
        """Granting it takes force: its name was tried with another password too, or it re-keys a user or
        binds one to another certificate."""
        return self.status == "pending" and (self.conflict or self.rekey or self.rotation)

    @property
    def deciding_rule(self) -> str | None:
        """The approval rule that decided this request (its decider is ``rule:<name>``), if one did."""
        by = self.decided_by or ""
        return by[len(RULE_ACTOR_PREFIX):] if by.startswith(RULE_ACTOR_PREFIX) else None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["marks"] = list(self.marks)
        return data

    @classmethod
    def of(cls, row) -> RequestView:
        info = _loads(getattr(row, "certificate_info", None))
        return cls(
            id=row.id, username=row.username, client_id=row.client_id, peer=row.peer, source=row.source,
            requested_permissions=_loads(row.requested_permissions), context=_loads(row.context),
            first_seen=row.first_seen, last_seen=row.last_seen, attempts=row.attempts, status=row.status,
            conflict=bool(row.conflict), decided_by=row.decided_by, decided_at=row.decided_at,
            pairing_code=row.pairing_code, marks=tuple(name_marks(row.username)),
            requested_roles=_loads(getattr(row, "requested_roles", None)),
            rekey=bool(getattr(row, "rekey", False)),
            certificate=getattr(row, "certificate", None), certificate_info=info,
            csr=info is not None and "key_type" in info,  # the CSR itself is kept only until decided
            rotation=bool(getattr(row, "rotation", False)),
        )


@dataclass(frozen=True)
class UserView:
    name: str
    admin: bool
    disabled: bool
    created_at: float
    created_by: str
    created_how: str
    permissions: list = field(default_factory=list)  # [(pattern, access)]
    client_id: str | None = None  # the client id it registered with ({client_id} patterns bind to it)
    roles: list = field(default_factory=list)  # role names, in the user's order
    certificate: str | None = None  # SHA-256 (hex) of the one client certificate the broker admits it with
    certificate_serial: str | None = None  # hex: the registry signed its certificate (from a CSR)

    @property
    def certificate_only(self) -> bool:
        """It identifies by the certificate the registry signed: it has no password."""
        return self.certificate_serial is not None

    def as_dict(self) -> dict:
        return _with_permission_dicts(asdict(self))


@dataclass(frozen=True)
class RoleView:
    """A role: its permissions (patterns as written, {username}/{client_id} filled per member) and how many
    users have it."""

    name: str
    permissions: list  # [(pattern, access)], by pattern
    members: int
    created_at: float
    created_by: str

    def as_dict(self) -> dict:
        return _with_permission_dicts(asdict(self))


@dataclass(frozen=True)
class EventView:
    id: int
    time: float
    actor: str
    kind: str
    subject: str | None
    detail: dict

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, row) -> EventView:
        return cls(id=row.id, time=row.time, actor=row.actor, kind=row.kind, subject=row.subject,
                   detail=_loads(row.detail) or {})


@dataclass(frozen=True)
class Status:
    unlocked: bool
    remaining: float
    unlocked_until: float | None
    unlocked_by: str | None
    pending: int
    knocking: int  # distinct names refused while locked in the last five minutes
    refused_recent: int  # their attempts
    knocking_capped: bool = False  # more names knocked than are counted one by one (then "N+")
    throttled: int = 0  # new requests refused by the per-address limit in the last five minutes
    throttled_from: list = field(default_factory=list)  # [(peer, count)], the busiest three
    per_address_limit: int = 30  # new requests per address per minute
    server_problem: str | None = None  # why the running server cannot do its job (Registry.note_problem)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RuleView:
    """An approval rule (store/approval_rules.py) as the CLI and the dashboard show it."""

    id: int
    name: str
    pattern: str  # username glob
    peer_network: str | None
    protocol: str | None  # mqtt | http | None (both)
    client_id_pattern: str | None
    permissions: list  # [(pattern, access)]: the template a matching device is granted
    roles: list  # role names, in order
    limit: int  # devices it may admit per unlock window
    admitted: int  # in the current (or, while locked, the last) window
    expires_at: float | None
    expired: bool
    created_at: float
    created_by: str
    undone: int = 0  # of ``admitted``, removed again by `rule undo` (they still count against ``limit``)

    @property
    def actor(self) -> str:
        """Who its grants are by, in the audit log and on the users it created."""
        return rule_actor(self.name)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["permissions"] = [{"pattern": p, "access": a} for p, a in self.permissions]
        return data


RULE_ACTOR_PREFIX = "rule:"


def rule_actor(name: str) -> str:
    """``rule:<name>``: the actor of the grants (and the creator of the users) an approval rule made."""
    return RULE_ACTOR_PREFIX + name


@dataclass(frozen=True)
class AttemptResult:
    outcome: str  # pending | retry | conflict | rekey | rotation | denied | granted (by a rule, or a CSR's certificate
    #               issued) | known_user | locked | invalid
    #               | flood | reserved (the registry's own names, the site's accounts)
    reason: str
    field: str | None = None
    request: RequestView | None = None
    pairing_code: str | None = None
    certificate: str | None = None  # PEM: the certificate the registry signed for this CSR (outcome granted)

    @property
    def accepted(self) -> bool:
        """Something is waiting for the operator."""
        return self.outcome in ("pending", "retry", "conflict", "rekey", "rotation")


@dataclass(frozen=True)
class LoginResult:
    """What :meth:`Registry.login` decided for one CONNECT."""

    accepted: bool
    # accepted | refused (wrong password) | disabled (right password) | not_credentials | an AttemptResult outcome
    outcome: str
    reason: str
    attempt: AttemptResult | None = None  # set when the name was not a user and the attempt was recorded


@dataclass(frozen=True)
class Grants:
    """What one user may do, placeholders filled: what a broker enforces (see Registry.grants)."""

    username: str
    admin: bool
    disabled: bool
    client_id: str | None  # set when a {client_id} pattern binds the account to this client id
    topics: tuple  # ((pattern, access), ...) with access read | write | readWrite: everything, roles included
    roles: tuple = ()  # the user's role names, in order; a broker may share each role's `shared_grants` part
    personal: tuple = ()  # the part of `topics` that is the user's alone: its own permissions and the role
    #                       patterns that differ per member ({username}, {client_id}, `$` for admins)
    certificate: str | None = None  # SHA-256 (hex) of the one client certificate the broker must see, if bound


@dataclass(frozen=True)
class ItemResult:
    item: str
    ok: bool
    message: str
    request: RequestView | None = None
    needs_force: bool = False  # refused only for want of force (a conflict, a re-key, a rotation)


def _with_permission_dicts(data: dict) -> dict:
    """JSON's shape of permissions: [{"pattern", "access"}] instead of pairs."""
    data["permissions"] = [{"pattern": p, "access": a} for p, a in data["permissions"]]
    return data


def _loads(text: str | None):
    return json.loads(text) if text else None


@dataclass(frozen=True)
class UserPresence:
    """What the broker said of one user's connections. ``online`` is None when no running server watches the
    broker's connections now (attached to the site's own Mosquitto, or no server running): unknown.
    ``ever_connected`` is False when the user never connected while they were watched, None when it may have
    connected before watching began."""

    online: bool | None
    sessions: int | None
    last_connected: float | None
    last_disconnected: float | None
    ever_connected: bool | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PresenceSnapshot:
    """Every user's presence row at one moment, and whether a running server keeps them up to date."""

    watched: bool
    why_not: str | None  # one line when not watched
    since: float | None  # when a server of this registry first watched its broker's connections
    rows: dict = field(default_factory=dict)  # name -> (sessions, last_connected, last_disconnected)

    def of(self, name: str, created_at: float) -> UserPresence:
        sessions, connected, disconnected = self.rows.get(name, (0, None, None))
        if connected is not None:
            ever = True
        elif self.since is not None and created_at >= self.since:
            ever = False  # watched all its life and never seen
        else:
            ever = None
        return UserPresence(online=(sessions > 0) if self.watched else None,
                            sessions=sessions if self.watched else None,
                            last_connected=connected, last_disconnected=disconnected, ever_connected=ever)
