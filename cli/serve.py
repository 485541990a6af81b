"""The service: `serve` (Mosquitto under the registry, the relay, the HTTP API) and `mosquitto-config` (a
Mosquitto the site already runs). The work is broker/'s; these commands only read options and report."""

from __future__ import annotations

import click

from broker.mosquitto.config import MAX_CONNECTIONS, MAX_PACKET_SIZE, MIN_PACKET_SIZE

from .shared import EXIT_USAGE, certificate_days_option, database, db_option, fail


@click.command()
@db_option
@click.option("--mqtt-bind", default="0.0.0.0:1883", show_default=True, metavar="HOST:PORT",
              help="Where the MQTT broker listens in plain text; `none`: only over TLS (the service then uses a "
                   "loopback-only listener of its own).")
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
              show_default=True, metavar="BYTES",
              help="Supervised Mosquitto: larger MQTT packets close the connection unread.")
@click.option("--max-connections", type=click.IntRange(min=1), default=MAX_CONNECTIONS, show_default=True,
              metavar="N",
              help="Supervised Mosquitto: connections at once on its listener (the open-files limit bounds it too).")
@click.option("--mosquitto-user", default=None, metavar="NAME",
              help="Run as root: the user the supervised Mosquitto drops to (default: mosquitto, if it exists).")
@click.option("--tls", "tls_init", is_flag=True,
              help="Add a TLS listener with the files `tls init` made beside the database (site CA, server "
                   "certificate, CRL).")
@click.option("--tls-cert", default=None, metavar="FILE", help="Add a TLS listener with this server certificate "
              "(PEM, its chain after it).")
@click.option("--tls-key", default=None, metavar="FILE", help="The server certificate's private key (PEM).")
@click.option("--tls-ca", default=None, metavar="FILE",
              help="The CA that signs device certificates (needed by --tls-require-certificate).")
@click.option("--mqtt-tls-bind", default=None, metavar="HOST:PORT",
              help="Where the TLS listener listens (default 0.0.0.0:8883).")
@click.option("--tls-require-certificate", is_flag=True,
              help="Every device on the TLS listener presents a certificate signed by the CA (certificate devices).")
@click.option("--http-tls", is_flag=True, help="Serve the HTTP registration API over HTTPS with the same certificate.")
@certificate_days_option
@click.pass_context
def serve(ctx, db, mqtt_bind, http_bind, mosquitto, mosquitto_include, broker_url, plugin_socket, socket_group,
          per_address_limit, max_pending, max_packet_size, max_connections, mosquitto_user, tls_init, tls_cert,
          tls_key, tls_ca, mqtt_tls_bind, tls_require_certificate, http_tls, certificate_days):
    """Run Mosquitto under the registry, the event relay and the HTTP API (until SIGINT, SIGTERM or SIGHUP)."""
    from broker.mosquitto.privileges import AUTO
    from broker.server import serve_main
    from store import RegistryConfig
    from store.location import resolve

    location = resolve(database(ctx, db))
    tls = tls_settings(location, tls_init, tls_cert, tls_key, tls_ca, mqtt_tls_bind, tls_require_certificate,
                       http_tls)
    plain = None if mqtt_bind.strip().lower() == "none" else mqtt_bind
    if plain is None and (tls is None or broker_url):
        raise fail("--mqtt-bind none leaves devices nowhere to connect: add a TLS listener (--tls or --tls-cert)",
                   EXIT_USAGE)
    config = RegistryConfig(per_peer_per_minute=per_address_limit, max_pending=max_pending)
    ctx.exit(serve_main(location, plain, http_bind, config=config, tls=tls,
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
    location = resolve(database(ctx, db))
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


def tls_settings(location, tls_init, cert, key, ca, bind, require_certificate, http_tls):
    """The TLS listener serve's options ask for (files are checked when the server starts), or None."""
    from pathlib import Path

    from broker.address import AddressError, parse_bind
    from broker.certificates import TlsFiles
    from broker.tls import TLS_PORT, TlsSettings

    if tls_init and (cert or key):
        raise fail("--tls uses the files `tls init` made: leave out --tls-cert and --tls-key", EXIT_USAGE)
    if not tls_init and not cert:
        if key or ca or bind or require_certificate or http_tls:
            raise fail("a TLS listener needs a certificate: --tls (the `tls init` files) or --tls-cert and "
                       "--tls-key", EXIT_USAGE)
        return None
    if cert and not key:
        raise fail("--tls-cert needs --tls-key", EXIT_USAGE)
    try:
        address = parse_bind(bind, TLS_PORT) if bind else ("0.0.0.0", TLS_PORT)
    except AddressError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    options = {"bind": address, "require_certificate": require_certificate, "http": http_tls}
    if tls_init:
        settings = TlsSettings.of_database(location, **options)
        return settings if ca is None else TlsSettings(settings.cert, settings.key, Path(ca), None, **options)
    ours = TlsFiles.for_database(location)
    own_ca = Path(ca) if ca else None
    # the registry's CA (tls init's) signs and revokes device certificates: its CRL goes with it
    crl = ours.crl if own_ca is not None and own_ca.resolve() == ours.ca_cert.resolve() else None
    return TlsSettings(Path(cert), Path(key), own_ca, crl, **options)


COMMANDS = (serve, mosquitto_config)
