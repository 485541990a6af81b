"""The *dynsec* baseline: Debian's Mosquitto with its stock dynamic-security plugin, and nothing of ours.

The registry used to project its users onto dynamic security (one client and one role per user, written by
its provisioner); it no longer does (its own plugin holds the accounts, broker/mosquitto/plugin_protocol.md),
but the benchmarks keep a Mosquitto + dynamic security beside it, holding the same accounts the way the old
registry left them, as the "before". What that baseline needs lives here, copied from the old
``broker/mosquitto/config.py`` and ``dynsec.py`` (commit 03773f7^), never imported from broker/:

- where ``mosquitto_dynamic_security.so`` is;
- Mosquitto's own password format (PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt: src/password_mosq.h of
  2.0.11), which ``createClient`` writes too;
- the JSON file: deny what no role allows (receiving too), one client per device (textname
  ``client-registry``, its role ``client-registry:user:<name>``), the role holding the device's ACLs;
- the commands of one grant as the old registry sent them: ``createRole`` then ``createClient``, each in its
  own message on ``$CONTROL/dynamic-security/v1`` at QoS 0, the next sent when the previous one's response
  arrived (``Provisioner._sync`` awaited each ``link.run``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import subprocess
import sysconfig
from pathlib import Path

from broker.mosquitto.config import write_private

SO_NAME = "mosquitto_dynamic_security.so"
FILE_NAME = "dynamic-security.json"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
TEXTNAME = "client-registry"
USER_ROLE_PREFIX = "client-registry:user:"
PBKDF2_ITERATIONS = 101
SALT_LEN = 12
# Nothing is allowed unless a role says so: receiving too, so `read` really is "subscribe and receive".
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}
ACL_TYPES = (("publish", "publishClientSend"), ("subscribe", "subscribePattern"),
             ("receive", "publishClientReceive"))
# The admin client the bench drives dynamic security with (the old registry's service account had these).
ADMIN_USER = "bench-dynsec-admin"
ADMIN_ROLE = "bench-dynsec-admin"


@functools.cache
def _multiarch() -> str | None:
    """Debian's multiarch triplet (x86_64-linux-gnu, aarch64-linux-gnu, ...): where libmosquitto installs it."""
    for argv in (["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], ["gcc", "-print-multiarch"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out
    return sysconfig.get_config_var("MULTIARCH") or None


def find_plugin() -> Path | None:
    """Debian's dynamic-security plugin (package mosquitto), None if it is not installed."""
    triplet = _multiarch()
    folders = [f"/usr/lib/{triplet}"] if triplet else []
    for folder in (*folders, "/usr/lib", "/usr/local/lib"):
        if (Path(folder) / SO_NAME).is_file():
            return Path(folder) / SO_NAME
    return None


def conf_lines(path: Path) -> list[str]:
    """The two lines that load dynamic security with this file."""
    so = find_plugin()
    if so is None:
        raise RuntimeError(f"{SO_NAME} not found (apt-get install mosquitto)")
    return [f"plugin {so}", f"plugin_opt_config_file {path}"]


def pbkdf2_fields(password: str, salt: bytes | None = None) -> dict:
    """A client's password as Mosquitto's dynamic-security file stores it."""
    salt = salt or secrets.token_bytes(SALT_LEN)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": PBKDF2_ITERATIONS}


def acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def topic_acls(topics) -> list[dict]:
    """(pattern, access) pairs as dynamic-security ACLs, in the old provisioner's order."""
    from store.topics import access_allows

    out = []
    for pattern, access in sorted(topics):
        for action, acltype in ACL_TYPES:
            if access_allows(access, action):
                out.append(acl(acltype, pattern))
    return out


def user_role(username: str) -> str:
    return USER_ROLE_PREFIX + username


ADMIN_ACLS = [acl("publishClientSend", CONTROL_TOPIC), acl("subscribePattern", RESPONSE_TOPIC),
              acl("publishClientReceive", RESPONSE_TOPIC)]


def write_file(path: Path, names: list[str], password: str, *, topics=(), extra: dict | None = None,
               admin_password: str | None = None) -> None:
    """A dynamic-security file with one client per name (all with ``password``, one PBKDF2 computed for all)
    and its role with ``topics`` ((pattern, access) pairs, ``{username}`` filled per name); ``extra``: more
    {name: (password, topics)} with their own roles; ``admin_password``: the admin client too."""
    fields = pbkdf2_fields(password)
    clients, roles = [], []

    def add(name: str, fields: dict, acls: list[dict]) -> None:
        role = user_role(name)
        clients.append({"username": name, "textname": TEXTNAME, "roles": [{"rolename": role}], **fields})
        roles.append({"rolename": role, "acls": acls})

    for name in names:
        add(name, fields, topic_acls([(p.replace("{username}", name), a) for p, a in topics]))
    for name, (pw, extra_topics) in (extra or {}).items():
        add(name, pbkdf2_fields(pw), topic_acls(extra_topics))
    if admin_password is not None:
        clients.append({"username": ADMIN_USER, "roles": [{"rolename": ADMIN_ROLE}], **pbkdf2_fields(admin_password)})
        roles.append({"rolename": ADMIN_ROLE, "acls": ADMIN_ACLS})
    data = {"defaultACLAccess": dict(DEFAULT_ACL_ACCESS), "clients": clients, "groups": [], "roles": roles}
    write_private(path, json.dumps(data) + "\n")


def grant_commands(username: str, password: str, topics=()) -> list[dict]:
    """One grant as the old registry sent it: the user's role, then its client (each its own message)."""
    role = user_role(username)
    return [{"command": "createRole", "rolename": role, "acls": topic_acls(topics)},
            {"command": "createClient", "username": username, "password": password, "textname": TEXTNAME,
             "roles": [{"rolename": role}]}]
