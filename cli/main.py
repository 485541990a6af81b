"""The `client-registry` command: the group, its shared options, and the one place that turns the store's
errors into exit codes. Each command group lives in its own module beside this one.

Exit codes: 0 success, 1 refused (one line on stderr saying why), 2 usage error.
"""

from __future__ import annotations

import click

from store import InvalidValueError, StoreError
from tui.read_your_writes import APPLY_TIMEOUT, until_applied

from . import audit, dashboard, requests, roles, rules, serve, tls, users, window
from .shared import EXIT_USAGE, db_option, fail, mqtt_ca_option, mqtt_option

STORE_ONLY_EVENTS = ("rule.",)


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


@click.group(cls=RegistryGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@db_option
@mqtt_option
@mqtt_ca_option
@click.option("--no-embed", is_flag=True, help="Dashboard: never start an embedded broker.")
@click.option("--http-bind", default=None, metavar="HOST:PORT",
              help="Dashboard: where the embedded server's HTTP API listens (default 127.0.0.1:8080; `none`).")
@click.version_option(package_name="client-registry")
@click.pass_context
def main(ctx, db, mqtt, mqtt_ca, no_embed, http_bind):
    """Admit self-registering MQTT devices: unlock, watch requests, grant or deny.

    With no command, opens the dashboard (its options may come first). --db and --mqtt may come before or
    after any command."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(dashboard.dashboard, no_embed=no_embed, http_bind=http_bind or "127.0.0.1:8080",
                   mqtt_ca=mqtt_ca)


for _group in (window, requests, users, roles, rules, audit, serve, tls, dashboard):
    for _command in _group.COMMANDS:
        main.add_command(_command)
