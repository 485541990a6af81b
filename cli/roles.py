"""Roles: `roles`, `role add|remove|permit|forbid`."""

from __future__ import annotations

import time

import click

from store.device_text import printable
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
    registry,
    table,
    yes_option,
)


@click.command()
@db_option
@json_option
@click.pass_context
def roles(ctx, db, as_json):
    """List roles, their permissions and how many users have each."""
    rows = registry(ctx, db).roles()
    if as_json:
        return echo_json([r.as_dict() for r in rows])
    now = time.time()
    table(["ROLE", "MEMBERS", "PERMISSIONS", "CREATED"],
          [[r.name, str(r.members), permissions_text(r.permissions),
            f"{age(r.created_at, now)} by {printable(r.created_by)}"] for r in rows])


def members_text(count: int) -> str:
    return f"{count} member{'' if count == 1 else 's'}"


@click.group()
def role():
    """Add or remove a role (a named set of permissions), or change its permissions."""


def _members(reg, name: str) -> int:
    found = reg.role(name)
    if found is None:
        raise fail(f"no role named {name!r}")
    return found.members


@role.command("add")
@db_option
@click.argument("name")
@click.pass_context
def role_add(ctx, db, name):
    """Create an empty role."""
    reg = registry(ctx, db)
    reg.add_role(name, actor=actor())
    click.echo(f"added role {name}")


@role.command("remove")
@db_option
@click.argument("name")
@click.option("--force", is_flag=True, help="Also when users have it: they lose what it gave them.")
@yes_option
@click.pass_context
def role_remove(ctx, db, name, force, yes):
    """Delete a role; refused while users have it, unless --force."""
    reg = registry(ctx, db)
    count = _members(reg, name)
    if count and force:
        confirm(f"Remove role {name}? Its {members_text(count)} lose its permissions, and their live sessions "
                f"reconnect once.", yes)
    elif not count:
        confirm(f"Remove role {name} (no members)?", yes)
    reg.remove_role(name, actor=actor(), force=force)
    click.echo(f"removed role {name}" + (f" from {members_text(count)}" if count else ""))


@role.command("permit")
@db_option
@click.argument("name")
@click.argument("pattern")
@click.argument("access", type=click.Choice(ACCESS_VALUES))
@click.pass_context
def role_permit(ctx, db, name, pattern, access):
    """Let every member of role NAME use topics matching PATTERN ({username}, {client_id} per member)."""
    reg = registry(ctx, db)
    count = reg.role_permit(name, pattern, access, actor=actor())
    click.echo(f"role {name} ({members_text(count)}) may now {access} {printable(pattern)}")


@role.command("forbid")
@db_option
@click.argument("name")
@click.argument("pattern")
@yes_option
@click.pass_context
def role_forbid(ctx, db, name, pattern, yes):
    """Take PATTERN from role NAME, and so from every member."""
    reg = registry(ctx, db)
    count = _members(reg, name)
    if count:
        confirm(f"Take {printable(pattern)} from role {name}? Its {members_text(count)} lose it at once "
                f"(live sessions stay connected).", yes)
    count = reg.role_forbid(name, pattern, actor=actor())
    click.echo(f"role {name} ({members_text(count)}) no longer has {printable(pattern)}")


COMMANDS = (roles, role)
