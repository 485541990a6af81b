"""Attaching the registry to a Mosquitto the site already runs (`client-registry mosquitto-config`).

It writes what that Mosquitto needs (the registry plugin, built for this machine; a copy of the registry's
server secret that Mosquitto's group may read; the conf.d snippet) and says what is left for the operator to
do, as commands. The site's own dynamic-security file or password file is never touched: the registry's
accounts, its service account included, live in the plugin. `serve --broker-url` then drives that broker."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import config as mconf
from .plugin_build import build_plugin

DEFAULT_CONF_D = Path("/etc/mosquitto/conf.d/zz-client-registry.conf")
DEFAULT_PLUGIN = Path("/usr/local/lib/client-registry/registry_plugin.so")
DEFAULT_SOCKET = Path("/run/client-registry/registry.sock")
DEFAULT_SECRET = Path("/etc/mosquitto/client-registry.secret")
SNAPSHOT_NAME = "accounts.snapshot"  # beside the socket: the folder Mosquitto's group may read


@dataclass(frozen=True)
class AttachPlan:
    snippet: str
    conf_d: Path
    written: list[Path]
    steps: list[str]


def snapshot_beside(socket: Path) -> Path:
    return socket.parent / SNAPSHOT_NAME


def prepare(location: str, *, conf_d: Path = DEFAULT_CONF_D, plugin: Path = DEFAULT_PLUGIN,
            socket: Path = DEFAULT_SOCKET, secret: Path = DEFAULT_SECRET, listener: str = "listener 1883",
            write_conf: bool = False, db: str = "", broker_url: str = "mqtt://127.0.0.1:1883",
            password_file_site: bool = False) -> AttachPlan:
    """Build the plugin, copy the secret (and write the snippet when ``write_conf``)."""
    from store.location import companion

    written = [build_plugin(plugin)]
    source = companion(location, "secret")
    if not source.is_file():
        raise OSError(f"{source} does not exist yet: run `client-registry init` first")
    if write_conf:
        secret.parent.mkdir(parents=True, exist_ok=True)
        tmp = secret.with_name(f".{secret.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as handle:
            handle.write(source.read_text())
        try:
            shutil.chown(tmp, group="mosquitto")
        except (LookupError, PermissionError):
            pass  # said in the steps
        os.replace(tmp, secret)
        written.append(secret)
    snippet = mconf.render_attach_snippet(listener=listener, registry_plugin=plugin, secret=secret,
                                          snapshot=snapshot_beside(socket), socket=socket,
                                          password_file_site=password_file_site)
    if write_conf:
        conf_d.parent.mkdir(parents=True, exist_ok=True)
        conf_d.write_text(snippet)
        written.append(conf_d)
    db_opt = f" --db {db}" if db else ""
    steps = [
        *([] if write_conf else [f"save the snippet above as {conf_d}",
                                 f"install -m 0640 -g mosquitto {source} {secret}"]),
        f"chgrp mosquitto {secret}   # Mosquitto reads it when it loads the plugin",
        f"install -d -m 0750 -g mosquitto {socket.parent}   # the registry writes its socket and snapshot there",
        f"client-registry{db_opt} serve --broker-url {broker_url} --plugin-socket {socket} "
        "--socket-group mosquitto   # start it first: it writes the snapshot",
        "systemctl restart mosquitto",
    ]
    return AttachPlan(snippet, conf_d, written, steps)
