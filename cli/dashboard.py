"""What runs in a terminal of its own: `dashboard` (also `client-registry` alone) and `simulate`. The work
is tui/'s; these commands only read options."""

from __future__ import annotations

import os

import click

from store import StoreError, open_registry

from .shared import database, db_option, fail, mqtt_ca_option, mqtt_option


@click.command()
@db_option
@mqtt_option
@click.option("--no-embed", is_flag=True, help="Never start an embedded broker; keep retrying the given one.")
@click.option("--http-bind", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where the embedded server's HTTP API listens (only when it is embedded; `none`: no HTTP API).")
@mqtt_ca_option
@click.pass_context
def dashboard(ctx, db=None, mqtt=None, no_embed=False, http_bind="127.0.0.1:8080", mqtt_ca=None):
    """Open the keyboard-driven dashboard (also what `client-registry` alone does)."""
    from tui.launch import run_dashboard

    root = ctx.find_root().params
    mqtt = mqtt or root.get("mqtt") or os.environ.get("CLIENT_REGISTRY_MQTT")
    ctx.exit(run_dashboard(database(ctx, db), mqtt, embed=not no_embed, http_bind=http_bind,
                           mqtt_ca=mqtt_ca or root.get("mqtt_ca")))


@click.command()
@click.option("--devices", "--count", "-n", "devices", type=click.IntRange(min=1, max=10_000), default=3,
              show_default=True, help="How many simulated devices.")
@click.option("--prefix", metavar="NAME",
              help="Name them NAME-xxxx (e.g. sensor: sensor-3f2a, for `rule add 'sensor-*'`).")
@click.option("--mqtt", "mqtt", default=None, metavar="URL",
              help="Broker the devices connect to (default: the --mqtt given before the command, else "
                   "mqtt://127.0.0.1:1883; only its host and port are used).")
@click.option("--until-admitted", is_flag=True, help="Exit once every device got in (default: keep running).")
@db_option
@mqtt_ca_option
@click.pass_context
def simulate(ctx, devices, prefix, mqtt, until_admitted, db, mqtt_ca):
    """Run simulated devices that knock like real firmware and print their pairing codes. Once in, each says
    what it may use: its grants as the registry's database here holds them (--db), checked against the broker."""
    from store.validation import username_problem
    from tui.launch import LaunchError, tls_ca
    from tui.simulate import run_simulation

    if prefix is not None and username_problem(f"{prefix}-0000"):
        raise click.BadParameter(username_problem(f"{prefix}-0000"), param_hint="--prefix")
    root = ctx.find_root().params  # --db and --mqtt may come before the command, as for every other one
    mqtt = mqtt or root.get("mqtt") or "mqtt://127.0.0.1:1883"
    db = database(ctx, db)
    try:
        ca = tls_ca(db, mqtt_ca or root.get("mqtt_ca"))
    except LaunchError as exc:
        raise fail(str(exc)) from None
    raise click.exceptions.Exit(run_simulation(devices, mqtt, until_admitted=until_admitted, prefix=prefix,
                                               grants=local_grants(db), ca=ca))


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


COMMANDS = (dashboard, simulate)
