"""Attaching the registry to a Mosquitto the site already runs (`client-registry mosquitto-config`).

It writes what that Mosquitto needs (the registry plugin, built for this machine; a copy of the registry's
server secret that Mosquitto's group may read; the conf.d snippet) and says what is left for the operator to
do, as commands. The site's own dynamic-security file or password file is never touched: the registry's
accounts, its service account included, live in the plugin. `serve --broker-url` then drives that broker."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import config as mconf
from . import site_accounts
from .plugin_build import build_plugin

DEFAULT_CONF_D = Path("/etc/mosquitto/conf.d/zz-client-registry.conf")
DEFAULT_PLUGIN = Path("/usr/local/lib/client-registry/registry_plugin.so")
DEFAULT_SOCKET = Path("/run/client-registry/registry.sock")
DEFAULT_SECRET = Path("/etc/mosquitto/client-registry.secret")
DEFAULT_SITE_CONF = Path("/etc/mosquitto/mosquitto.conf")
SNAPSHOT_NAME = "accounts.snapshot"  # beside the socket: the folder Mosquitto's group may read


@dataclass(frozen=True)
class AttachPlan:
    snippet: str
    conf_d: Path
    written: list[Path]
    steps: list[str]
    unchanged: list[Path] = field(default_factory=list)
    site_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def snapshot_beside(socket: Path) -> Path:
    return socket.parent / SNAPSHOT_NAME


def _names(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def install_file(path: Path, data: bytes, *, mode: int, group: str | None = None) -> bool:
    """Write ``data`` to ``path`` atomically and return True, or False when it already holds exactly that
    (left untouched: running twice changes nothing). A file that exists keeps its owner, group and mode (the
    site may have given it to Mosquitto's user); one that cannot keep them is refused before anything is
    written, naming the chown to run. A new file gets ``mode`` and ``group``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    try:
        if st is not None and path.is_file() and path.read_bytes() == data:
            return False
    except PermissionError:
        pass  # not ours to read: refused below unless we may give it back to its owner
    if st is not None and os.geteuid() != 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        raise OSError(f"{path} belongs to {_names(st.st_uid, st.st_gid)} and this user cannot keep that when "
                      f"rewriting it: run mosquitto-config as root, or hand it over first "
                      f"(chown {_names(os.geteuid(), os.getegid())} {path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if st is not None:
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
        else:
            if group is not None:
                with contextlib.suppress(KeyError, PermissionError):  # said in the steps
                    os.chown(tmp, -1, grp.getgrnam(group).gr_gid)
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def running_mosquitto() -> list[int]:
    """Pids of running Mosquitto processes (read from /proc, nothing is signalled)."""
    pids = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "mosquitto":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return sorted(pids)


def prepare(location: str, *, conf_d: Path = DEFAULT_CONF_D, plugin: Path = DEFAULT_PLUGIN,
            socket: Path = DEFAULT_SOCKET, secret: Path = DEFAULT_SECRET, listener: str = "listener 1883",
            write_conf: bool = False, db: str = "", broker_url: str = "mqtt://127.0.0.1:1883",
            password_file_site: bool = False, site_conf: Path | None = DEFAULT_SITE_CONF,
            site_files: Sequence[Path] = ()) -> AttachPlan:
    """Build the plugin, copy the secret, list the site's account files (and write the snippet when
    ``write_conf``). Files that already hold what would be written are left alone."""
    from store.location import companion

    source = companion(location, "secret")
    if not source.is_file():
        raise OSError(f"{source} does not exist yet: run `client-registry init` first")
    found = list(site_files)
    if site_conf is not None and site_conf.is_file():
        found += [f for f in site_accounts.discover(site_conf, skip=conf_d) if f not in found]
    for path in found:
        site_accounts.names_in(path)  # readable and well-formed now, or one line naming it
    written: list[Path] = []
    unchanged: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        built = build_plugin(Path(tmp) / plugin.name).read_bytes()
        (written if install_file(plugin, built, mode=0o644) else unchanged).append(plugin)
    snippet = mconf.render_attach_snippet(listener=listener, registry_plugin=plugin, secret=secret,
                                          snapshot=snapshot_beside(socket), socket=socket,
                                          password_file_site=password_file_site)
    listed = companion(location, site_accounts.LIST_NAME)
    if write_conf:
        (written if install_file(secret, source.read_bytes(), mode=0o640, group="mosquitto") else unchanged
         ).append(secret)
        (written if install_file(conf_d, snippet.encode(), mode=0o644) else unchanged).append(conf_d)
        (written if site_accounts.write_list(listed, found) else unchanged).append(listed)
    db_opt = f" --db {db}" if db else ""
    st = source.stat()
    owner = _names(st.st_uid, st.st_gid).split(":")[0]  # the registry's user owns its secret
    steps = [
        *([] if write_conf else [f"save the snippet above as {conf_d}",
                                 f"install -m 0640 -g mosquitto {source} {secret}",
                                 f"printf '%s\\n' {' '.join(map(str, found))} > {listed}   # the site's account files"
                                 if found else f"touch {listed}   # no site account file found"]),
        *([f"chgrp mosquitto {secret}   # Mosquitto reads it when it loads the plugin"]
          if write_conf and _names(secret.stat().st_uid, secret.stat().st_gid).split(":")[1] != "mosquitto" else []),
        (f"install -d -m 0750 -o {owner} -g mosquitto {socket.parent}   # the registry writes its socket and "
         "snapshot there"),
        (f"client-registry{db_opt} serve --broker-url {broker_url} --plugin-socket {socket} "
         "--socket-group mosquitto   # start it first: it writes the snapshot"),
        "systemctl restart mosquitto",
    ]
    warnings = []
    if not found:
        warnings.append(f"no site account file found in {site_conf}: the registry cannot keep the site's names "
                        f"(give --site-conf or --site-accounts FILE)")
    pids = running_mosquitto()
    if written and pids:
        warnings.append(f"a running Mosquitto (pid {', '.join(map(str, pids))}) reads these files only when it "
                        f"starts: restart it (systemctl restart mosquitto) once serve runs")
    return AttachPlan(snippet, conf_d, written, steps, unchanged, found, warnings)
