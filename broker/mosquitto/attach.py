"""Attaching the registry to a Mosquitto the site already runs (`client-registry mosquitto-config`).

It writes what that Mosquitto needs (the registry plugin, built for this machine; the dynamic-security file
with the service account, merged into the site's own if there is one; the conf.d snippet) and says what is
left for the operator to do, as commands. `serve --broker-url` then drives that broker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import config as mconf
from .plugin_build import build_plugin

DEFAULT_CONF_D = Path("/etc/mosquitto/conf.d/client-registry.conf")
DEFAULT_DYNSEC = Path("/var/lib/mosquitto/dynamic-security.json")
DEFAULT_PLUGIN = Path("/usr/local/lib/client-registry/registry_plugin.so")
DEFAULT_SOCKET = Path("/run/client-registry/registry.sock")


@dataclass(frozen=True)
class AttachPlan:
    snippet: str
    conf_d: Path
    written: list[Path]
    steps: list[str]


def prepare(location: str, *, conf_d: Path = DEFAULT_CONF_D, dynsec_file: Path = DEFAULT_DYNSEC,
            plugin: Path = DEFAULT_PLUGIN, socket: Path = DEFAULT_SOCKET, listener: str = "listener 1883",
            write_conf: bool = False, db: str = "", broker_url: str = "mqtt://127.0.0.1:1883") -> AttachPlan:
    """Build the plugin, write the dynamic-security file (and the snippet when ``write_conf``)."""
    dynsec_so = mconf.find_dynsec_plugin()
    if dynsec_so is None:
        raise OSError("Mosquitto's dynamic-security plugin was not found: apt-get install mosquitto")
    written = [build_plugin(plugin)]
    service = mconf.load_or_create_service_credentials(mconf.MosquittoFiles(location).service_credentials)
    dynsec_file.parent.mkdir(parents=True, exist_ok=True)
    existed = dynsec_file.exists()
    mconf.ensure_dynsec_file(dynsec_file, service, deny_by_default=not existed)
    written.append(dynsec_file)
    snippet = mconf.render_attach_snippet(listener=listener, dynsec_plugin=dynsec_so, dynsec_file=dynsec_file,
                                          registry_plugin=plugin, socket=socket)
    if write_conf:
        conf_d.parent.mkdir(parents=True, exist_ok=True)
        conf_d.write_text(snippet)
        written.append(conf_d)
    db_opt = f" --db {db}" if db else ""
    steps = [
        *([] if write_conf else [f"save the snippet above as {conf_d}"]),
        f"chown mosquitto:mosquitto {dynsec_file}   # Mosquitto rewrites it on every change",
        f"install -d -m 0750 -g mosquitto {socket.parent}   # the registry creates the socket in it",
        "systemctl restart mosquitto",
        f"client-registry{db_opt} serve --broker-url {broker_url} --plugin-socket {socket} "
        "--socket-group mosquitto",
    ]
    return AttachPlan(snippet, conf_d, written, steps)
