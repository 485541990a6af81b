"""Approval rules: `rules`, `rule add|remove|undo`."""

from __future__ import annotations

import time

import click

from store.device_text import printable
from store.durations import RULE_EXPIRES_LONGEST, describe, parse_duration

from .shared import (
    actor,
    confirm,
    db_option,
    echo_json,
    json_option,
    parse_permission_options,
    permissions_text,
    registry,
    table,
    yes_option,
)


@click.group()
def rule():
    """Approval rules: grant matching new requests by themselves while the registry is unlocked."""


def _expires(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value, longest=RULE_EXPIRES_LONGEST)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None


@rule.command("add")
@db_option
@click.argument("pattern")
@click.option("--name", default=None, help="What the rule is called (default: the pattern).")
@click.option("--permission", "-p", "permissions", multiple=True, metavar="PATTERN=ACCESS",
              help="The template an admitted device gets (repeatable); PATTERN may use {username}, {client_id}.")
@click.option("--role", "roles", multiple=True, metavar="NAME",
              help="A role an admitted device gets (repeatable, in order; the role must exist).")
@click.option("--from", "peer_network", default=None, metavar="CIDR",
              help="Only devices connecting from this network (10.0.0.0/8, fd00::/8).")
@click.option("--protocol", type=click.Choice(["mqtt", "http"]), default=None,
              help="Only devices registering over this protocol (default: both).")
@click.option("--client-id", "client_id_pattern", default=None, metavar="GLOB",
              help="Only devices whose client id matches this glob.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Devices it may admit per unlock window.")
@click.option("--expires", default=None, metavar="DURATION",
              help="It stops matching after this long: 90m, 2h, 3d (default: never).")
@click.pass_context
def rule_add(ctx, db, pattern, name, permissions, roles, peer_network, protocol, client_id_pattern, limit, expires):
    """Admit new requests whose username matches PATTERN (a glob: sensor-*) while unlocked."""
    template = parse_permission_options(permissions)
    reg = registry(ctx, db)
    view = reg.add_rule(
        pattern, name=name, permissions=template, roles=roles, peer_network=peer_network, protocol=protocol,
        client_id_pattern=client_id_pattern, limit=limit, expires_in=_expires(expires), actor=actor())
    click.echo(f"added rule #{view.id} {printable(view.name)}: {rule_summary(view)}")
    if not reg.status(expire=False).unlocked:
        click.echo("the registry is locked: the rule admits devices once it is unlocked (`client-registry unlock`)")


def rule_summary(view) -> str:
    """"admits up to 50 devices per window named 'sensor-*' from 10.0.0.0/8 over mqtt, with ...; expires in 2h"."""
    where = "".join([f" from {view.peer_network}" if view.peer_network else "",
                     f" over {view.protocol}" if view.protocol else "",
                     f" with client id {printable(view.client_id_pattern)}" if view.client_id_pattern else ""])
    grants = rule_grants(view) if view.permissions or view.roles else "no permissions"
    return (f"admits up to {view.limit} device{'s' if view.limit != 1 else ''} per unlock window named "
            f"{printable(view.pattern)}{where}, with {grants}; {rule_expiry(view, time.time())}")


def rule_grants(view) -> str:
    """"role:sensors devices/{username}/#=readWrite": what a rule gives, its roles first ("-": nothing)."""
    roles = " ".join(f"role:{printable(r)}" for r in view.roles)
    perms = permissions_text(view.permissions) if view.permissions else ""
    return " ".join(part for part in (roles, perms) if part) or "-"


def rule_expiry(view, now: float) -> str:
    if view.expires_at is None:
        return "never expires"
    if view.expired:
        return "expired"
    return f"expires in {describe(max(1, round(view.expires_at - now)))}"


@click.command()
@db_option
@json_option
@click.pass_context
def rules(ctx, db, as_json):
    """List approval rules, in the order they are tried, with what each admitted in this unlock window."""
    rows = registry(ctx, db).rules()
    if as_json:
        return echo_json([r.as_dict() for r in rows])
    now = time.time()
    table(
        ["ID", "NAME", "USERNAME", "FROM", "PROTOCOL", "CLIENT ID", "GRANTS", "ADMITTED", "EXPIRES"],
        [[str(r.id), printable(r.name, 30), printable(r.pattern, 30), r.peer_network or "any", r.protocol or "any",
          printable(r.client_id_pattern, 30) if r.client_id_pattern else "any",
          rule_grants(r), f"{r.admitted}/{r.limit}" + (f" ({r.undone} undone)" if r.undone else ""),
          rule_expiry(r, now).removeprefix("expires in ").replace("never expires", "never")] for r in rows],
    )


@rule.command("remove")
@db_option
@click.argument("rule_ref", metavar="ID_OR_NAME")
@yes_option
@click.pass_context
def rule_remove(ctx, db, rule_ref, yes):
    """Delete a rule; the devices it admitted stay users (see `rule undo`)."""
    reg = registry(ctx, db)
    confirm(f"Remove rule {printable(rule_ref)}?", yes)
    view = reg.remove_rule(rule_ref, actor=actor())
    click.echo(f"removed rule #{view.id} {printable(view.name)}; the users it admitted stay "
               f"(`client-registry rule undo {printable(view.name)}` removes this window's)")


@rule.command("undo")
@db_option
@click.argument("rule_ref", metavar="ID_OR_NAME")
@yes_option
@click.pass_context
def rule_undo(ctx, db, rule_ref, yes):
    """Remove every user the rule admitted in this unlock window (their sessions close; the same
    credentials stay denied). Also after the rule was removed, by its name."""
    reg = registry(ctx, db)
    confirm(f"Remove every user rule {printable(rule_ref)} admitted in this unlock window, and disconnect them?",
            yes)
    removed = reg.revoke_admitted(rule_ref, actor=actor())
    click.echo(f"removed {len(removed)} user{'s' if len(removed) != 1 else ''} admitted by rule "
               f"{printable(rule_ref)}" + (f": {', '.join(printable(n) for n in removed)}" if removed else ""))
    if removed:
        click.echo("they still count against the rule's limit until the next unlock window (`rules`: N undone)")


COMMANDS = (rules, rule)
