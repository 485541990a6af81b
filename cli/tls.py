"""`tls init`: the site CA and a server certificate for a quick start, beside the database. The work is
broker/certificates.py's; this command only reads options and says what it wrote and what to run next."""

from __future__ import annotations

import ipaddress
import shlex
import socket

import click

from .shared import EXIT_USAGE, database, db_option, fail


@click.group()
def tls():
    """TLS for devices: the site CA and the server certificate."""


@tls.command("init")
@db_option
@click.option("--name", "names", multiple=True, metavar="HOST",
              help="A host name or IP address devices connect to (repeatable; default: this machine's name, "
                   "localhost and 127.0.0.1). The first is the certificate's CN.")
@click.pass_context
def tls_init(ctx, db, names):
    """Make the site CA and a server certificate (files named after the database; never overwritten)."""
    from broker.certificates import CertificateError, TlsFiles, init_files
    from broker.mosquitto import privileges
    from store.location import resolve

    hosts = list(dict.fromkeys([name.strip() for name in names] or [socket.getfqdn(), "localhost", "127.0.0.1"]))
    for host in hosts:
        if not _host_ok(host):
            raise fail(f"invalid --name {host!r}: a host name (letters, digits, '-', '.') or an IP address",
                       EXIT_USAGE)
    given = database(ctx, db)
    location = resolve(given)
    files = TlsFiles.for_database(location)
    # A root serve runs Mosquitto as `mosquitto`, which reads the certificate, key and CRL (not the CA key)
    user = privileges.default_user()
    group = privileges.lookup(user).gid if user else None
    try:
        init_files(files, hosts, group=group)
    except CertificateError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the TLS files: {exc.strerror or exc}") from None
    click.echo(f"site CA:            {files.ca_cert}  (give this one to devices and dashboards)")
    click.echo(f"site CA key:        {files.ca_key}  (signs device certificates: keep it here, 0600)")
    click.echo(f"server certificate: {files.server_cert}  for {', '.join(hosts)}")
    click.echo(f"server key:         {files.server_key}")
    click.echo(f"revocation list:    {files.crl}")
    db_flag = f" --db {shlex.quote(location)}" if given else ""
    click.echo("next:")
    click.echo(f"  client-registry serve{db_flag} --tls --http-tls")
    click.echo(f"  mosquitto_pub --cafile {shlex.quote(str(files.ca_cert))} -h {shlex.quote(hosts[0])} -p 8883 "
               "-u DEVICE -P PASSWORD -t hello -m hi")


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() and not label.startswith("-")
        for label in labels)


COMMANDS = (tls,)
