"""The accounts the site's own broker has (attach mode): their names are reserved, never a device's. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Part
from .database import guarded, run_sql
from .validation import normalise_username, text_problem


class SiteAccounts(Part):
    @guarded
    def set_site_accounts(self, names: Iterable[str], source: str, actor: str = "server") -> bool:
        """The accounts the site's own broker has (attach mode), as the server read them from ``source`` (the
        site's files); replaces the earlier list. True when it changed (one ``site_accounts.changed`` event,
        with the count: the names stay out of the audit log)."""
        wanted = {normalise_username(n) for n in names if isinstance(n, str) and not text_problem(n, "name")}
        with self.base.write():
            have = {name for (name,) in run_sql(self.db, 'SELECT "name" FROM "site_accounts"').fetchall()}
            if have == wanted:
                return False
            for name in have - wanted:
                run_sql(self.db, 'DELETE FROM "site_accounts" WHERE "name" = ?', (name,))
            for name in wanted - have:
                run_sql(self.db, 'INSERT INTO "site_accounts" ("name") VALUES (?)', (name,))
            self.base.event(actor, "site_accounts.changed", None, count=len(wanted), source=source)
        return True

    @guarded
    def site_accounts(self) -> list[str]:
        return sorted(name for (name,) in run_sql(self.db, 'SELECT "name" FROM "site_accounts"').fetchall())

    @guarded
    def site_clashes(self) -> list[str]:
        """Users of the registry whose name the site's broker has too (created before the site's account, or
        before attach): the operator must remove one of them; the registry changes neither by itself."""
        return [name for (name,) in run_sql(self.db, 'SELECT "u"."name" FROM "users" AS "u" JOIN "site_accounts" '
                                                     'AS "s" ON "s"."name" = "u"."name" ORDER BY "u"."name"')]
