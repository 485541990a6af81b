"""The service: `serve` (Mosquitto under the registry, the relay, the HTTP API) and `mosquitto-config` (a
Mosquitto the site already runs). The work is broker/'s; these commands only read options and report."""

from __future__ import annotations

import click

from broker.mosquitto.config import MAX_CONNECTIONS, MAX_PACKET_SIZE, MIN_PACKET_SIZE

from .shared import certificate_days_option, db_option, fail


@click.command()
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
@certificate_days_option
@click.pass_context
def serve(ctx, db, mqtt_bind, http_bind, mosquitto, mosquitto_include, broker_url, plugin_socket, socket_group,
          per_address_limit, max_pending, max_packet_size, max_connections, mosquitto_user, certificate_days):
    """Run Mosquitto under the registry, the event relay and the HTTP API (until SIGINT, SIGTERM or SIGHUP)."""
    from broker.mosquitto.privileges import AUTO
    from broker.server import serve_main
    from store import RegistryConfig

    config = RegistryConfig(per_peer_per_minute=per_address_limit, max_pending=max_pending)
    ctx.exit(serve_main(db or ctx.find_root().params.get("db"), mqtt_bind, http_bind, config=config,
                        mosquitto=mosquitto, mosquitto_include=mosquitto_include, broker_url=broker_url,
                        plugin_socket=plugin_socket, socket_group=socket_group, max_packet_size=max_packet_size,
                        max_connections=max_connections, mosquitto_user=mosquitto_user or AUTO,
                        certificate_days=certificate_days))


@click.command("mosquitto-config")
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

    from broker.address import AddressError, parse_bind
    from broker.mosquitto.attach import prepare
    from broker.mosquitto.config import listener_line
    from broker.mosquitto.plugin_build import PluginBuildError
    from broker.mosquitto.site_accounts import SiteAccountsError
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


COMMANDS = (serve, mosquitto_config)
