"""What every command group shares: the exit codes, --db/--yes/--mqtt, opening the registry, asking before
a change, and the plain-text output (tables, one line per item, ages)."""

from __future__ import annotations

import getpass
import json
import os
import sys

import click

from broker.certificates import DEVICE_DAYS, MAX_DEVICE_DAYS
from broker.signing import open_signing_registry
from store.device_text import printable
from store.durations import ago
from store.views import ItemResult

EXIT_REFUSED = 1
EXIT_USAGE = 2  # click's own for bad options; ours for values the store's rules reject
WATCH_EVERY = 0.5  # seconds between looks at the changelog (--watch, --follow)


def actor() -> str:
    """Who is acting, for the audit log: the operating-system user at the command line."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container: still say something useful
        user = str(os.getuid())
    return f"cli:{user}"


def fail(message: str, code: int = EXIT_REFUSED) -> click.exceptions.Exit:
    click.echo(f"client-registry: {message}", err=True)
    return click.exceptions.Exit(code)


def db_option(func):
    return click.option(
        "--db", "db", envvar=None, default=None, metavar="PATH_OR_URL",
        help="Database file or URL (default: $CLIENT_REGISTRY_DB, else ~/.local/share/client-registry/registry.db).",
    )(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def certificate_days_option(func):
    return click.option(
        "--certificate-days", type=click.IntRange(1, MAX_DEVICE_DAYS), default=DEVICE_DAYS, show_default=True,
        metavar="DAYS", help="How long a certificate signed for a granted CSR request is valid (never past the "
                             "site CA's own).")(func)


def yes_option(func):
    return click.option("--yes", "-y", is_flag=True, help="Do not ask (scripts).")(func)


def mqtt_option(func):
    return click.option(
        "--mqtt", "mqtt", default=None, metavar="URL",
        help="Broker to watch: mqtt://[user:pass@]host:port (default mqtt://127.0.0.1:1883 with the console "
             "account, or $CLIENT_REGISTRY_MQTT). If no broker answers locally, one is started under the "
             "dashboard.")(func)


def mqtt_ca_option(func):
    return click.option(
        "--mqtt-ca", "mqtt_ca", default=None, metavar="FILE",
        help="For an mqtts:// broker: the CA its certificate is checked against (default: the site CA `tls "
             "init` made beside the database, else the system's).")(func)


def confirm(question: str, yes: bool, reversible: bool = False) -> None:
    """Ask before a destructive or multi-target change. Without a terminal nobody can answer, and a script that
    did not say --yes must not get a change it did not see: refuse, naming --yes (a ``reversible`` one, such as
    a disable, goes ahead)."""
    if yes:
        return
    if not sys.stdin.isatty():
        if reversible:
            return
        raise fail(f"{question.split('?')[0]}: no terminal to ask; pass --yes to confirm")
    if not click.confirm(question, default=False):
        raise fail("nothing changed")


def database(ctx: click.Context, db: str | None) -> str | None:
    """The --db given to this command, else the group's (it may come before or after the command)."""
    return db or ctx.find_root().params.get("db")


def registry(ctx: click.Context, db: str | None, *, create: bool = False, certificate_days: int = DEVICE_DAYS):
    """Open the registry named by this command's --db, else the group's --db. Only `init` creates one: a
    mistyped path is an error, never a new empty registry that no server uses. A granted CSR request is
    signed by the site CA beside the database (broker/signing.py), valid ``certificate_days``."""
    reg = open_signing_registry(database(ctx, db), create=create, certificate_days=certificate_days)
    ctx.call_on_close(reg.close)
    ctx.meta["registry"] = reg
    ctx.meta["events_before"] = reg.last_event_id()
    return reg


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def age(moment: float | None, now: float) -> str:
    """``now``, ``5m ago``, ``-`` (never): the CLI's words for store.durations.ago."""
    return ago(moment, now, suffix=" ago", missing="-")


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def permissions_text(permissions) -> str:
    return " ".join(f"{printable(p)}={a}" for p, a in permissions) or "-"


def parse_permission_options(values) -> list[tuple[str, str]]:
    """Every --permission value read by the store's parser (one option may hold several, comma-separated)."""
    from store.validation import parse_permissions

    try:
        return [pair for value in values for pair in parse_permissions(value)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--permission") from None


def report(results: list[ItemResult]) -> None:
    """One line per item; exit 1 if any item was refused (the others still took effect)."""
    for result in results:
        if result.ok:
            click.echo(printable(result.message))
        else:
            click.echo(f"client-registry: {printable(result.message)}", err=True)
    if any(not r.ok for r in results):
        raise click.exceptions.Exit(EXIT_REFUSED)


def read_password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise fail("no terminal to ask for a password: use --password-stdin")
    return click.prompt(f"Password for {printable(name)}", hide_input=True, confirmation_prompt=True)
