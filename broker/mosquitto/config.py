"""The files a Mosquitto under the registry needs: its configuration and the service account's credentials,
in the registry's data directory (or where an operator puts them).

The service account (``client-registry-service``) is how the registry drives Mosquitto: it sends the registry
plugin its control messages and publishes the events. It lives only in the registry plugin (its verifier under
the server secret, in the snapshot), never in the registry's users, so no CLI command can remove it and no
device can ask for its name (``store.validation.reserved_problem``). Its password is random, kept in
``service.credentials`` (0600) beside the database.
"""

from __future__ import annotations

import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from store.console import Credentials as ServiceCredentials  # the same shape, and the same masked repr
from store.private_files import write_private  # also mconf.write_private for the server's conf

SERVICE_USER = "client-registry-service"
# Bounds of a supervised Mosquitto (serve --max-packet-size, --max-connections). Mosquitto reads a packet whole
# into memory before anyone is authenticated: without a bound one CONNECT may announce 256 MiB.
MAX_PACKET_SIZE = 256 * 1024
MAX_CONNECTIONS = 100_000  # per listener; Mosquitto is bounded by the open-files limit (RLIMIT_NOFILE) too
MIN_PACKET_SIZE = 160 * 1024  # the service's own control messages are up to 128 KiB (plugin_accounts)


def load_or_create_service_credentials(path: Path) -> ServiceCredentials:
    try:
        password = path.read_text().strip()
        if password:
            return ServiceCredentials(SERVICE_USER, password)
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    write_private(path, password + "\n")
    return ServiceCredentials(SERVICE_USER, password)


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def listener_line(host: str, port: int) -> str:
    """Mosquitto's `listener` line: all interfaces for 0.0.0.0 / ::, else exactly the host."""
    if host in ("", "0.0.0.0", "::"):
        return f"listener {port}"
    return f"listener {port} {host}"


@dataclass(frozen=True)
class MosquittoFiles:
    """Where one registry's Mosquitto files live: beside its database and named after it (``registry.db``
    -> ``registry.mosquitto.conf``, ...), so two registries in one folder never share one."""

    location: str  # the registry's database (store.location)

    def _named(self, name: str) -> Path:
        from store.location import companion

        return companion(self.location, name)

    @property
    def conf(self) -> Path:
        return self._named("mosquitto.conf")

    @property
    def snapshot(self) -> Path:
        return self._named("accounts.snapshot")

    @property
    def socket(self) -> Path:
        from ..plugin_socket import SOCKET_NAME

        return self._named(SOCKET_NAME)

    @property
    def service_credentials(self) -> Path:
        return self._named("service.credentials")

    @property
    def plugin(self) -> Path:  # a copy of the built plugin that a Mosquitto dropped to its own user can load
        return self._named("mosquitto-plugin.so")

    @property
    def persistence(self) -> Path:
        return self._named("mosquitto-data")


def render_conf(*, listener: str, registry_plugin: Path, secret: Path, snapshot: Path, socket: Path,
                user: str | None, persistence: Path | None, include: str = "",
                max_packet_size: int = MAX_PACKET_SIZE, max_connections: int = MAX_CONNECTIONS,
                tls_listener: str | None = None, tls_options: list[str] | None = None) -> str:
    """The configuration of a supervised Mosquitto: one listener (and a TLS one: ``tls_listener`` followed by
    ``tls_options``, broker/tls.py), no anonymous access, bounded packets and connections, and the registry
    plugin, which answers every login and every topic check itself (plugin_protocol.md)."""
    tls = []
    if tls_listener is not None:
        tls = [tls_listener, f"max_connections {max_connections}", *(tls_options or []),
               # without it each TLS CONNACK waits behind the session tickets for the client's delayed ACK
               # (~50 ms a connect, measured with 2.0.11); a global option in 2.0
               "set_tcp_nodelay true"]
    lines = [
        "# Written by client-registry at every start; edits are lost. Add your own settings with",
        "# `client-registry serve --mosquitto-include FILE`.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"max_packet_size {max_packet_size}",  # larger packets close the connection before they are read
        listener,
        f"max_connections {max_connections}",  # this listener's; an included listener sets its own
        *tls,
        *plugin_lines(registry_plugin, secret=secret, snapshot=snapshot, socket=socket),
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp false",
        "connection_messages false",  # who is online comes from the plugin (a storm would log 20,000 lines)
    ]
    if user:
        lines.append(f"user {user}")
    if persistence is not None:
        lines += ["persistence true", f"persistence_location {persistence}/"]
    else:
        lines.append("persistence false")
    text = "\n".join(lines) + "\n"
    if include:  # the operator's own listeners, TLS, websockets...: Mosquitto reads them after ours
        text += "\n# --mosquitto-include\n" + include.rstrip("\n") + "\n"
    return text


def plugin_lines(registry_plugin: Path, *, secret: Path, snapshot: Path, socket: Path, part: str = "all") -> list[str]:
    lines = [f"plugin {registry_plugin}"]
    if part != "all":
        lines.append(f"plugin_opt_part {part}")
    lines += [f"plugin_opt_secret_file {secret}", f"plugin_opt_snapshot {snapshot}", f"plugin_opt_socket {socket}"]
    return lines


def render_attach_snippet(*, listener: str, registry_plugin: Path, secret: Path, snapshot: Path,
                          socket: Path, password_file_site: bool = False) -> str:
    """The conf.d file that lets a Mosquitto the site runs (systemd's mosquitto.service) admit devices through
    the registry: the registry plugin twice, after the site's own plugins. Its first part answers the accounts
    the registry manages and defers every other name (the site's dynamic security answers its own); its last
    part records the names nobody knew and refuses them. A site with a ``password_file`` gets the first part only:
    Mosquitto runs the password file's check after every plugin, so a last part would refuse the file's users."""
    last = [] if password_file_site else plugin_lines(registry_plugin, secret=secret, snapshot=snapshot,
                                                      socket=socket, part="last")
    return "\n".join([
        "# client-registry: keep this file after the site's own `plugin` lines (conf.d is read in name order).",
        "# The first part answers the registry's accounts and defers every other name; the last part hands the",
        "# names nobody knew to `client-registry serve` over the socket, and refuses them.",
        "per_listener_settings false",
        "allow_anonymous false",
        listener,
        *plugin_lines(registry_plugin, secret=secret, snapshot=snapshot, socket=socket, part="first"),
        *last,
    ]) + "\n"
