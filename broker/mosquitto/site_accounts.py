"""Attach mode: the names the site's own Mosquitto already has, so the registry never creates, modifies or
shadows one of them (``store.validation.reserved_problem``; the store keeps them in ``site_accounts``).

`mosquitto-config` finds the site's account files in its Mosquitto configuration (``password_file``,
dynamic security's ``plugin_opt_config_file``, following ``include_dir``) and lists them, one path a line, in
``registry.site-accounts`` beside the database. `serve --broker-url` reads them at start (a file it cannot
read stops it, in one line: it could not tell the site's names) and again whenever one changes (a ``stat``
every 2 s), and stores the names. Read only: the site's files are never written."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from store.errors import StoreError

log = logging.getLogger(__name__)

LIST_NAME = "site-accounts"  # store.location.companion: registry.site-accounts
CHECK_EVERY = 2.0


class SiteAccountsError(Exception):
    """One line: which site file could not be read, and why."""


def discover(site_conf: Path, skip: Path | None = None) -> list[Path]:
    """The account files a Mosquitto configuration names, in the order Mosquitto reads them; ``skip`` is our
    own conf.d snippet. Missing files are the site's business (Mosquitto refuses to start without them)."""
    found: list[Path] = []
    seen: set[Path] = set()

    def read(conf: Path) -> None:
        if conf in seen or (skip is not None and conf == skip):
            return
        seen.add(conf)
        try:
            lines = conf.read_text(errors="replace").splitlines()
        except OSError as exc:
            raise SiteAccountsError(f"cannot read the site's Mosquitto configuration {conf}: {exc.strerror}") from None
        for line in lines:
            key, _, value = line.strip().partition(" ")
            value = value.strip()
            if key in ("password_file", "plugin_opt_config_file") and value:
                path = Path(value)
                if path not in found:
                    found.append(path)
            elif key == "include_dir" and value:
                folder = Path(value)
                for child in sorted(folder.glob("*.conf")) if folder.is_dir() else []:
                    read(child)

    read(site_conf)
    return found


def names_in(path: Path) -> set[str]:
    """The usernames of a dynamic-security JSON file (``clients[].username``) or a Mosquitto password file
    (``name:hash`` lines)."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        hint = (f"; let its user read the file (e.g. chgrp mosquitto {path}; chmod g+r {path})"
                if isinstance(exc, PermissionError) else " (run `client-registry mosquitto-config` again)")
        raise SiteAccountsError(f"cannot read the site's accounts {path} ({exc.strerror}): the registry must know "
                                f"the site's names to never take one{hint}") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SiteAccountsError(f"the site's dynamic-security file {path} is not JSON: {exc}") from None
        clients = data.get("clients", []) if isinstance(data, dict) else []
        return {c["username"] for c in clients if isinstance(c, dict) and isinstance(c.get("username"), str)}
    return {line.split(":", 1)[0] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and ":" in line}


def list_file(reg: Any) -> Path:
    return reg.companion(LIST_NAME)


def write_list(path: Path, files: list[Path]) -> bool:
    """``mosquitto-config``: the site's account files, one a line; False when it already said the same."""
    text = "".join(f"{f}\n" for f in files)
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # paths only, no secret
    try:
        st = path.parent.stat()  # the database's folder: its owner is the registry's user
        os.chown(tmp, st.st_uid, st.st_gid)
    except PermissionError:
        pass
    os.replace(tmp, path)
    return True


class SiteAccounts:
    """The site's names as the store knows them, refreshed when a file changes (inode, size, mtime)."""

    def __init__(self, reg: Any, files: list[Path]) -> None:
        self.reg = reg
        self.files = files
        self._seen: dict[Path, tuple[int, int, int] | None] | None = None  # None: never read
        self._failing: set[Path] = set()

    @classmethod
    def of(cls, reg: Any) -> SiteAccounts:
        path = list_file(reg)
        try:
            files = [Path(line) for line in path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            files = []
        except OSError as exc:
            raise SiteAccountsError(f"cannot read {path}: {exc.strerror}") from None
        if not files:
            log.warning(f"site accounts: none listed in {path} (run `client-registry mosquitto-config` as root to find "
                f"the site's password file or dynamic security)")
        return cls(reg, files)

    def _ident(self, path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self, strict: bool = False) -> bool:
        """Read the files again if one changed and store the names; ``strict`` (at start) raises
        SiteAccountsError when one cannot be read, later the last names are kept and it is said once."""
        idents = {path: self._ident(path) for path in self.files}
        if idents == self._seen:
            return False
        names: set[str] = set()
        for path in self.files:
            try:
                names |= names_in(path)
            except SiteAccountsError as exc:
                if strict:
                    raise
                if path not in self._failing:
                    self._failing.add(path)
                    log.warning(f"site accounts: {exc}; keeping the names read before")
                return False
        self._failing.clear()
        self._seen = idents
        changed = self.reg.set_site_accounts(names, ", ".join(str(p) for p in self.files))
        if changed or strict:
            log.info(f"site accounts: {len(names)} name(s) the registry will never take, from "
                     f"{', '.join(str(p) for p in self.files) or 'no file'}")
            clashes = self.reg.site_clashes()
            if clashes:
                log.warning(f"site accounts: {len(clashes)} registry user(s) have the name of a site account "
                         f"({', '.join(repr(n) for n in clashes[:5])}{' ...' if len(clashes) > 5 else ''}): "
                         f"remove the registry's (`client-registry user remove NAME`) or rename the site's")
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                await asyncio.to_thread(self.refresh)
            except StoreError as exc:  # the database is away: the next round tries again
                log.warning(f"site accounts: {exc}")
