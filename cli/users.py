"""Users: `users`, `user add|remove|disable|enable|passwd|role`, and a user's own permissions (`permit`,
`forbid`)."""

from __future__ import annotations

import time

import click

from store.certificate_text import user_binding
from store.device_text import printable
from store.durations import last_connected
from store.topics import ACCESS_VALUES

from .shared import (
    actor,
    age,
    confirm,
    db_option,
    echo_json,
    fail,
    json_option,
    permissions_text,
    read_password,
    registry,
    table,
    yes_option,
)


@click.command()
@db_option
@json_option
@click.pass_context
def users(ctx, db, as_json):
    """List users, whether they are online (as far as the broker can tell), and their permissions."""
    reg = registry(ctx, db)
    rows = reg.users()
    seen = reg.presence()
    presence = {u.name: seen.of(u.name, u.created_at) for u in rows}
    if as_json:
        return echo_json([{**u.as_dict(), "presence": presence[u.name].as_dict()} for u in rows])
    now = time.time()
    table(
        ["USERNAME", "FLAGS", "ONLINE", "LAST CONNECTED", "ROLES", "PERMISSIONS", "CREATED"],
        [[printable(u.name, 40), user_flags(u),
          online_word(presence[u.name]), last_connected(presence[u.name], now),
          ",".join(u.roles) or "-", permissions_text(u.permissions),
          f"{age(u.created_at, now)} by {printable(u.created_by)} ({u.created_how})"] for u in rows],
    )


def user_flags(u) -> str:
    """``admin,disabled,cert-only``: what is set on a user ("-": nothing)."""
    flags = ("admin" if u.admin else None, "disabled" if u.disabled else None, user_binding(u))
    return ",".join(f for f in flags if f) or "-"


def online_word(presence) -> str:
    """``online``, ``offline`` or ``unknown`` (no running server watches the broker's connections)."""
    if presence.online is None:
        return "unknown"
    return "online" if presence.online else "offline"


@click.group()
def user():
    """Add, remove, disable, enable a user, set its password or its roles."""


@user.command("add")
@db_option
@click.argument("name")
@click.option("--admin", is_flag=True, help="May do anything, including reading $registry/ events.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_context
def user_add(ctx, db, name, admin, password_stdin):
    """Create a user."""
    reg = registry(ctx, db)
    password = read_password(name, password_stdin)
    reg.add_user(name, password, admin=admin, actor=actor())
    click.echo(f"added {printable(name)}" + (" (admin)" if admin else ""))


def _user_change(verb: str, method: str, help_text: str, ask: str | None = None, reversible: bool = False):
    @user.command(verb, help=help_text)
    @db_option
    @click.argument("name")
    @yes_option
    @click.pass_context
    def command(ctx, db, name, yes):
        reg = registry(ctx, db)
        if ask and reg.user(name) is not None:  # a name that is not there is refused as such, not asked about
            confirm(ask.format(name=printable(name)), yes, reversible)
        getattr(reg, method)(name, actor=actor())
        click.echo(f"{verb}d {printable(name)}")

    return command


_user_change("remove", "remove_user", "Delete a user and its permissions; its sessions are closed.",
             "Remove {name}, its permissions and its broker account, and disconnect it?")
_user_change("disable", "disable_user", "Refuse a user's logins and close its sessions.",
             "Disable {name} and disconnect its sessions?", reversible=True)
_user_change("enable", "enable_user", "Let a disabled user log in again.")


@user.command("passwd")
@db_option
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_context
def user_passwd(ctx, db, name, password_stdin):
    """Set a user's password."""
    reg = registry(ctx, db)
    if reg.user(name) is None:
        raise fail(f"no user named {name!r}")
    password = read_password(name, password_stdin)
    reg.set_password(name, password, actor=actor())
    click.echo(f"password changed for {printable(name)}")


@user.group("role")
def user_role():
    """Give a user a role, or take one away (its live session reconnects once with the new list)."""


def _user_role_change(verb: str, method: str, help_text: str, done: str):
    @user_role.command(verb, help=help_text)
    @db_option
    @click.argument("name")
    @click.argument("role")
    @click.pass_context
    def command(ctx, db, name, role):
        reg = registry(ctx, db)
        getattr(reg, method)(name, role, actor=actor())
        click.echo(done.format(name=printable(name), role=role))  # a role's name is ASCII (validated)

    return command


_user_role_change("add", "add_user_role", "Give user NAME the role ROLE, after the roles it has.",
                  "{name} now has role {role}")
_user_role_change("remove", "remove_user_role", "Take the role ROLE from user NAME.",
                  "{name} no longer has role {role}")


@click.command()
@db_option
@click.argument("name")
@click.argument("pattern")
@click.argument("access", type=click.Choice(ACCESS_VALUES))
@click.pass_context
def permit(ctx, db, name, pattern, access):
    """Let NAME use topics matching PATTERN (MQTT wildcards, {username}, {client_id})."""
    reg = registry(ctx, db)
    reg.permit(name, pattern, access, actor=actor())
    click.echo(f"{printable(name)} may now {access} {printable(pattern)}")


@click.command()
@db_option
@click.argument("name")
@click.argument("pattern")
@click.pass_context
def forbid(ctx, db, name, pattern):
    """Remove NAME's permission on PATTERN."""
    reg = registry(ctx, db)
    reg.forbid(name, pattern, actor=actor())
    click.echo(f"{printable(name)} no longer has {printable(pattern)}")


COMMANDS = (users, user, permit, forbid)
