"""client-registry server: Mosquitto (supervised, or the site's own) driven by the registry, the plugin
socket, the event relay and the HTTP API, in one asyncio loop.

Public API (the dashboard embeds the server with exactly this)::

    from broker.server import EmbeddedServer, ServerError

    async with EmbeddedServer(reg, mqtt_bind="127.0.0.1:0", http_bind="127.0.0.1:0", log=None) as srv:
        srv.mqtt_host, srv.mqtt_port     # where devices connect (port 0 in the bind = a free port)
        srv.http_host, srv.http_port     # None when http_bind is None (HTTP API disabled)
        srv.console                      # Credentials(username, password) of the console admin account
        srv.broker                       # "mosquitto 2.0.11, supervised" or "attached to mqtt://host:port"
        srv.broker_state                 # "running", "restarting" (supervised Mosquitto died) or "stopped"
        await srv.reconcile()            # make Mosquitto agree with the registry now; returns the fixes
        ...                              # runs until the block exits; leaving it stops Mosquitto too

* ``reg`` is an open ``store.Registry``; the server never closes it.
* ``mqtt_bind`` / ``http_bind`` are ``"HOST:PORT"`` strings (``"[::1]:1883"``, ``":1883"`` and ``"1883"`` work too).
  ``mqtt_bind=None`` (``serve --mqtt-bind none``) opens no plain listener on the network: the service's own
  connection (and a dashboard on this machine) use a loopback-only listener on a free port (``mqtt_port``).
* ``tls`` (a ``broker.tls.TlsSettings``) adds a TLS listener to the supervised Mosquitto (``srv.mqtt_tls``:
  its ``(host, port)``, else None) and, with ``http=True``, serves the HTTP API over HTTPS with the same
  certificate; its files are checked before anything starts.
* ``log`` is ``None`` (silent) or a callable taking one line of text (no newline): the text of this server's
  records of the ``broker`` loggers (stdlib ``logging``, broker/logs.py; attach a handler to ``broker`` for
  their levels too). It is called mostly from the event loop thread and never receives a password; whatever
  it raises is ignored. Mosquitto's own output comes through it too, prefixed ``mosquitto:``.
* Starting raises :class:`ServerError` (``str(e)`` is one clear line), e.g. when a port is taken, Mosquitto or
  the plugin's headers are missing, or an attached broker refuses the service account; nothing is left
  running then.
* Keyword-only extras: ``mosquitto`` (the binary, default from PATH), ``mosquitto_include`` (a file of the
  operator's own Mosquitto settings, appended), ``broker_url`` (attach to a running Mosquitto instead of
  starting one), ``plugin_socket`` / ``socket_group`` (where the registry plugin's datagrams arrive),
  ``relay_interval`` (event poll period, default 0.1 s), ``reconcile_interval`` (default 60 s), ``console``
  (create/read the console admin account, default True), ``persistence`` (Mosquitto's, default True),
  ``outlive`` (default True: Mosquitto keeps serving if this process is killed; False ends it with the
  process, as a dashboard that embeds the server wants), ``max_packet_size`` / ``max_connections`` (the
  supervised Mosquitto's bounds, defaults in ``broker.mosquitto.config``), ``mosquitto_user`` (None: Mosquitto
  runs as this process does; ``"auto"``, serve's default: ``mosquitto`` when running as root; or a user name).

``serve_main(...)`` is what ``client-registry serve`` runs: it logs to stderr (every ``broker`` line, stamped),
stops cleanly on SIGINT/SIGTERM/SIGHUP and returns the process exit code (1 with one line on stderr when it
cannot start).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

from store.event_topics import STATUS_TOPIC

from . import logs
from .address import AddressError, parse_bind, parse_mqtt_url
from .certificates import DEVICE_DAYS, TlsFiles
from .http_api import RegisterAPI
from .logins import Logins
from .mosquitto import config as mconf
from .mosquitto import privileges
from .mosquitto.link import BrokerLink, LinkError
from .mosquitto.plugin_accounts import PluginAccounts
from .mosquitto.plugin_build import PluginBuildError, plugin_path
from .mosquitto.presence import PresenceTracker
from .mosquitto.supervisor import (
    MosquittoError,
    MosquittoSupervisor,
    find_mosquitto,
    mosquitto_version,
    raise_open_files,
)
from .plugin_socket import PluginSocket
from .relay import EventRelay
from .revocation import RevocationList
from .tls import TlsError, TlsSettings

__all__ = ["EmbeddedServer", "ServerError", "serve_main"]

log = logging.getLogger(__name__)

DEFAULT_MQTT_BIND = "0.0.0.0:1883"
DEFAULT_HTTP_BIND = "127.0.0.1:8080"
DATABASE_CHECK_EVERY = 1.0
PROBLEM_NOTE_EVERY = 2.0  # a lasting service problem is noted again this often (store SERVER_ALIVE: 5 s)
ATTACH_WAIT = 120.0  # seconds an attached server waits for the site's Mosquitto to take the service account


class DatabaseWatch:
    """Is the SQLite file this server opened still there, and still the same file?"""

    def __init__(self, location: str) -> None:
        from store.location import sqlite_path

        self.path = sqlite_path(location)
        self.ident = self._ident()

    def _ident(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if st is not None else None

    def problem(self) -> str | None:
        if self.path is None or self.ident is None:
            return None  # a server database (PostgreSQL): its own server says when it is gone
        now = self._ident()
        if now is None:
            return f"{self.path} disappeared"
        if now != self.ident:
            return f"{self.path} was replaced by another file (restart the server to use it)"
        return None


class ServerError(Exception):
    """The server cannot start; str() is one line meant for the operator."""


def _address(parse: Callable[..., Any], *args: Any) -> Any:
    try:
        return parse(*args)
    except AddressError as exc:
        raise ServerError(str(exc)) from None


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", 0))
        return s.getsockname()[1]


def _probe_bind(what: str, host: str, port: int) -> None:
    """Say "address already in use" in our words before anything starts (a port 0 is always free)."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Mosquitto and aiohttp bind
            probe.bind((host, port))
    except OSError as exc:
        raise _bind_error(what, host, port, exc) from None


def _bind_error(what: str, host: str, port: int, exc: BaseException) -> ServerError:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return ServerError(f"cannot listen for {what} on {host}:{port}: address already in use")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ServerError(f"cannot listen for {what} on {host}:{port}: {reason}")


class EmbeddedServer:
    def __init__(self, reg: Any, mqtt_bind: str | None = DEFAULT_MQTT_BIND, http_bind: str | None = DEFAULT_HTTP_BIND,
                 log: Callable[[str], None] | None = None, *, mosquitto: str | None = None,
                 mosquitto_include: str | Path | None = None, broker_url: str | None = None,
                 plugin_socket: str | Path | None = None, socket_group: str | None = None,
                 relay_interval: float = 0.1, reconcile_interval: float = 60.0, console: bool = True,
                 persistence: bool = True, outlive: bool = True, http_limits: Any = None,
                 max_packet_size: int = mconf.MAX_PACKET_SIZE, max_connections: int = mconf.MAX_CONNECTIONS,
                 mosquitto_user: str | None = None, tls: TlsSettings | None = None) -> None:
        self.reg = reg
        self.plain_mqtt = mqtt_bind is not None  # else the service's listener is loopback only (see above)
        self.mqtt_bind: tuple[str, int] = _address(parse_bind, mqtt_bind or "127.0.0.1:0", 1883)
        self.tls = tls
        self.mqtt_tls: tuple[str, int] | None = None
        self.http_bind: tuple[str, int] | None = (_address(parse_bind, http_bind, 8080) if http_bind is not None
                                                  else None)
        self.log_sink = log  # the embedder's: this server's lines (logs.ServerLines), while it runs
        self.mosquitto_binary = mosquitto
        self.mosquitto_include = Path(mosquitto_include) if mosquitto_include else None
        self.broker_url = broker_url
        self.files = mconf.MosquittoFiles(reg.location)
        self.socket_path = Path(plugin_socket) if plugin_socket else self.files.socket
        self.socket_group = socket_group
        self.relay_interval = relay_interval
        self.reconcile_interval = reconcile_interval
        self.use_console = console
        self.persistence = persistence
        self.outlive = outlive
        self.http_limits = http_limits  # broker.http_api.HTTPLimits; None: its defaults
        self.max_packet_size = max_packet_size
        self.max_connections = max_connections
        self.mosquitto_user = mosquitto_user
        self.run_as: privileges.RunAs | None = None  # who the supervised Mosquitto drops to (root starts it)
        self._binary = ""
        self._plugin: Path | None = None
        self._include = ""
        self._notes: list[str] = []  # said once every check has passed: a failed start is one line
        self.mqtt_host: str = self.mqtt_bind[0]
        self.mqtt_port: int = 0
        self.http_host: str | None = None
        self.http_port: int | None = None
        self.console: Any = None
        self.broker = ""
        self.version = ""
        self.supervisor: MosquittoSupervisor | None = None
        self.link: BrokerLink | None = None
        self.accounts: PluginAccounts | None = None
        self.crl: RevocationList | None = None  # the TLS listener's crlfile, rewritten on revocations
        self._socket: PluginSocket | None = None
        self._relay: EventRelay | None = None
        self._logins: Logins | None = None
        self._parts = AsyncExitStack()  # what start() started, stopped by stop() (start)
        self._link_back = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db_watch = DatabaseWatch(reg.location)
        self.database_problem: str | None = None
        self._noted_problem: str | None = None  # the service problem last said (_note_service_problem)
        self._noted_at = 0.0
        self._link_connects = 0
        # Device attempts are recorded off the loop by one thread, a batch per transaction (SQLite has one writer).
        self._db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cr-knocks")
        # Who is online, from the registry plugin's reports of logins and disconnections.
        self.presence = PresenceTracker(reg.clock, self._record_presence)

    @property
    def broker_state(self) -> str:
        if self.supervisor is not None:
            return self.supervisor.state
        return "running" if self.link is not None and self.link.connected.is_set() else "unreachable"

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # Each part's stop is pushed as it starts: a failed start unwinds exactly what started, in reverse
        # order, and stop() does the same for a server that runs.
        async with AsyncExitStack() as parts:
            self._parts = parts
            await self._start()
            self._parts = parts.pop_all()

    async def stop(self) -> None:
        await self._parts.aclose()

    def _route_log(self) -> None:
        """This server's lines to the embedder's ``log`` while it runs (until stop)."""
        token = logs.serving.set(self)  # inherited by every task and to_thread call the server starts
        if self.log_sink is not None:
            logs.enable()
            handler = logs.ServerLines(self.log_sink, self)
            logs.ROOT.addHandler(handler)
            self._parts.callback(logs.ROOT.removeHandler, handler)

        def unset() -> None:
            with suppress(ValueError):  # stopped from another task than the one that started it
                logs.serving.reset(token)

        self._parts.callback(unset)

    def _spawn(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """A task of the running server, cancelled when it stops."""
        task = asyncio.create_task(job, name=name)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self._parts.push_async_callback(cancel)

    async def _start(self) -> None:
        from store.console import ensure_console_account

        self._loop = asyncio.get_running_loop()
        self._route_log()
        self._parts.callback(self._db_pool.shutdown, wait=False, cancel_futures=True)
        self._logins = Logins(self.reg, self._db_pool, self.presence, self._loop.call_later,
                              attached=self.broker_url is not None,
                              database_problem=lambda: self.database_problem, catch_up=self._relay_catch_up,
                              wake=self._wake_relay)
        # Whatever can be checked is checked before anything starts: a failure is one line and leaves nothing.
        if self.tls is not None:
            if self.broker_url is not None and self.tls.http is False:
                raise ServerError("an attached Mosquitto's TLS listeners are the site's own: --tls-* with "
                                  "--broker-url only serves HTTPS (--http-tls)")
            try:
                self.tls = await asyncio.to_thread(self.tls.checked)
            except TlsError as exc:
                raise ServerError(str(exc)) from None
        if self.http_bind is not None:
            _probe_bind("HTTP", *self.http_bind)
        if self.broker_url is None:  # (an attached Mosquitto may start after us: it loads the snapshot we write)
            await self._prepare_mosquitto()
        try:
            service = mconf.load_or_create_service_credentials(self.files.service_credentials)
        except OSError as exc:
            raise ServerError(f"cannot read or create {self.files.service_credentials}: {exc.strerror}") from None
        await asyncio.to_thread(self.reg.note_limits)
        if self.use_console:
            self.console = await asyncio.to_thread(ensure_console_account, self.reg)
        await self._start_socket()
        await asyncio.to_thread(self.reg.watch_presence, "registry plugin")
        from .mosquitto.attach import snapshot_beside

        snapshot = self.files.snapshot if self.broker_url is None else snapshot_beside(self.socket_path)
        self.accounts = PluginAccounts(self.reg, None, service=service, snapshot_path=snapshot,
                                       group=self._socket.group if self._socket else None)  # 0640 for that group
        self.crl = RevocationList(self.reg, TlsFiles.for_database(self.reg.location), self._db_pool,
                                  reload=self._reload_mosquitto if self.broker_url is None else None,
                                  group=self._socket.group if self._socket else None)
        await self.crl.write()  # what was revoked while no service ran, before Mosquitto reads the file
        # Item 4 (issue 16): the relay follows the changelog from before this full read, so a grant committed
        # while the service starts is applied too (not left for the minute's reconcile).
        since = await asyncio.to_thread(self.reg.last_event_id)
        await self.accounts.load()
        self._parts.push_async_callback(self._save_snapshot)
        self._parts.push_async_callback(self._presence_ended)  # after Mosquitto stopped (pushed below)
        try:
            await self.accounts.write_snapshot(force=True)  # what the plugin loads when Mosquitto starts
        except OSError as exc:
            raise ServerError(f"cannot write {snapshot}: {exc.strerror or exc}") from None
        if self.broker_url is None:
            host, port = await self._start_mosquitto(service)
        else:
            url = _address(parse_mqtt_url, self.broker_url)
            host, port = url.host, url.port
            self.broker = f"attached to mqtt://{host}:{port}"
            await self._start_site_accounts()
        self.mqtt_host, self.mqtt_port = host, port
        self.link = BrokerLink(host, port, service.username, service.password,
                               on_connected=self._link_changed)
        try:
            if self.broker_url is None:
                await asyncio.to_thread(self.link.start)
            else:  # the site restarts its Mosquitto after this start has written the snapshot (README)
                log.info(f"mqtt: logging in to {self.broker} as the service account; if Mosquitto refuses, "
                         f"restart it now that the snapshot is written (waiting up to {ATTACH_WAIT:.0f} s)")
                await asyncio.to_thread(self.link.start, ATTACH_WAIT, patient=True)
        except LinkError as exc:
            if self.supervisor is not None:  # what the plugin said it loaded is the likely reason
                said = await self.supervisor.said("registry_plugin")
                hint = f" (mosquitto said: {said})" if said else ""
            else:
                hint = " (did you install `client-registry mosquitto-config`?)"
            raise ServerError(f"{exc}{hint}") from None
        self._parts.push_async_callback(self._stop_link)
        self.accounts.link = self.link
        try:
            fixes = await self.accounts.reconcile()
        except LinkError as exc:
            raise ServerError(f"{exc}") from None
        if fixes:
            log.info(f"reconcile: {fixes} correction(s) at start")
        accounts = self.accounts
        self._relay = EventRelay(self.reg, self._publish, self._apply_event,
                                 interval=self.relay_interval, in_step=lambda: not accounts.stale)
        await self._relay.start(since)
        self._parts.push_async_callback(self._stop_relay)
        await self._start_http()
        self._publish_status("running")  # once the HTTP API serves: the status names its address
        self._spawn(self._reconcile_loop(), "client-registry-reconcile")
        self._spawn(self._watch_database(), "client-registry-database")
        self._spawn(self.presence.run(), "client-registry-presence")
        self._spawn(self.accounts.run_snapshots(), "client-registry-snapshot")

    async def _start_site_accounts(self) -> None:
        """Attach mode: the site's own accounts are never a device's (broker/mosquitto/site_accounts.py)."""
        from .mosquitto.site_accounts import SiteAccounts, SiteAccountsError

        try:
            site = SiteAccounts.of(self.reg)
            await asyncio.to_thread(site.refresh, True)
        except SiteAccountsError as exc:
            raise ServerError(str(exc)) from None
        self._spawn(site.run(), "client-registry-site-accounts")

    async def _start_socket(self) -> None:
        group = self.run_as.gid if self.run_as is not None else None  # Mosquitto, after dropping root, sends here
        if self.socket_group:
            try:
                group = grp.getgrnam(self.socket_group).gr_gid
            except KeyError:
                raise ServerError(f"no group named {self.socket_group!r} (--socket-group)") from None
        assert self._logins is not None
        self._socket = PluginSocket(self.socket_path, self._logins.handle, group=group)
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            await self._socket.start()
        except OSError as exc:
            self._socket = None
            raise ServerError(f"cannot open the plugin socket {self.socket_path}: {exc.strerror or exc}") from None
        self._parts.push_async_callback(self._socket.stop)

    async def _prepare_mosquitto(self) -> None:
        """Everything a supervised Mosquitto needs that can fail, checked before anything starts."""
        try:
            self._binary = find_mosquitto(self.mosquitto_binary)
            self.version = await asyncio.to_thread(mosquitto_version, self._binary)
            self._plugin = await asyncio.to_thread(plugin_path)
        except (MosquittoError, PluginBuildError) as exc:
            raise ServerError(str(exc)) from None
        if self.mosquitto_include is not None:
            try:
                self._include = self.mosquitto_include.read_text()
            except OSError as exc:
                raise ServerError(f"cannot read {self.mosquitto_include}: {exc.strerror}") from None
        self.run_as = self._mosquitto_run_as()
        host, port = self.mqtt_bind
        self.supervisor = MosquittoSupervisor(self._binary, self.files.conf, host, port,
                                              on_state=self._broker_changed, outlive=self.outlive,
                                              on_spawn=self.presence.restarted)
        await self.supervisor.end_orphan()  # a Mosquitto left by a killed service holds our port
        _probe_bind("MQTT", host, port)
        if self.tls is not None:
            _probe_bind("MQTT over TLS", *self.tls.bind)

    def _mosquitto_run_as(self) -> privileges.RunAs | None:
        """The user a root-started Mosquitto drops to, or None (it runs as this process does). The default
        (``auto``) stays root, saying why, when ``mosquitto`` cannot reach the registry's folder; a user asked
        for by name is a refusal then."""
        asked = self.mosquitto_user
        name = privileges.default_user() if asked == privileges.AUTO else asked
        if not name or name == mconf.current_user():
            return None
        if os.geteuid() != 0:
            raise ServerError(f"cannot run Mosquitto as {name!r}: only a serve started as root can (--mosquitto-user)")
        try:
            user = privileges.lookup(name)
        except LookupError as exc:
            raise ServerError(str(exc)) from None
        if user.uid == 0:
            return None
        folder = self.files.conf.parent
        where = privileges.blocked(user, folder) or (
            privileges.blocked(user, self.socket_path) if self.socket_path.parent != folder else None)
        if where is None:
            return user
        why = (f"cannot enter {where} (mode {where.stat().st_mode & 0o777:04o}); put the database where it can "
               f"(e.g. --db /var/lib/client-registry/registry.db)")
        if asked != privileges.AUTO:
            raise ServerError(f"cannot run Mosquitto as {name!r}: it {why}")
        self._notes.append(f"mqtt: mosquitto runs as root: {name!r} {why}, or say --mosquitto-user root")
        return None

    async def _start_mosquitto(self, service: mconf.ServiceCredentials) -> tuple[str, int]:
        assert self.supervisor is not None and self._plugin is not None
        host, port = self.mqtt_bind
        if port == 0:
            port = free_port(host)
            self.supervisor.port = port
        for note in self._notes:
            log.info(note)
        secret = self.reg.companion("secret")
        plugin = self._plugin
        try:
            if self.run_as is not None:
                plugin = privileges.shared_copy(self.run_as, plugin, self.files.plugin)
            if self.persistence:
                self.files.persistence.mkdir(mode=0o700, exist_ok=True)
            tls_listener = None
            if self.tls is not None:
                tls_host, tls_port = self.tls.bind
                self.mqtt_tls = (tls_host, tls_port or free_port(tls_host))
                tls_listener = mconf.listener_line(*self.mqtt_tls)
            mconf.write_private(self.files.conf, mconf.render_conf(
                listener=mconf.listener_line(host, port), registry_plugin=plugin, secret=secret,
                snapshot=self.files.snapshot, socket=self.socket_path,
                user=self.run_as.name if self.run_as is not None else mconf.current_user(),
                persistence=self.files.persistence if self.persistence else None, include=self._include,
                max_packet_size=self.max_packet_size, max_connections=self.max_connections,
                tls_listener=tls_listener, tls_options=self.tls.mosquitto_lines() if self.tls else None))
            if self.run_as is not None:
                # tls init's files beside the database too (never the CA key); the site's own are the site's
                ours = [p for p in (self.tls.files() if self.tls else []) if p.parent == self.files.conf.parent]
                privileges.hand_over(self.run_as, folder=self.files.conf.parent,
                                     readable=[self.files.conf, secret, self.files.snapshot, *ours],
                                     writable_folder=self.files.persistence if self.persistence else None)
        except (OSError, ValueError) as exc:
            raise ServerError(f"cannot write Mosquitto's configuration: {exc}") from None
        raise_open_files(self.max_connections + 1024)  # Mosquitto inherits it: one descriptor per connection
        self._parts.push_async_callback(self.supervisor.stop)  # also when it did not start: its pid file
        try:
            await self.supervisor.start()
        except MosquittoError as exc:
            raise ServerError(str(exc)) from None
        self.broker = f"mosquitto {self.version}, supervised"
        log.info(f"mqtt: {self.broker}, listening on {host}:{port}"
                 + ("" if self.plain_mqtt else " (loopback only, for the service)")
                 + (f", TLS on {self.mqtt_tls[0]}:{self.mqtt_tls[1]}" if self.mqtt_tls else ""))
        return host, port

    async def _start_http(self) -> None:
        if self.http_bind is None:
            return
        host, port = self.http_bind
        api = RegisterAPI(self.reg, wake=self._wake_relay, granted=self._granted_over_http,
                          health=self.health, limits=self.http_limits)
        https = self.tls.context if self.tls is not None and self.https else None
        listener = api.listener(host, port, ssl=https)  # timeouts, connection limit, one log line per refusal
        try:
            self.http_host, self.http_port = await listener.start()
        except OSError as exc:
            raise _bind_error("HTTP", host, port, exc) from None
        self._parts.push_async_callback(listener.stop)
        log.info(f"{'https' if https else 'http'} listening on {self.http_host}:{self.http_port}")

    async def _stop_relay(self) -> None:
        relay, self._relay = self._relay, None  # late knocks and wakes find no relay: nothing to apply
        assert relay is not None
        await relay.stop()

    async def _stop_link(self) -> None:
        assert self.link is not None
        if self.link.connected.is_set():
            self._publish_status("stopped")
        await asyncio.to_thread(self.link.stop)
        self.link = None

    async def _presence_ended(self) -> None:
        if self.supervisor is not None:  # its Mosquitto stopped: every session ended now
            self.presence.restarted()
        await self.presence.flush()

    async def _save_snapshot(self) -> None:
        assert self.accounts is not None
        with suppress(OSError):  # said by the snapshot loop already
            await self.accounts.write_snapshot()

    # -- the broker's state ----------------------------------------------------------------------------------
    @property
    def https(self) -> bool:
        """The HTTP API is served over HTTPS (``tls`` with ``http=True``)."""
        return self.tls is not None and self.tls.http

    @property
    def tls_address(self) -> str | None:
        """Where devices connect over TLS (``mqtts://HOST:PORT`` as they would write it), or None."""
        if self.mqtt_tls is None:
            return None
        host, port = self.mqtt_tls
        return f"mqtts://{f'[{host}]' if ':' in host else host}:{port}"

    def health(self) -> dict:
        return {"broker": self.broker, "broker_state": self.broker_state, "mqtt_tls": self.tls_address,
                "database": self.database_problem or "ok", "changes": self.service_problem() or "ok"}

    def service_problem(self) -> str | None:
        """Why this server cannot do its job with a broker that runs: Mosquitto refuses the service account,
        or stopped taking the registry's changes (a grant would be recorded but not enforced)."""
        refused = self.link.refused if self.link is not None else None
        if refused:
            return f"Mosquitto refuses the service account: {refused}"
        return self.accounts.problem if self.accounts is not None else None

    async def _note_service_problem(self) -> None:
        """Said once in the log, and in the database for `status` and the dashboards, when it changes."""
        problem = self.service_problem()
        now = time.monotonic()
        if problem == self._noted_problem and not (problem and now - self._noted_at >= PROBLEM_NOTE_EVERY):
            return
        if problem != self._noted_problem:
            log.log(logging.WARNING if problem else logging.INFO,
                    f"broker: {problem}; /healthz fails until it is back" if problem
                    else "broker: taking the registry's changes again")
        self._noted_problem, self._noted_at = problem, now
        try:
            await asyncio.to_thread(self.reg.note_problem, problem)
        except Exception as exc:  # the database is away too: /healthz says that first
            log.warning(f"database: cannot note the broker's state: {exc}")

    def _check_database(self) -> None:
        """A database file that disappears or is replaced under a running server is said once, fails
        /healthz and stops new requests until it is back; nothing is ever written to a second file."""
        problem = self._db_watch.problem()
        if problem != self.database_problem:
            self.database_problem = problem  # before the log line: whoever reads it sees /healthz agree
            log.log(logging.WARNING if problem else logging.INFO,
                    f"database: {problem}; not admitting new requests until it is back" if problem
                    else "database: back; admitting new requests again")

    def _http_address(self) -> str | None:
        """Where the HTTP API serves, as the dashboard's header shows it: HOST:PORT, https://HOST:PORT over TLS."""
        if not self.http_port:
            return None
        return f"{'https://' if self.https else ''}{self.http_host}:{self.http_port}"

    def _publish_status(self, state: str) -> None:
        if self.link is None:
            return
        from importlib.metadata import version

        body = {"service": "client-registry", "version": version("client-registry"), "broker": self.broker,
                "state": state, "time": time.time(),
                "http": self._http_address(), "mqtt_tls": self.tls_address}
        self.link.publish(STATUS_TOPIC, json.dumps(body).encode(), qos=1, retain=True)

    def _broker_changed(self, state: str) -> None:
        log.log(logging.WARNING if state == "restarting" else logging.INFO, f"mqtt: mosquitto {state}")

    def _link_changed(self, up: bool) -> None:
        """From paho's thread: after a reconnect (Mosquitto restarted) reconcile at once."""
        if up:
            self._link_connects += 1
            if self._link_connects > 1 and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._link_back.set)

    async def _watch_database(self) -> None:
        while True:
            self._check_database()
            await self._note_service_problem()
            await asyncio.sleep(DATABASE_CHECK_EVERY)

    async def _reconcile_loop(self) -> None:
        waited = 0.0
        while True:
            try:  # every reconcile_interval, at once after a reconnect, within a second of a failed change
                async with asyncio.timeout(1.0):
                    await self._link_back.wait()
                self._link_back.clear()
                log.info("mqtt: connected to Mosquitto again; reconciling")
                self._publish_status("running")
            except TimeoutError:
                waited += 1.0
                if waited < self.reconcile_interval and not (self.accounts and self.accounts.stale):
                    continue
            waited = 0.0
            try:
                await self.reconcile()
            except Exception as exc:  # the broker is away: try again at the next round
                log.warning(f"reconcile failed: {exc}")

    async def reconcile(self) -> int:
        assert self.accounts is not None
        return await self.accounts.reconcile()

    # -- decisions (broker/logins.py) -----------------------------------------------------------------------
    async def _granted_over_http(self, username: str, password: str) -> None:
        """The device proved its password at the 201 poll (or an approval rule admitted it): its account
        is in Mosquitto before the answer."""
        await self._relay_catch_up()

    async def _relay_catch_up(self) -> None:
        if self._relay is not None:
            await self._relay.catch_up()

    async def _apply_event(self, events: list[Any]) -> None:
        try:
            if self.accounts is not None and self.accounts.link is not None:
                await self.accounts.apply(events)  # a revoked user's account goes first (and its sessions)
        finally:  # the CRL whatever became of the accounts' batch (the relay logs that)
            if self.crl is not None:
                await self.crl.apply(events)

    def _reload_mosquitto(self) -> bool:
        return self.supervisor is not None and self.supervisor.reload()

    async def _record_presence(self, changes: dict, reset_at: float | None) -> bool:
        if self.database_problem:  # opening the path now would create an empty database in its place
            return False
        await asyncio.get_running_loop().run_in_executor(self._db_pool, self.reg.record_presence, changes, reset_at)
        return True

    def _wake_relay(self, *, waited_for: bool = False) -> None:
        if self._relay is not None:
            self._relay.wake(waited_for=waited_for)

    def _publish(self, topic: str, payload: bytes) -> None:
        if self.link is not None:
            self.link.publish(topic, payload, qos=1)


# -- the `client-registry serve` command -------------------------------------------------------------------
STAMP = "%Y-%m-%dT%H:%M:%S"
START_HOLD = 2.0  # seconds a start's log lines are held back


class StderrLines(logging.Handler):
    """serve's log: every line on stderr, stamped. While the server starts, lines are held (stamped when said)
    and written once the start succeeds, or once it has taken START_HOLD s (a slow start, e.g. waiting for an
    attached Mosquitto, shows its progress). A start that fails fast writes only its one-line reason: the
    held lines are dropped."""

    def __init__(self, later: Callable[[float, Callable[[], None]], Any]) -> None:
        super().__init__(logging.DEBUG)
        self.held: list[str] | None = []
        self._timer = later(START_HOLD, self.show)

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{time.strftime(STAMP, time.localtime(record.created))} {record.getMessage()}\n"
        if self.held is not None:
            self.held.append(line)
            return
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except OSError:  # the terminal went away (SIGHUP): the service keeps running
            pass

    def show(self) -> None:  # (not release(): Handler's, which frees its lock)
        if self.held:
            sys.stderr.write("".join(self.held))
            sys.stderr.flush()
        self.held = None
        self._timer.cancel()

    def drop(self) -> None:
        if self.held is not None:
            self.held = []


# SIGHUP too: the terminal `serve` ran in went away (an SSH session closed). Python's default would end the
# process at once, leaving Mosquitto serving (it runs as another user, so no parent-death signal reaches it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _serve(reg: Any, mqtt_bind: str | None, http_bind: str, options: dict) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    lines = StderrLines(loop.call_later)
    logs.enable()
    logs.ROOT.addHandler(lines)
    try:
        async with EmbeddedServer(reg, mqtt_bind, http_bind, **options) as srv:
            lines.show()
            mqtt = f"mqtt {srv.mqtt_host}:{srv.mqtt_port}" + ("" if srv.plain_mqtt else " (loopback only)")
            tls = f", {srv.tls_address}" if srv.tls_address else ""
            http = "https" if srv.https else "http"
            log.info(f"client-registry serving: {mqtt}{tls} ({srv.broker}), "
                     f"{http} {srv.http_host}:{srv.http_port}, database {getattr(reg, 'location', '?')}, "
                     f"credentials beside it")
            await stop.wait()
            log.info("client-registry shutting down")
        log.info("client-registry stopped")
    except ServerError as exc:
        lines.drop()
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    except Exception as exc:  # a bug: still one line for the operator's log, never a traceback
        lines.drop()
        sys.stderr.write(f"client-registry: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        logs.ROOT.removeHandler(lines)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return 0


def serve_main(db: str | None, mqtt_bind: str | None = DEFAULT_MQTT_BIND, http_bind: str = DEFAULT_HTTP_BIND,
               config: Any = None, certificate_days: int = DEVICE_DAYS, **options: Any) -> int:
    """``mqtt_bind`` None: no plain listener on the network (``--mqtt-bind none``), TLS only."""
    from store import StoreError

    from .signing import open_signing_registry

    try:
        if mqtt_bind is not None:
            parse_bind(mqtt_bind, 1883)
        parse_bind(http_bind, 8080)
        if options.get("broker_url"):
            parse_mqtt_url(options["broker_url"])
    except AddressError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 2
    try:
        reg = open_signing_registry(db, config=config, certificate_days=certificate_days)
    except StoreError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    try:
        return asyncio.run(_serve(reg, mqtt_bind, http_bind, options))
    finally:
        reg.close()
