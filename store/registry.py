"""The registry: every rule of admission in one place. The broker, the HTTP API, the CLI and the dashboard
all decide through this class; it knows nothing of MQTT, HTTP or screens.

Registry is the one entry point. It opens the shared :class:`store.base.Base` (database, models, clock, audit
log and meta writers, whether a server is alive) and builds the parts on it, each holding one job and given the
other parts it needs at construction, so every dependency is one-way and visible here:

    expiry, access cache, knocks, window(expiry), queries(expiry), permissions(cache), roles(cache, permissions),
    revocations, users(cache, queries, revocations), decisions(cache, roles, expiry, signer), approval
    rules(window, cache, roles, users, decisions), registration(window, expiry, knocks, rules), access(cache),
    logins(access, registration), server notes(window), presence, preferences, site accounts

Its public methods are the parts' (each forwarded by name, with the part's signature). Every mutation is one
transaction that also appends an Event row (the audit log and the changelog the broker relays). Events never
carry a password, verifier or certificate fingerprint (a revoked certificate's serial is public: the CRL lists it).

``signer`` signs a granted CSR request with the site CA (store.certificates.CertificateSigner). The store never
imports broker/, where the CA's files are: a process that may grant CSR requests (the service, the CLI, the
dashboard) passes ``broker.certificates``' signer in, so the dependency runs one way, from the caller into the
store. Without one, granting a CSR request is refused with one line and nothing else changes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import peewee as pw

from . import location as loc
from .access import Access, AccessCache
from .approval_rules import ApprovalRules
from .base import Base, RegistryConfig
from .certificates import CertificateSigner
from .decisions import Decisions
from .expiry import Expiry
from .knocks import Knocks
from .login import Logins
from .permissions import Permissions
from .preferences import Preferences
from .presence import Presence
from .queries import Queries
from .registration import Registration
from .revocations import Revocations
from .roles import Roles
from .server_notes import ServerNotes
from .site_accounts import SiteAccounts
from .users import CONSOLE_USER, Users
from .window import Window

__all__ = ["CONSOLE_USER", "Registry", "RegistryConfig", "open_registry"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Forward(Generic[_P, _R]):
    """A Registry method that is a part's: ``reg.grant(...)`` is ``reg._decisions.grant(...)``. The bound method
    is kept on the instance at first use, so a call costs what a plain method call does."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, _P], _R]) -> None:
        self.part, self.method = part, method

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, registry: None, owner: type) -> Callable[Concatenate[Any, _P], _R]: ...

    @overload
    def __get__(self, registry: Registry, owner: type | None = None) -> Callable[_P, _R]: ...

    def __get__(self, registry: Registry | None, owner: type | None = None) -> Callable[..., _R]:
        if registry is None:
            return self.method
        bound: Callable[_P, _R] = getattr(getattr(registry, self.part), self.method.__name__)
        registry.__dict__[self.name] = bound
        return bound


class Registry:
    def __init__(self, location: str, config: RegistryConfig | None = None, clock: Callable[[], float] = time.time,
                 *, create: bool = False, signer: CertificateSigner | None = None) -> None:
        base = self.base = Base(location, config or RegistryConfig(), clock, create=create)
        self._expiry = Expiry(base)
        self._cache = AccessCache(base)
        self._knocks = Knocks(base)
        self._window = Window(base, self._expiry)
        self._queries = Queries(base, self._expiry)
        self._permissions = Permissions(base, self._cache)
        self._roles = Roles(base, self._cache, self._permissions)
        self._revocations = Revocations(base)
        self._users = Users(base, self._cache, self._queries, self._revocations)
        self._decisions = Decisions(base, self._cache, self._roles, self._expiry, signer)
        self._rules = ApprovalRules(base, self._window, self._cache, self._roles, self._users, self._decisions)
        self._registration = Registration(base, self._window, self._expiry, self._knocks, self._rules)
        self._access = Access(base, self._cache)
        self._logins = Logins(base, self._access, self._registration)
        self._server = ServerNotes(base, self._window)
        self._presence = Presence(base)
        self._preferences = Preferences(base)
        self._site = SiteAccounts(base)

    # the shared pieces callers read
    @property
    def location(self) -> str:
        return self.base.location

    @property
    def config(self) -> RegistryConfig:
        return self.base.config

    @property
    def clock(self) -> Callable[[], float]:
        return self.base.clock

    @property
    def data_dir(self) -> Path:
        return self.base.data_dir

    @property
    def db(self) -> pw.Database:
        return self.base.db

    @property
    def m(self) -> SimpleNamespace:
        return self.base.m

    @property
    def refused(self) -> Counter[str]:
        """Refusals beyond the flood limits, by this process."""
        return self._registration.refused

    def close(self) -> None:
        self.base.close()

    def companion(self, name: str) -> Path:
        """A file of this database's own (secret, credentials, Mosquitto's files): see store.location."""
        return self.base.companion(name)

    scrub_secrets = _Forward("base", Base.scrub_secrets)

    # who may log in, and what a user may do
    login = _Forward("_logins", Logins.login)
    login_many = _Forward("_logins", Logins.login_many)
    authenticate = _Forward("_access", Access.authenticate)
    grants = _Forward("_access", Access.grants)
    all_grants = _Forward("_access", Access.all_grants)
    grants_of_users = _Forward("_access", Access.grants_of_users)
    verifier_of = _Forward("_access", Access.verifier_of)
    broker_verifiers = _Forward("_access", Access.broker_verifiers)
    authorize = _Forward("_access", Access.authorize)
    is_user = _Forward("_access", Access.is_user)
    is_admin = _Forward("_access", Access.is_admin)
    invalidate = _Forward("_cache", AccessCache.invalidate)
    invalidate_for = _Forward("_cache", AccessCache.invalidate_for)

    # registration, the window and the operator's decisions
    record_attempt = _Forward("_registration", Registration.record_attempt)
    record_rekey = _Forward("_registration", Registration.record_rekey)
    record_rotation = _Forward("_registration", Registration.record_rotation)
    record_csr = _Forward("_registration", Registration.record_csr)
    record_knocks = _Forward("_knocks", Knocks.record_knocks)
    expire_stale = _Forward("_expiry", Expiry.expire_stale)
    unlock = _Forward("_window", Window.unlock)
    lock = _Forward("_window", Window.lock)
    status = _Forward("_window", Window.status)
    grant = _Forward("_decisions", Decisions.grant)
    deny = _Forward("_decisions", Decisions.deny)

    # approval rules
    add_rule = _Forward("_rules", ApprovalRules.add_rule)
    remove_rule = _Forward("_rules", ApprovalRules.remove_rule)
    rules = _Forward("_rules", ApprovalRules.rules)
    revoke_admitted = _Forward("_rules", ApprovalRules.revoke_admitted)

    # users, their permissions and roles
    add_user = _Forward("_users", Users.add_user)
    remove_user = _Forward("_users", Users.remove_user)
    disable_user = _Forward("_users", Users.disable_user)
    enable_user = _Forward("_users", Users.enable_user)
    set_password = _Forward("_users", Users.set_password)
    revoked_serials = _Forward("_revocations", Revocations.revoked_serials)
    permit = _Forward("_permissions", Permissions.permit)
    forbid = _Forward("_permissions", Permissions.forbid)
    set_permissions = _Forward("_permissions", Permissions.set_permissions)
    roles = _Forward("_roles", Roles.roles)
    role = _Forward("_roles", Roles.role)
    role_members = _Forward("_roles", Roles.role_members)
    shared_grants = _Forward("_roles", Roles.shared_grants)
    add_role = _Forward("_roles", Roles.add_role)
    remove_role = _Forward("_roles", Roles.remove_role)
    role_permit = _Forward("_roles", Roles.role_permit)
    role_forbid = _Forward("_roles", Roles.role_forbid)
    set_role_permissions = _Forward("_roles", Roles.set_role_permissions)
    add_user_role = _Forward("_roles", Roles.add_user_role)
    remove_user_role = _Forward("_roles", Roles.remove_user_role)
    set_user_roles = _Forward("_roles", Roles.set_user_roles)
    set_user_access = _Forward("_roles", Roles.set_user_access)

    # reading
    requests = _Forward("_queries", Queries.requests)
    request = _Forward("_queries", Queries.request)
    pending_matching = _Forward("_queries", Queries.pending_matching)
    request_count = _Forward("_queries", Queries.request_count)
    request_page = _Forward("_queries", Queries.request_page)
    users = _Forward("_queries", Queries.users)
    user = _Forward("_queries", Queries.user)
    events = _Forward("_queries", Queries.events)
    last_event_id = _Forward("_queries", Queries.last_event_id)

    # what the running server notes, and its housekeeping
    note_applied = _Forward("_server", ServerNotes.note_applied)
    note_alive = _Forward("_server", ServerNotes.note_alive)
    housekeeping = _Forward("_server", ServerNotes.housekeeping)
    note_problem = _Forward("_server", ServerNotes.note_problem)
    note_limits = _Forward("_server", ServerNotes.note_limits)
    applied = _Forward("_server", ServerNotes.applied)
    wait_applied = _Forward("_server", ServerNotes.wait_applied)
    watch_presence = _Forward("_presence", Presence.watch_presence)
    record_presence = _Forward("_presence", Presence.record_presence)
    presence = _Forward("_presence", Presence.presence)
    set_site_accounts = _Forward("_site", SiteAccounts.set_site_accounts)
    site_accounts = _Forward("_site", SiteAccounts.site_accounts)
    site_clashes = _Forward("_site", SiteAccounts.site_clashes)

    # what each operator last granted with
    last_template = _Forward("_preferences", Preferences.last_template)
    remember_template = _Forward("_preferences", Preferences.remember_template)
    last_roles = _Forward("_preferences", Preferences.last_roles)
    remember_roles = _Forward("_preferences", Preferences.remember_roles)


def open_registry(db: str | None = None, config: RegistryConfig | None = None,
                  clock: Callable[[], float] = time.time, *, create: bool = True,
                  signer: CertificateSigner | None = None) -> Registry:
    """Open the registry at --db, $CLIENT_REGISTRY_DB, or the default location. ``create=False`` refuses a
    database that does not exist yet (every CLI command but `init`, `serve` and the dashboard)."""
    return Registry(loc.resolve(db), config=config, clock=clock, create=create, signer=signer)
