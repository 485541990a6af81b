"""The unlock window: `init`, `status`, `unlock`, `lock`."""

from __future__ import annotations

import click

from store.device_text import printable
from store.durations import MINUTE, UNLOCK_DEFAULT, UNLOCK_LONGEST, countdown

from .shared import actor, database, db_option, echo_json, json_option, registry


@click.command()
@db_option
@click.pass_context
def init(ctx, db):
    """Create a registry database (and its secret) at --db, or say it exists."""
    from store.location import resolve, sqlite_path

    location = resolve(database(ctx, db))
    path = sqlite_path(location)
    existed = path is not None and path.exists()
    reg = registry(ctx, db, create=True)
    click.echo(f"{'a registry exists' if existed else 'created a registry'} at {reg.location}")


def status_line(status) -> str:
    if status.unlocked:
        head = f"UNLOCKED {countdown(status.remaining)} left (by {printable(status.unlocked_by)})"
    else:
        head = "LOCKED"
    more = "+" if status.knocking_capped else ""
    knocking = (f", {status.knocking}{more} device{'s' if status.knocking != 1 else ''} knocking"
                if status.knocking else "")
    problem = f"\nserver: {printable(status.server_problem)}" if status.server_problem else ""
    return f"{head}; {status.pending} pending{knocking}{throttled_text(status)}{problem}"


def throttled_text(status) -> str:
    """", 12 throttled from 10.0.0.7 (limit 30 new requests per address per minute)": new requests refused by
    the per-address limit in the last five minutes (store.durations.RECENT)."""
    if not status.throttled:
        return ""
    where = ", ".join(f"{printable(peer)}" + (f" ({n})" if len(status.throttled_from) > 1 else "")
                      for peer, n in status.throttled_from)
    return (f", {status.throttled} throttled from {where} "
            f"(limit {status.per_address_limit} new requests per address per minute)")


@click.command()
@db_option
@json_option
@click.pass_context
def status(ctx, db, as_json):
    """Is the registry locked? How many requests are pending?"""
    result = registry(ctx, db).status()
    echo_json(result.as_dict()) if as_json else click.echo(status_line(result))


@click.command()
@db_option
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True, max=UNLOCK_LONGEST // MINUTE),
              default=UNLOCK_DEFAULT / MINUTE,
              show_default=True, help="How long the registry stays open.")
@click.pass_context
def unlock(ctx, db, minutes):
    """Open the registry: unknown devices that connect become pending requests."""
    click.echo(status_line(registry(ctx, db).unlock(minutes * 60, actor=actor())))


@click.command()
@db_option
@click.pass_context
def lock(ctx, db):
    """Close the registry now."""
    click.echo(status_line(registry(ctx, db).lock(actor=actor())))


COMMANDS = (init, status, unlock, lock)
