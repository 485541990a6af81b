"""The registry projected onto Mosquitto's dynamic security: one client and one role per registry user, and
one shared role per registry role.

The registry is the truth; this module makes Mosquitto agree with it:
- ``role_acls`` turns a user's grants (store.Registry.grants) into dynamic-security ACLs: ``read`` is
  subscribe and receive, ``write`` is publish; admins also get the shared admin role.
- A registry role is the dynamic-security role ``client-registry:role:<name>`` holding what it gives every
  member alike (``Registry.shared_grants``), listed in each member's client roles after the user's own role:
  editing it is one ``modifyRole``, whatever the number of members. Its patterns that differ per member
  ({username}, {client_id}) are filled into each member's own role (``Grants.personal``).
- ``Provisioner.apply`` follows the changelog (each Event row, from any process) with the matching commands;
  ``Provisioner.provision`` creates the client of a user whose password the service holds (a device's
  attempt, in memory only); ``Provisioner.reconcile`` lists what Mosquitto has and fixes drift both ways.

Facts of Mosquitto 2.0.11's dynamic security that shape this (read in its source, held by the tests):
- it has no %u/%c substitution in ACL topics, so {username} is filled per user, and a {client_id} pattern
  binds the client to the client id the device registered with (``clientid`` of the dynsec client);
- ``modifyRole`` with a new ACL list replaces it without disconnecting anyone (``addRoleACL`` and
  ``removeRoleACL`` would disconnect every client of the role), and ACLs are checked on every publish and
  every delivery, so a narrowing applies to live sessions at once;
- ``deleteClient``, ``disableClient``, ``setClientPassword`` and ``modifyClient`` with roles disconnect the
  client's live sessions: that is how revocation reaches devices that are connected. So giving a user a role,
  or taking one away, disconnects that user once (its device reconnects with the new list); editing a role
  disconnects no one.
- A client without a password could never log in, and would hide the name from the registry plugin, so a
  client is only created with the password the device sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.roles import shared_pattern
from store.topics import access_allows

from .config import ADMIN_ROLE, SERVICE_USER, SHARED_ROLE_PREFIX, TEXTNAME, USER_ROLE_PREFIX
from .link import BrokerLink, DynsecError, LinkError

ACL_TYPES = (("publish", "publishClientSend"), ("subscribe", "subscribePattern"),
             ("receive", "publishClientReceive"))
_MISSING = object()
USER_EVENTS = frozenset({"request.granted", "user.added", "user.removed", "user.disabled", "user.enabled",
                         "user.password_changed", "permission.added", "permission.removed",
                         "user.role_added", "user.role_removed"})
ROLE_EVENTS = frozenset({"role.added", "role.removed", "role.permission_added", "role.permission_removed"})


def user_role(username: str) -> str:
    return USER_ROLE_PREFIX + username


def shared_role(role: str) -> str:
    return SHARED_ROLE_PREFIX + role


def role_acls(grants: Any) -> list[dict]:
    """The ACLs of a user's own role: its grants that no shared role holds (``Grants.personal``)."""
    return topic_acls(grants.personal)


def topic_acls(topics: Any) -> list[dict]:
    """(pattern, access) pairs as dynamic-security ACLs, in a stable order (so equal lists compare equal)."""
    acls = []
    for pattern, access in sorted(topics):
        for action, acltype in ACL_TYPES:
            if access_allows(access, action):
                acls.append({"acltype": acltype, "topic": pattern, "priority": 0, "allow": True})
    return acls


def _acl_key(acl: dict) -> tuple:
    return (str(acl.get("acltype")).lower(), acl.get("topic"), bool(acl.get("allow")), int(acl.get("priority", 0)))


def _same_acls(a: list[dict], b: list[dict]) -> bool:
    return sorted(map(_acl_key, a)) == sorted(map(_acl_key, b))


@dataclass
class ClientState:
    roles: list[str]
    clientid: str | None
    disabled: bool
    ours: bool


class Provisioner:
    """``reg`` is the service's Registry (read in threads), ``link`` the service account's connection.
    ``own_everything``: the dynamic-security file is the registry's alone (a supervised Mosquitto), so
    clients that are not registry users are drift; otherwise only clients marked as ours are touched."""

    def __init__(self, reg: Any, link: BrokerLink, log: Callable[[str], None], *, own_everything: bool) -> None:
        self.reg = reg
        self.link = link
        self.log = log
        self.own_everything = own_everything
        self.clients: dict[str, ClientState] = {}  # what Mosquitto has, as far as we know
        self.roles: dict[str, list[dict]] = {}
        self._lock = asyncio.Lock()  # one projection change at a time: the mirror stays true

    # -- reading the registry --------------------------------------------------------------------------------
    async def _grants(self, username: str):
        return await asyncio.to_thread(self.reg.grants, username)

    # -- the commands ----------------------------------------------------------------------------------------
    async def _ensure_role(self, name: str, acls: list[dict]) -> str:
        known = self.roles.get(name)
        if known is not None and _same_acls(known, acls):
            return ""
        if known is None:
            responses = await self.link.run([{"command": "createRole", "rolename": name, "acls": acls}],
                                            ok=("Role already exists",))
            if not responses[0].get("error"):
                self.roles[name] = acls
                return "role created"
        await self.link.run([{"command": "modifyRole", "rolename": name, "acls": acls}])
        self.roles[name] = acls
        return "permissions set"

    async def _delete_client(self, username: str) -> bool:
        responses = await self.link.run([{"command": "deleteClient", "username": username}],
                                        ok=("Client not found",))
        self.clients.pop(username, None)
        return not responses[0].get("error")

    async def _delete_role(self, name: str) -> None:
        await self.link.run([{"command": "deleteRole", "rolename": name}], ok=("Role not found",))
        self.roles.pop(name, None)

    @staticmethod
    def _wanted_roles(grants: Any) -> list[str]:
        return ([user_role(grants.username)] + [shared_role(r) for r in grants.roles]
                + ([ADMIN_ROLE] if grants.admin else []))

    @staticmethod
    def _role_list(names: list[str]) -> list[dict]:
        """A client's roles in the registry's order: Mosquitto sorts them by priority (highest first, then by
        name; -1 when none is given), so the user's own role keeps -1 and shared roles follow with -2, -3..."""
        shared = [n for n in names if n.startswith(SHARED_ROLE_PREFIX)]
        return [{"rolename": n, **({"priority": -2 - shared.index(n)} if n in shared else {})} for n in names]

    async def _ensure_shared(self, roles: tuple) -> list[str]:
        """Create the shared roles a client is about to list (an event may have overtaken `role.added`)."""
        done = []
        for role in roles:
            if shared_role(role) in self.roles:
                continue
            found = (await asyncio.to_thread(self.reg.shared_grants, role)).get(role)
            if found is not None:
                done += [x for x in [await self._ensure_role(shared_role(role), topic_acls(found))] if x]
        return done

    async def _sync(self, username: str, password: str | None = None, *, reset_password: bool = False,
                    known: Any = _MISSING) -> list[str]:
        """Make Mosquitto agree with the registry about one user; returns what was changed (for the log).
        ``known``: the user's grants, already read (reconcile reads them all at once)."""
        grants = await self._grants(username) if known is _MISSING else known
        role = user_role(username)
        if grants is None:
            deleted = await self._delete_client(username)
            await self._delete_role(role)
            return ["account removed"] if deleted else []
        done = [x for x in [await self._ensure_role(role, role_acls(grants))] if x]
        done += await self._ensure_shared(grants.roles)
        wanted_roles = self._wanted_roles(grants)
        state = self.clients.get(username)
        if state is not None and password is not None and reset_password and not grants.disabled:
            # A password handed over for an existing account (`user passwd` beat the relay): set it. Never
            # for a grant whose account exists already: setClientPassword would disconnect the device.
            await self.link.run([{"command": "setClientPassword", "username": username, "password": password}])
            done.append("password set")
        if state is None:
            if password is None:
                return done
            command = {"command": "createClient", "username": username, "password": password,
                       "textname": TEXTNAME, "roles": self._role_list(wanted_roles)}
            if grants.client_id is not None:
                command["clientid"] = grants.client_id
            responses = await self.link.run([command], ok=("Client already exists",))
            if responses[0].get("error"):  # created meanwhile (a device's retry raced the grant)
                return done
            self.clients[username] = ClientState(wanted_roles, grants.client_id, False, True)
            done.append("account created")
            if grants.disabled:
                await self.link.run([{"command": "disableClient", "username": username}])
                self.clients[username].disabled = True
            return done
        if sorted(state.roles) != sorted(wanted_roles):  # the set: a new order alone is not worth a disconnect
            await self.link.run([{"command": "modifyClient", "username": username,
                                  "roles": self._role_list(wanted_roles)}])
            state.roles = wanted_roles
            done.append("roles set")
        if state.clientid != grants.client_id:
            await self.link.run([{"command": "setClientId", "username": username,
                                  **({"clientid": grants.client_id} if grants.client_id else {})}])
            state.clientid = grants.client_id
            done.append("client id bound" if grants.client_id else "client id unbound")
        if state.disabled != grants.disabled:
            await self.link.run([{"command": "disableClient" if grants.disabled else "enableClient",
                                  "username": username}])
            state.disabled = grants.disabled
            done.append("disabled" if grants.disabled else "enabled")
        return done

    # -- entry points ------------------------------------------------------------------------------------------
    def has_account(self, username: str) -> bool:
        return username in self.clients

    async def provision(self, username: str, password: str) -> list[str]:
        """Create the account of a user whose right password the service holds (a device's attempt)."""
        async with self._lock:
            done = await self._sync(username, password, reset_password=True)
        if done:
            self.log(f"dynsec {username!r}: {', '.join(done)} (its own login)")
        return done

    async def apply(self, event: Any, password: str | None = None) -> None:
        """Follow one changelog event. ``password``: the granted device's, if the service still holds it."""
        if event.kind in ROLE_EVENTS and event.subject:
            async with self._lock:
                done = await self._apply_role(event)
            if done:
                self.log(f"dynsec role {event.subject!r}: {', '.join(done)} ({event.kind} #{event.id})")
            return
        if event.kind not in USER_EVENTS or not event.subject:
            return
        username = event.subject
        async with self._lock:
            if event.kind == "user.password_changed":
                # The new password is not ours to know: the device's next login (forwarded by the registry
                # plugin, checked against the new verifier) creates the account again.
                if await self._delete_client(username):
                    self.log(f"dynsec {username!r}: password changed, account removed until its next login")
                return
            done = await self._sync(username, password)
            waiting = username not in self.clients and event.kind in ("request.granted", "user.added")
        if waiting:
            done.append("its account is created at its next login")
        if done:
            self.log(f"dynsec {username!r}: {', '.join(done)} ({event.kind} #{event.id})")

    async def _apply_role(self, event: Any) -> list[str]:
        """A role changed: one ``modifyRole`` of its shared role; each member's own role only when the
        pattern differs per member. Membership changes are `user.role_*` events (a client's role list)."""
        name = event.subject
        found = (await asyncio.to_thread(self.reg.shared_grants, name)).get(name)
        if found is None:  # removed (its members were taken out by the user.role_removed events before)
            await self._delete_role(shared_role(name))
            return ["shared role removed"]
        done = [x for x in [await self._ensure_role(shared_role(name), topic_acls(found))] if x]
        pattern = (event.detail or {}).get("pattern")
        if event.kind.startswith("role.permission") and pattern and not shared_pattern(pattern):
            members = await asyncio.to_thread(self.reg.role_members, name)
            changed = 0
            for member in members:
                changed += bool(await self._sync(member))
            done.append(f"{changed} of {len(members)} members' own roles set")
        return done

    async def _list(self, command: str, key: str) -> list[dict]:
        responses = await self.link.run([{"command": command, "verbose": True}], timeout=30)
        return responses[0].get("data", {}).get(key, [])

    async def reconcile(self) -> int:
        """List Mosquitto's clients and roles, fix every difference with the registry; returns how many
        corrections were made (each is logged)."""
        async with self._lock:
            return await self._reconcile()

    async def _reconcile(self) -> int:
        clients = await self._list("listClients", "clients")
        roles = await self._list("listRoles", "roles")
        self.roles = {r["rolename"]: r.get("acls", []) for r in roles if r.get("rolename")}
        self.clients = {
            c["username"]: ClientState([r["rolename"] for r in c.get("roles", [])], c.get("clientid"),
                                       bool(c.get("disabled")), c.get("textname") == TEXTNAME)
            for c in clients if c.get("username")}
        every = await asyncio.to_thread(self.reg.all_grants)
        users = set(every)
        fixes = 0
        for username, state in list(self.clients.items()):
            if username == SERVICE_USER or username in users:
                continue
            if state.ours or self.own_everything:
                await self._delete_client(username)
                self.log(f"reconcile: removed Mosquitto account {username!r}: not a registry user")
                fixes += 1
        for name in list(self.roles):
            if name.startswith(USER_ROLE_PREFIX) and name[len(USER_ROLE_PREFIX):] not in users:
                await self._delete_role(name)
                self.log(f"reconcile: removed role {name!r}: not a registry user")
                fixes += 1
        shared = await asyncio.to_thread(self.reg.shared_grants)
        for role, topics in sorted(shared.items()):  # before the clients that list them
            done = await self._ensure_role(shared_role(role), topic_acls(topics))
            if done:
                self.log(f"reconcile: shared role {role!r}: {done}")
                fixes += 1
        for username in sorted(users):
            done = await self._sync(username, known=every[username])
            if done:
                self.log(f"reconcile: {username!r}: {', '.join(done)}")
                fixes += 1
        for name in list(self.roles):  # after the clients: none lists them any more
            if name.startswith(SHARED_ROLE_PREFIX) and name[len(SHARED_ROLE_PREFIX):] not in shared:
                await self._delete_role(name)
                self.log(f"reconcile: removed role {name!r}: not a registry role")
                fixes += 1
        return fixes


__all__ = ["DynsecError", "LinkError", "Provisioner", "role_acls", "shared_role", "topic_acls", "user_role"]
