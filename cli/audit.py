"""The audit log: `log` (--follow)."""

from __future__ import annotations

import json
import time

import click

from store.device_text import printable

from .shared import WATCH_EVERY, db_option, echo_json, registry


@click.command()
@db_option
@click.option("--since", type=click.IntRange(min=0), default=0, help="Only events after this id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with --follow: one JSON per line).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they happen, until ctrl+c.")
@click.pass_context
def log(ctx, db, since, as_json, follow):
    """The audit log: every change, oldest first."""
    reg = registry(ctx, db)
    rows = reg.events(since=since)
    if as_json and not follow:
        return echo_json([e.as_dict() for e in rows])
    last = max([since, *(e.id for e in rows)])
    for e in rows:
        print_event(e, as_json)
    if not follow:
        return
    try:
        while True:
            time.sleep(WATCH_EVERY)
            for e in reg.events(since=last):
                print_event(e, as_json)
                last = e.id
    except KeyboardInterrupt:
        return


def _detail_value(key: str, value) -> str:
    """A moment (``until``, ``*_at``: epoch seconds in the event) as local time, as the line's own stamp."""
    if (key == "until" or key.endswith("_at")) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(value))  # one token, as every k=v
    return printable(json.dumps(value, ensure_ascii=False))


def print_event(e, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(e.as_dict(), ensure_ascii=False))
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
    detail = " ".join(f"{k}={_detail_value(k, v)}" for k, v in e.detail.items())
    click.echo(f"{e.id:>6}  {stamp}  {printable(e.actor):<16} {e.kind:<24} {printable(e.subject)}  {detail}".rstrip())


COMMANDS = (log,)
