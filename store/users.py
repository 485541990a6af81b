"""Users: adding one by hand, removing, disabling and enabling (a certificate the registry signed for the user is
revoked, or reinstated), a new password. The dashboards' own admin
account (``CONSOLE_USER``, store/console.py) can be neither removed nor disabled. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from typing import Any

from .access import AccessCache
from .base import Base, Part
from .database import guarded
from .errors import InvalidValueError, RefusedError
from .queries import Queries
from .revocations import Revocations
from .validation import normalise_username, password_problem, username_problem
from .views import UserView

CONSOLE_USER = "client-registry-console"  # the dashboards' own admin account (store/console.py)


class Users(Part):
    def __init__(self, base: Base, cache: AccessCache, queries: Queries, revocations: Revocations) -> None:
        super().__init__(base)
        self.cache, self.queries, self.revocations = cache, queries, revocations

    @guarded
    def add_user(self, name: str, password: str, admin: bool = False, actor: str = "cli", how: str = "cli") -> UserView:
        name = normalise_username(name)
        reserved = None if (how == "console" and name == CONSOLE_USER) or username_problem(name) \
            else self.base.reserved(name)
        for problem in (username_problem(name), reserved, password_problem(password)):
            if problem:
                raise InvalidValueError(problem)
        with self.base.write():
            if self.base.user_row(name) is not None:
                raise RefusedError(f"user {name!r} already exists")
            self.m.User.create(name=name, verifier=self.base.verifier(name, password), admin=admin,
                               created_at=self.base.clock(), created_by=actor, created_how=how)
            self.base.event(actor, "user.added", name, admin=admin, how=how)
        self.cache.invalidate(name)
        view = self.queries.user(name)
        assert view is not None  # added in this call
        return view

    @guarded
    def remove_user(self, name: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        self._refuse_console(name, "removed")
        with self.base.write():
            self.delete_row(self.base.require_user(name), actor)
        self.cache.invalidate(name)
        self.base.scrub_secrets()  # its verifier: a password filter to whoever also has the secret

    def delete_row(self, row: Any, actor: str, **detail: Any) -> None:
        """Inside a write transaction: the user, its permissions and roles, its signed certificate (revoked) and
        the user.removed event."""
        self.revocations.revoke(row, "removed", actor)
        self.m.Permission.delete().where(self.m.Permission.user == row).execute()
        self.m.UserRole.delete().where(self.m.UserRole.user == row).execute()
        # a new user of that name starts afresh
        self.m.Presence.delete().where(self.m.Presence.name == row.name).execute()
        row.delete_instance()
        self.base.event(actor, "user.removed", row.name, **detail)

    def _refuse_console(self, name: str, what: str) -> None:
        if name == CONSOLE_USER:
            raise RefusedError(f"{CONSOLE_USER} is the account every dashboard logs in with: it cannot be {what} "
                               f"(change its password with `user passwd` if it leaked)")

    def _set_disabled(self, name: str, disabled: bool, actor: str) -> None:
        name = normalise_username(name)
        if disabled:
            self._refuse_console(name, "disabled")
        with self.base.write():
            row = self.base.require_user(name)
            if row.disabled == disabled:
                raise RefusedError(f"user {name!r} is already {'disabled' if disabled else 'enabled'}")
            self.m.User.update(disabled=disabled).where(self.m.User.id == row.id).execute()
            if disabled:
                self.revocations.revoke(row, "disabled", actor)
            else:
                self.revocations.reinstate(row, actor)
            self.base.event(actor, "user.disabled" if disabled else "user.enabled", name)
        self.cache.invalidate(name)

    @guarded
    def disable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, True, actor)

    @guarded
    def enable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, False, actor)

    @guarded
    def set_password(self, name: str, password: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        problem = password_problem(password)
        if problem:
            raise InvalidValueError(problem)
        with self.base.write():
            row = self.base.require_user(name)
            if row.certificate_pem is not None:
                raise RefusedError(f"user {name!r} identifies by the certificate the registry signed for it: it has "
                                   f"no password")
            self.m.User.update(verifier=self.base.verifier(name, password)).where(self.m.User.id == row.id).execute()
            self.base.event(actor, "user.password_changed", name)
        self.cache.invalidate(name)
        self.base.scrub_secrets()  # the old verifier
