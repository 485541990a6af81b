"""The files a Mosquitto under the registry needs: its configuration, the dynamic-security file and the
service account's credentials, all in the registry's data directory (or where an operator puts them).

The service account (``client-registry-service``) is how the registry drives Mosquitto: it sends the
dynamic-security commands and publishes the events. It lives only in the dynamic-security file, never in the
registry's users, so no CLI command can remove it. Its password is random, kept in ``service.credentials``
(0600) beside the database, and written into the dynamic-security file as Mosquitto's own PBKDF2-SHA512 hash
before Mosquitto starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from store.console import Credentials as ServiceCredentials  # the same shape, and the same masked repr

DYNSEC_SO = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
DYNSEC_SO_CANDIDATES = (
    DYNSEC_SO,
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
SERVICE_USER = "client-registry-service"
SERVICE_ROLE = "client-registry:service"
ADMIN_ROLE = "client-registry:admin"
USER_ROLE_PREFIX = "client-registry:user:"
SHARED_ROLE_PREFIX = "client-registry:role:"  # one per registry role: what it gives every member alike
TEXTNAME = "client-registry"  # marks the clients the registry owns in a shared dynamic-security file
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
EVENTS_PREFIX = "$registry/"

# Mosquitto's own defaults for a new password (src/password_mosq.h, 2.0.11): PBKDF2-HMAC-SHA512, 12-byte salt.
PBKDF2_ITERATIONS = 101
SALT_LEN = 12

# Nothing is allowed unless a role says so: receiving too, so `read` really is "subscribe and receive".
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}


def _acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


SERVICE_ACLS = [
    _acl("publishClientSend", CONTROL_TOPIC),
    _acl("subscribePattern", CONTROL_TOPIC + "/response"),
    _acl("publishClientReceive", CONTROL_TOPIC + "/response"),
    _acl("publishClientSend", EVENTS_PREFIX + "#"),
]
# An admin may use every topic, and read (never write) the registry's events. `#` does not match `$` topics.
ADMIN_ACLS = [
    _acl("publishClientSend", "#"),
    _acl("subscribePattern", "#"),
    _acl("publishClientReceive", "#"),
    _acl("subscribePattern", EVENTS_PREFIX + "#"),
    _acl("publishClientReceive", EVENTS_PREFIX + "#"),
]


def find_dynsec_plugin() -> Path | None:
    for candidate in DYNSEC_SO_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def pbkdf2_fields(password: str, salt: bytes | None = None) -> dict:
    """A client's password as Mosquitto's dynamic-security file stores it."""
    salt = salt or secrets.token_bytes(SALT_LEN)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": PBKDF2_ITERATIONS}


def pbkdf2_matches(entry: dict, password: str) -> bool:
    try:
        salt = base64.b64decode(entry["salt"])
        return pbkdf2_fields(password, salt)["password"] == entry["password"] and \
            int(entry["iterations"]) == PBKDF2_ITERATIONS
    except (KeyError, ValueError, TypeError):
        return False


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 whatever the umask), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_service_credentials(path: Path) -> ServiceCredentials:
    try:
        password = path.read_text().strip()
        if password:
            return ServiceCredentials(SERVICE_USER, password)
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, password + "\n")
    return ServiceCredentials(SERVICE_USER, password)


def ensure_dynsec_file(path: Path, service: ServiceCredentials, *, deny_by_default: bool = True) -> bool:
    """The dynamic-security file exists, holds the service account with this password and the registry's
    shared roles, and (``deny_by_default``) denies what no role allows. Everything else in it (the devices,
    a site's own clients) is kept. Returns whether it was changed. Call while Mosquitto is stopped
    (Mosquitto rewrites the file on every change)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        data = {}
    except ValueError as exc:
        raise ValueError(f"{path} is not a dynamic-security file: {exc}") from None
    before = json.dumps(data, sort_keys=True)
    data.setdefault("clients", [])
    data.setdefault("groups", [])
    data.setdefault("roles", [])
    if deny_by_default or "defaultACLAccess" not in data:
        data["defaultACLAccess"] = dict(DEFAULT_ACL_ACCESS)

    roles = {r.get("rolename"): r for r in data["roles"] if isinstance(r, dict)}
    for name, acls in ((SERVICE_ROLE, SERVICE_ACLS), (ADMIN_ROLE, ADMIN_ACLS)):
        role = roles.get(name)
        if role is None:
            role = {"rolename": name}
            data["roles"].append(role)
        role["acls"] = [dict(a) for a in acls]

    clients = {c.get("username"): c for c in data["clients"] if isinstance(c, dict)}
    client = clients.get(service.username)
    if client is None:
        client = {"username": service.username}
        data["clients"].append(client)
    if not pbkdf2_matches(client, service.password):
        client.update(pbkdf2_fields(service.password))
    client["textname"] = TEXTNAME
    client["roles"] = [{"rolename": SERVICE_ROLE}]
    client.pop("disabled", None)
    client.pop("clientid", None)

    if json.dumps(data, sort_keys=True) == before:
        return False
    write_private(path, json.dumps(data, indent=2) + "\n")
    return True


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
    def dynsec(self) -> Path:
        return self._named("dynamic-security.json")

    @property
    def socket(self) -> Path:
        from ..plugin_socket import SOCKET_NAME

        return self._named(SOCKET_NAME)

    @property
    def service_credentials(self) -> Path:
        return self._named("service.credentials")

    @property
    def persistence(self) -> Path:
        return self._named("mosquitto-data")


def render_conf(*, listener: str, dynsec_plugin: Path, dynsec_file: Path, registry_plugin: Path,
                socket: Path, user: str | None, persistence: Path | None, include: str = "") -> str:
    """The configuration of a supervised Mosquitto: one listener, no anonymous access, dynamic security
    first (it answers every name it knows), then the registry plugin (it sees only unknown names)."""
    lines = [
        "# Written by client-registry at every start; edits are lost. Add your own settings with",
        "# `client-registry serve --mosquitto-include FILE`.",
        "per_listener_settings false",
        "allow_anonymous false",
        listener,
        f"plugin {dynsec_plugin}",
        f"plugin_opt_config_file {dynsec_file}",
        f"plugin {registry_plugin}",
        f"plugin_opt_socket {socket}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp false",
        "connection_messages true",  # who is online (broker/mosquitto/presence.py): the service reads them
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


def render_attach_snippet(*, listener: str, dynsec_plugin: Path, dynsec_file: Path, registry_plugin: Path,
                          socket: Path) -> str:
    """The conf.d file that lets a Mosquitto the site runs (systemd's mosquitto.service) admit devices
    through the registry: the same plugins, in the same order, as a supervised one."""
    return "\n".join([
        "# client-registry: dynamic security first (it answers every name it knows), then the registry",
        "# plugin (it hands unknown names to `client-registry serve` over the socket).",
        "per_listener_settings false",
        "allow_anonymous false",
        listener,
        f"plugin {dynsec_plugin}",
        f"plugin_opt_config_file {dynsec_file}",
        f"plugin {registry_plugin}",
        f"plugin_opt_socket {socket}",
    ]) + "\n"
