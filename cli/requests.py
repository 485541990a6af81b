"""Registration requests: `requests` (--watch), `grant`, `deny`."""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import click

from store.device_text import printable

from .shared import (
    WATCH_EVERY,
    actor,
    age,
    certificate_days_option,
    confirm,
    db_option,
    echo_json,
    fail,
    json_option,
    parse_permission_options,
    registry,
    report,
    table,
    yes_option,
)


@click.command()
@db_option
@click.option("--all", "include_all", is_flag=True, help="Also granted, denied and expired requests.")
@json_option
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


def print_requests(rows, as_json: bool) -> None:
    from store.certificate_text import certificate_fields, request_identity
    from store.names import code_point, suspicious_characters

    if as_json:
        return echo_json([r.as_dict() for r in rows])  # "marks": why a name may pass for another one
    now = time.time()
    # A name that may pass for another one (mixed scripts, invisible or look-alike characters) gets ⚠, the
    # code points of its odd characters, and its marks under the table. CERT: csr (it sent a CSR) or cert (it
    # presented a certificate; CODE is then its fingerprint's), with what to compare under the table.
    table(
        ["ID", "USERNAME", "CLIENT ID", "PEER", "SOURCE", "TRIES", "LAST SEEN", "CODE", "CERT", "STATUS",
         "LOOK-ALIKE"],
        [[str(r.id), ("⚠ " if r.marks else "") + printable(r.username, 40), printable(r.client_id, 30),
          printable(r.peer), r.source, str(r.attempts), age(r.last_seen, now), r.pairing_code or "-",
          request_identity(r) or "-",
          r.label + (f" by {printable(r.decided_by)}" if r.deciding_rule is not None else ""),
          " ".join(map(code_point, suspicious_characters(r.username))) or "-"]
         for r in rows],
    )
    marked = [r for r in rows if r.marks]
    asking = [r for r in rows if (r.requested_roles or r.requested_permissions) and r.status == "pending"]
    certified = [r for r in rows if request_identity(r) and r.status == "pending"]
    if marked or asking or certified:
        click.echo()
    for r in certified:
        click.echo(f"#{r.id} {printable(r.username, 40)} ({request_identity(r)}):")
        for label, value in certificate_fields(r):
            click.echo(f"    {label:<12} {printable(value, 300)}")
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


@click.command()
@db_option
@click.argument("items", nargs=-1, required=True, metavar="NAME_OR_ID...")
@click.option("--permission", "-p", "permissions", multiple=True, metavar="PATTERN=ACCESS",
              help="Give a permission (repeatable); PATTERN may use {username} and {client_id}.")
@click.option("--role", "-r", "roles", multiple=True, metavar="NAME",
              help="Give a role (repeatable, in order); with or without --permission.")
@click.option("--requested", is_flag=True,
              help="Also give the permissions and roles the device asked for (HTTP requests); --permission wins "
                   "for the same pattern.")
@click.option("--force", is_flag=True, help="Grant a conflicting request (its rivals are denied), a re-key or a "
                                            "certificate rotation.")
@certificate_days_option
@yes_option
@click.pass_context
def grant(ctx, db, items, permissions, roles, requested, force, certificate_days, yes):
    """Create users from pending requests, with exactly the password the device sent (or bound to the
    certificate it presented; a CSR request is signed by the site CA, which the device fetches).

    A NAME with * ? or [ ] (quote it: 'sensor-*') selects every pending request whose name matches: they are
    listed, and granted after you confirm (--yes for scripts)."""
    template = parse_permission_options(permissions)
    reg = registry(ctx, db, certificate_days=certificate_days)
    results = reg.grant(expand_name_patterns(reg, items, yes), template, actor=actor(), force=force,
                        requested=requested, roles=roles)
    report([replace(r, message=f"{r.message} (--force)") if r.needs_force else r
            for r in results])  # the store's refusal names the choice; here it is an option


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


@click.command()
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


COMMANDS = (requests, grant, deny)
