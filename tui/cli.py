"""The headless command line: `client-registry COMMAND`. Every change goes through store.Registry.

Exit codes: 0 success, 1 refused (one line on stderr saying why), 2 usage error.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time

import click

from broker.mosquitto.config import MAX_CONNECTIONS, MAX_PACKET_SIZE, MIN_PACKET_SIZE
from store import InvalidValueError, RefusedError, StoreError, open_registry
from store.topics import ACCESS_VALUES
from store.views import ItemResult

from store.device_text import printable
from store.durations import countdown, last_connected

from .read_your_writes import APPLY_TIMEOUT, until_applied

EXIT_REFUSED = 1
EXIT_USAGE = 2  # click's own for bad options; ours for values the store's rules reject


def actor() -> str:
    """Who is acting, for the audit log: the operating-system user at the command line."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container: still say something useful
        user = str(os.getuid())
    return f"cli:{user}"


def fail(message: str, code: int = EXIT_REFUSED) -> "click.exceptions.Exit":
    click.echo(f"client-registry: {message}", err=True)
    return click.exceptions.Exit(code)


class RegistryGroup(click.Group):
    """Turns store errors into one line on stderr and exit code 1 (2 for a value the store's rules reject: a
    usage error, as click's own), never a traceback; a command that changed
    the registry returns once the running server applied the change (read your writes)."""

    def invoke(self, ctx):
        try:
            result = super().invoke(ctx)
            wait_until_applied(ctx)
            return result
        except InvalidValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        except StoreError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None



STORE_ONLY_EVENTS = ("rule.",)


def wait_until_applied(ctx: click.Context) -> None:
    """After a change: wait (at most 1 s) until the server running on this registry has applied it to the
    broker, so the next command, or a device, sees it. Says so in one line when no server applied it."""
    reg, before = ctx.meta.get("registry"), ctx.meta.get("events_before")
    if reg is None or before is None:
        return
    last = reg.last_event_id()
    if last <= before:
        return  # nothing changed
    if all(e.kind.startswith(STORE_ONLY_EVENTS) for e in reg.events(since=before)):
        return  # a change the broker has nothing to do with (approval rules act in the store)
    outcome = until_applied(reg, last)
    if outcome == "no_server":
        click.echo("client-registry: no server is running on this registry: the broker gets this change "
                   "when `client-registry serve` (or the dashboard) starts", err=True)
    elif outcome == "timeout":
        raise fail(f"recorded, but the running server did not apply it within {APPLY_TIMEOUT:g} s "
                   "(see its log)")


def db_option(func):
    return click.option(
        "--db", "db", envvar=None, default=None, metavar="PATH_OR_URL",
        help="Database file or URL (default: $CLIENT_REGISTRY_DB, else ~/.local/share/client-registry/registry.db).",
    )(func)


def yes_option(func):
    return click.option("--yes", "-y", is_flag=True, help="Do not ask (scripts).")(func)


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


def registry(ctx: click.Context, db: str | None, *, create: bool = False):
    """Open the registry named by this command's --db, else the group's --db. Only `init` creates one: a
    mistyped path is an error, never a new empty registry that no server uses."""
    root = ctx.find_root()
    location = db or root.params.get("db")
    reg = open_registry(location, create=create)
    ctx.call_on_close(reg.close)
    ctx.meta["registry"] = reg
    ctx.meta["events_before"] = reg.last_event_id()
    return reg


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(now - moment))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def online_word(presence) -> str:
    """``online``, ``offline`` or ``unknown`` (no running server watches the broker's connections)."""
    if presence.online is None:
        return "unknown"
    return "online" if presence.online else "offline"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


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


def mqtt_option(func):
    return click.option(
        "--mqtt", "mqtt", default=None, metavar="URL",
        help="Broker to watch: mqtt://[user:pass@]host:port (default mqtt://127.0.0.1:1883 with the console "
             "account, or $CLIENT_REGISTRY_MQTT). If no broker answers locally, one is started under the "
             "dashboard.")(func)


@click.group(cls=RegistryGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@db_option
@mqtt_option
@click.option("--no-embed", is_flag=True, help="Dashboard: never start an embedded broker.")
@click.option("--http-bind", default=None, metavar="HOST:PORT",
              help="Dashboard: where the embedded server's HTTP API listens (default 127.0.0.1:8080; `none`).")
@click.version_option(package_name="client-registry")
@click.pass_context
def main(ctx, db, mqtt, no_embed, http_bind):
    """Admit self-registering MQTT devices: unlock, watch requests, grant or deny.

    With no command, opens the dashboard (its options may come first). --db and --mqtt may come before or
    after any command."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(dashboard, no_embed=no_embed, http_bind=http_bind or "127.0.0.1:8080")


# ------------------------------------------------------------------------ window
@main.command()
@db_option
@click.pass_context
def init(ctx, db):
    """Create a registry database (and its secret) at --db, or say it exists."""
    from store.location import resolve, sqlite_path

    location = resolve(db or ctx.find_root().params.get("db"))
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
    the per-address limit in the last five minutes."""
    if not status.throttled:
        return ""
    where = ", ".join(f"{printable(peer)}" + (f" ({n})" if len(status.throttled_from) > 1 else "")
                      for peer, n in status.throttled_from)
    return (f", {status.throttled} throttled from {where} "
            f"(limit {status.per_address_limit} new requests per address per minute)")


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx, db, as_json):
    """Is the registry locked? How many requests are pending?"""
    result = registry(ctx, db).status()
    echo_json(result.as_dict()) if as_json else click.echo(status_line(result))


@main.command()
@db_option
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True, max=7 * 24 * 60), default=5.0,
              show_default=True, help="How long the registry stays open.")
@click.pass_context
def unlock(ctx, db, minutes):
    """Open the registry: unknown devices that connect become pending requests."""
    click.echo(status_line(registry(ctx, db).unlock(minutes * 60, actor=actor())))


@main.command()
@db_option
@click.pass_context
def lock(ctx, db):
    """Close the registry now."""
    click.echo(status_line(registry(ctx, db).lock(actor=actor())))


# ---------------------------------------------------------------------- requests
@main.command()
@db_option
@click.option("--all", "include_all", is_flag=True, help="Also granted, denied and expired requests.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", "-w", is_flag=True,
              help="Show the list again whenever a request changes (on a terminal: in place), until ctrl+c.")
@click.pass_context
def requests(ctx, db, include_all, as_json, watch):
    """List registration requests (pending ones, newest first)."""
    reg = registry(ctx, db)
    last = reg.last_event_id()
    print_requests(reg.requests(include_all=include_all), as_json)
    if not watch:
        return
    clear = sys.stdout.isatty() and not as_json
    try:
        while True:
            time.sleep(WATCH_EVERY)
            now_last = reg.last_event_id()
            if now_last == last:
                continue
            changed = [e for e in reg.events(since=last) if e.kind.startswith("request.")]
            last = now_last
            if not changed:
                continue
            rows = reg.requests(include_all=include_all)
            if clear:
                click.clear()
            if not as_json:
                pending = sum(1 for r in rows if r.status == "pending")
                click.echo(f"--- {time.strftime('%H:%M:%S')}: {len(changed)} change{'s' if len(changed) != 1 else ''}, "
                           f"{pending} pending ---")
            print_requests(rows, as_json)
    except KeyboardInterrupt:
        return


WATCH_EVERY = 0.5  # seconds between looks at the changelog (--watch, --follow)


def print_requests(rows, as_json: bool) -> None:
    from store.names import code_point, suspicious_characters

    if as_json:
        return echo_json([r.as_dict() for r in rows])  # "marks": why a name may pass for another one
    now = time.time()
    # A name that may pass for another one (mixed scripts, invisible or look-alike characters) gets ⚠, the
    # code points of its odd characters, and its marks under the table.
    table(
        ["ID", "USERNAME", "CLIENT ID", "PEER", "SOURCE", "TRIES", "LAST SEEN", "CODE", "STATUS", "LOOK-ALIKE"],
        [[str(r.id), ("⚠ " if r.marks else "") + printable(r.username, 40), printable(r.client_id, 30),
          printable(r.peer), r.source, str(r.attempts), ago(r.last_seen, now), r.pairing_code or "-",
          r.label + (f" by {printable(r.decided_by)}" if r.deciding_rule is not None else ""),
          " ".join(map(code_point, suspicious_characters(r.username))) or "-"]
         for r in rows],
    )
    marked = [r for r in rows if r.marks]
    asking = [r for r in rows if (r.requested_roles or r.requested_permissions) and r.status == "pending"]
    if marked or asking:
        click.echo()
    for r in marked:
        click.echo(f"⚠ #{r.id} {printable(r.username, 40)}: {printable('; '.join(r.marks))}")
    for r in asking:  # granted with `grant --requested`
        wants = []
        if r.requested_permissions:
            perms = [f"{p.get('resource')}={p.get('operation')}" for p in r.requested_permissions]
            wants.append(f"permission{'s' if len(perms) != 1 else ''} {printable(' '.join(perms), 200)}")
        if r.requested_roles:
            wants.append(f"role{'s' if len(r.requested_roles) != 1 else ''} "
                         f"{', '.join(map(printable, r.requested_roles))}")
        click.echo(f"#{r.id} {printable(r.username, 40)} asks for {' and '.join(wants)}")


@main.command()
@db_option
@click.argument("items", nargs=-1, required=True, metavar="NAME_OR_ID...")
@click.option("--permission", "-p", "permissions", multiple=True, metavar="PATTERN=ACCESS",
              help="Give a permission (repeatable); PATTERN may use {username} and {client_id}.")
@click.option("--role", "-r", "roles", multiple=True, metavar="NAME",
              help="Give a role (repeatable, in order); with or without --permission.")
@click.option("--requested", is_flag=True,
              help="Also give the permissions and roles the device asked for (HTTP requests); --permission wins "
                   "for the same pattern.")
@click.option("--force", is_flag=True, help="Grant a conflicting request; its rivals are denied.")
@yes_option
@click.pass_context
def grant(ctx, db, items, permissions, roles, requested, force, yes):
    """Create users from pending requests, with exactly the password the device sent.

    A NAME with * ? or [ ] (quote it: 'sensor-*') selects every pending request whose name matches: they are
    listed, and granted after you confirm (--yes for scripts)."""
    template = parse_permission_options(permissions)
    reg = registry(ctx, db)
    results = reg.grant(expand_name_patterns(reg, items, yes), template, actor=actor(), force=force,
                        requested=requested, roles=roles)
    report(results)


def expand_name_patterns(reg, items, yes: bool, verb: str = "Grant") -> list[str]:
    """Each glob among ``items`` replaced by the ids of the pending requests it matches, after showing them
    and asking once; exactly the requests shown are decided, not ones that arrive meanwhile."""
    from store.name_patterns import is_name_pattern

    out, shown = [], []
    for item in items:
        if not is_name_pattern(item):
            out.append(item)
            continue
        matched = reg.pending_matching(item)
        if not matched:
            raise fail(f"no pending request matches {printable(item)!r}")
        shown += matched
        out += [str(r.id) for r in matched]
    if shown:
        print_requests(shown, as_json=False)
        confirm(f"{verb} this request?" if len(shown) == 1 else f"{verb} these {len(shown)} requests?", yes)
    return out


def parse_permission_options(values) -> list[tuple[str, str]]:
    """Every --permission value read by the store's parser (one option may hold several, comma-separated)."""
    from store.validation import parse_permissions

    try:
        return [pair for value in values for pair in parse_permissions(value)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--permission") from None


@main.command()
@db_option
@click.argument("items", nargs=-1, required=True, metavar="NAME_OR_ID...")
@yes_option
@click.pass_context
def deny(ctx, db, items, yes):
    """Deny pending requests by id, name or glob (the same credentials stay denied). A glob lists what it
    matches and asks once, as several names do (--yes for scripts)."""
    from store.name_patterns import is_name_pattern

    reg = registry(ctx, db)
    if any(is_name_pattern(item) for item in items):
        targets = expand_name_patterns(reg, items, yes, verb="Deny")
    else:
        targets = list(items)
        if len(targets) > 1:
            confirm(f"Deny {len(targets)} requests ({', '.join(map(printable, targets))})?", yes)
    report(reg.deny(targets, actor=actor()))


# ------------------------------------------------------------------------- users
@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
        [[printable(u.name, 40), ",".join(f for f, on in (("admin", u.admin), ("disabled", u.disabled)) if on) or "-",
          online_word(presence[u.name]), last_connected(presence[u.name], now),
          ",".join(u.roles) or "-", permissions_text(u.permissions),
          f"{ago(u.created_at, now)} by {printable(u.created_by)} ({u.created_how})"] for u in rows],
    )


def permissions_text(permissions) -> str:
    return " ".join(f"{printable(p)}={a}" for p, a in permissions) or "-"


def members_text(count: int) -> str:
    return f"{count} member{'' if count == 1 else 's'}"


@main.group()
def user():
    """Add, remove, disable, enable a user, set its password or its roles."""


def refused(func):
    """Run a mutation and return its result; a refusal is one line and exit 1 (2 for a rejected value)."""
    try:
        return func()
    except InvalidValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except RefusedError as exc:
        raise fail(str(exc)) from None


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
    refused(lambda: reg.add_user(name, password, admin=admin, actor=actor()))
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
        refused(lambda: getattr(reg, method)(name, actor=actor()))
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
    refused(lambda: reg.set_password(name, password, actor=actor()))
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
        refused(lambda: getattr(reg, method)(name, role, actor=actor()))
        click.echo(done.format(name=printable(name), role=role))  # a role's name is ASCII (validated)

    return command


_user_role_change("add", "add_user_role", "Give user NAME the role ROLE, after the roles it has.",
                  "{name} now has role {role}")
_user_role_change("remove", "remove_user_role", "Take the role ROLE from user NAME.",
                  "{name} no longer has role {role}")


# ------------------------------------------------------------------------- roles
@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def roles(ctx, db, as_json):
    """List roles, their permissions and how many users have each."""
    rows = registry(ctx, db).roles()
    if as_json:
        return echo_json([r.as_dict() for r in rows])
    now = time.time()
    table(["ROLE", "MEMBERS", "PERMISSIONS", "CREATED"],
          [[r.name, str(r.members), permissions_text(r.permissions),
            f"{ago(r.created_at, now)} by {printable(r.created_by)}"] for r in rows])


@main.group()
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
    refused(lambda: reg.add_role(name, actor=actor()))
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
    refused(lambda: reg.remove_role(name, actor=actor(), force=force))
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
    count = refused(lambda: reg.role_permit(name, pattern, access, actor=actor()))
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
    count = refused(lambda: reg.role_forbid(name, pattern, actor=actor()))
    click.echo(f"role {name} ({members_text(count)}) no longer has {printable(pattern)}")


@main.command()
@db_option
@click.argument("name")
@click.argument("pattern")
@click.argument("access", type=click.Choice(ACCESS_VALUES))
@click.pass_context
def permit(ctx, db, name, pattern, access):
    """Let NAME use topics matching PATTERN (MQTT wildcards, {username}, {client_id})."""
    reg = registry(ctx, db)
    refused(lambda: reg.permit(name, pattern, access, actor=actor()))
    click.echo(f"{printable(name)} may now {access} {printable(pattern)}")


@main.command()
@db_option
@click.argument("name")
@click.argument("pattern")
@click.pass_context
def forbid(ctx, db, name, pattern):
    """Remove NAME's permission on PATTERN."""
    reg = registry(ctx, db)
    refused(lambda: reg.forbid(name, pattern, actor=actor()))
    click.echo(f"{printable(name)} no longer has {printable(pattern)}")


# -------------------------------------------------------------------- approval rules
@main.group()
def rule():
    """Approval rules: grant matching new requests by themselves while the registry is unlocked."""


def _expires(value: str | None) -> int | None:
    from store.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value, longest=EXPIRES_LONGEST)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None


EXPIRES_LONGEST = 365 * 24 * 3600


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
    view = refused(lambda: reg.add_rule(
        pattern, name=name, permissions=template, roles=roles, peer_network=peer_network, protocol=protocol,
        client_id_pattern=client_id_pattern, limit=limit, expires_in=_expires(expires), actor=actor()))
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
    from store.durations import describe

    if view.expires_at is None:
        return "never expires"
    if view.expired:
        return "expired"
    return f"expires in {describe(max(1, round(view.expires_at - now)))}"


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
    view = refused(lambda: reg.remove_rule(rule_ref, actor=actor()))
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
    removed = refused(lambda: reg.revoke_admitted(rule_ref, actor=actor()))
    click.echo(f"removed {len(removed)} user{'s' if len(removed) != 1 else ''} admitted by rule "
               f"{printable(rule_ref)}" + (f": {', '.join(printable(n) for n in removed)}" if removed else ""))
    if removed:
        click.echo("they still count against the rule's limit until the next unlock window (`rules`: N undone)")


@main.command()
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


# ------------------------------------------------------------------------ serve (owned by broker/)
@main.command()
@db_option
@click.option("--mqtt-bind", default="0.0.0.0:1883", show_default=True, metavar="HOST:PORT",
              help="Where the MQTT broker listens.")
@click.option("--http-bind", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where the HTTP registration API listens.")
@click.option("--mosquitto", "mosquitto", default=None, metavar="PATH",
              help="The mosquitto binary to supervise (default: found on PATH).")
@click.option("--mosquitto-include", default=None, metavar="FILE",
              help="Your own Mosquitto settings (listeners, TLS, websockets...), appended to the generated ones.")
@click.option("--broker-url", default=None, metavar="mqtt://HOST:PORT",
              help="Drive a Mosquitto the site already runs (see `mosquitto-config`) instead of starting one.")
@click.option("--plugin-socket", default=None, metavar="PATH",
              help="Where the registry plugin's datagrams arrive (default: registry.sock beside the database).")
@click.option("--socket-group", default=None, metavar="GROUP",
              help="Let this group (e.g. mosquitto) write to the plugin socket.")
@click.option("--per-address-limit", type=click.IntRange(min=1), default=30, show_default=True, metavar="N",
              help="New requests per peer address per minute; more are refused and counted as throttled.")
@click.option("--max-pending", type=click.IntRange(min=1), default=10_000, show_default=True, metavar="N",
              help="Pending requests in all; more are refused.")
@click.option("--max-packet-size", type=click.IntRange(min=MIN_PACKET_SIZE), default=MAX_PACKET_SIZE,
              show_default=True, metavar="BYTES", help="Supervised Mosquitto: larger MQTT packets close the connection unread.")
@click.option("--max-connections", type=click.IntRange(min=1), default=MAX_CONNECTIONS, show_default=True,
              metavar="N", help="Supervised Mosquitto: connections at once on its listener (the open-files limit bounds it too).")
@click.option("--mosquitto-user", default=None, metavar="NAME",
              help="Run as root: the user the supervised Mosquitto drops to (default: mosquitto, if it exists).")
@click.pass_context
def serve(ctx, db, mqtt_bind, http_bind, mosquitto, mosquitto_include, broker_url, plugin_socket, socket_group,
          per_address_limit, max_pending, max_packet_size, max_connections, mosquitto_user):
    """Run Mosquitto under the registry, the event relay and the HTTP API (until SIGINT, SIGTERM or SIGHUP)."""
    from broker.mosquitto.privileges import AUTO
    from broker.server import serve_main

    from store import RegistryConfig

    config = RegistryConfig(per_peer_per_minute=per_address_limit, max_pending=max_pending)
    ctx.exit(serve_main(db or ctx.find_root().params.get("db"), mqtt_bind, http_bind, config=config,
                        mosquitto=mosquitto, mosquitto_include=mosquitto_include, broker_url=broker_url,
                        plugin_socket=plugin_socket, socket_group=socket_group, max_packet_size=max_packet_size,
                        max_connections=max_connections, mosquitto_user=mosquitto_user or AUTO))


@main.command("mosquitto-config")
@db_option
@click.option("--conf-d", default="/etc/mosquitto/conf.d/zz-client-registry.conf", show_default=True,
              metavar="FILE", help="Where the Mosquitto snippet belongs (after the site's own plugin lines).")
@click.option("--secret", "secret_path", default="/etc/mosquitto/client-registry.secret", show_default=True,
              metavar="FILE", help="Where Mosquitto reads the registry's server secret (a copy, mode 0640).")
@click.option("--plugin", "plugin", default="/usr/local/lib/client-registry/registry_plugin.so", show_default=True,
              metavar="FILE", help="Where to build the registry plugin.")
@click.option("--socket", "socket_path", default="/run/client-registry/registry.sock", show_default=True,
              metavar="PATH", help="The socket the plugin writes to and `serve --plugin-socket` listens on.")
@click.option("--listener", default="1883", show_default=True, metavar="[HOST:]PORT",
              help="The MQTT listener of the snippet.")
@click.option("--write", is_flag=True, help="Also write the snippet to --conf-d (default: print it).")
@click.option("--password-file-site", is_flag=True,
              help="The site's Mosquitto uses a password_file: load only the plugin's first part (new devices "
                   "then register over HTTP; Mosquitto refuses unknown names before a last part could see them).")
@click.option("--site-conf", default="/etc/mosquitto/mosquitto.conf", show_default=True, metavar="FILE",
              help="The site's Mosquitto configuration: its password_file and dynamic-security file name the "
                   "accounts the registry must never take (read only).")
@click.option("--site-accounts", "site_files", multiple=True, metavar="FILE",
              help="Another site account file (dynamic-security JSON or password file); repeatable.")
@click.pass_context
def mosquitto_config(ctx, db, conf_d, secret_path, plugin, socket_path, listener, write, password_file_site,
                     site_conf, site_files):
    """Prepare a Mosquitto the site already runs (systemd) for `serve --broker-url`."""
    from pathlib import Path

    from broker.mosquitto.attach import prepare
    from broker.mosquitto.config import listener_line
    from broker.mosquitto.plugin_build import PluginBuildError
    from broker.mosquitto.site_accounts import SiteAccountsError
    from broker.address import AddressError, parse_bind
    from store.location import resolve

    try:
        host, port = parse_bind(listener, 1883)
    except AddressError as exc:
        raise fail(str(exc)) from None
    location = resolve(db or ctx.find_root().params.get("db"))
    try:
        plan = prepare(location, conf_d=Path(conf_d), secret=Path(secret_path),
                       plugin=Path(plugin), socket=Path(socket_path), listener=listener_line(host, port),
                       write_conf=write, db=location, password_file_site=password_file_site,
                       broker_url=f"mqtt://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",
                       site_conf=Path(site_conf), site_files=[Path(f) for f in site_files])
    except (OSError, ValueError, PluginBuildError, SiteAccountsError) as exc:
        raise fail(str(exc)) from None
    if not write:
        click.echo(plan.snippet)
    for path in plan.written:
        click.echo(f"wrote {path}", err=True)
    for path in plan.unchanged:
        click.echo(f"unchanged {path}", err=True)
    click.echo(f"site accounts (never taken by the registry) from: {', '.join(map(str, plan.site_files)) or 'none'}",
               err=True)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo("then:", err=True)
    for step in plan.steps:
        click.echo(f"  {step}", err=True)


# ------------------------------------------------------------------------ dashboard and simulate (owned by tui/)
@main.command()
@db_option
@mqtt_option
@click.option("--no-embed", is_flag=True, help="Never start an embedded broker; keep retrying the given one.")
@click.option("--http-bind", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where the embedded server's HTTP API listens (only when it is embedded; `none`: no HTTP API).")
@click.pass_context
def dashboard(ctx, db=None, mqtt=None, no_embed=False, http_bind="127.0.0.1:8080"):
    """Open the keyboard-driven dashboard (also what `client-registry` alone does)."""
    from .launch import run_dashboard

    mqtt = mqtt or ctx.find_root().params.get("mqtt") or os.environ.get("CLIENT_REGISTRY_MQTT")
    ctx.exit(run_dashboard(db or ctx.find_root().params.get("db"), mqtt, embed=not no_embed, http_bind=http_bind))


@main.command()
@click.option("--devices", "--count", "-n", "devices", type=click.IntRange(min=1, max=10_000), default=3,
              show_default=True, help="How many simulated devices.")
@click.option("--prefix", metavar="NAME",
              help="Name them NAME-xxxx (e.g. sensor: sensor-3f2a, for `rule add 'sensor-*'`).")
@click.option("--mqtt", "mqtt", default="mqtt://127.0.0.1:1883", show_default=True, metavar="URL",
              help="Broker the devices connect to.")
@click.option("--until-admitted", is_flag=True, help="Exit once every device got in (default: keep running).")
@db_option
def simulate(devices, prefix, mqtt, until_admitted, db):
    """Run simulated devices that knock like real firmware and print their pairing codes. Once in, each says
    what it may use: its grants as the registry's database here holds them (--db), checked against the broker."""
    from store.validation import username_problem

    from .simulate import run_simulation

    if prefix is not None and username_problem(f"{prefix}-0000"):
        raise click.BadParameter(username_problem(f"{prefix}-0000"), param_hint="--prefix")
    raise click.exceptions.Exit(run_simulation(devices, mqtt, until_admitted=until_admitted, prefix=prefix,
                                               grants=local_grants(db)))


def local_grants(db: str | None):
    """A lookup of a user's grants in the registry's database on this machine, or None when there is none
    here (the devices then probe a few likely topics)."""
    try:
        reg = open_registry(db, create=False)
    except StoreError:
        return None

    def lookup(username: str):
        try:
            grants = reg.grants(username)
        except StoreError:
            return None
        return None if grants is None else list(grants.topics)

    return lookup
