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
* ``log`` is ``None`` (silent) or a callable taking one line of text (no newline); it is called from the event
  loop thread and never receives a password; whatever it raises is ignored. Mosquitto's own output comes
  through it too, prefixed ``mosquitto:``.
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

``serve_main(...)`` is what ``client-registry serve`` runs: it logs to stderr, stops cleanly on SIGINT/SIGTERM/SIGHUP
and returns the process exit code (1 with one line on stderr when it cannot start).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .http_api import RegisterAPI
from .log_text import Refusals, safe
from .mosquitto import config as mconf
from .mosquitto import plugin_wire as wire
from .mosquitto import privileges
from .mosquitto.link import BrokerLink, LinkError
from .mosquitto.plugin_accounts import PluginAccounts
from .mosquitto.plugin_build import PluginBuildError, plugin_path
from .mosquitto.presence import PresenceTracker
from .mosquitto.supervisor import (MosquittoError, MosquittoSupervisor, find_mosquitto, mosquitto_version,
                                   raise_open_files)
from .plugin_socket import WAKE_MARK, PluginSocket
from .relay import EventRelay

__all__ = ["EmbeddedServer", "ServerError", "parse_bind", "serve_main"]

DEFAULT_MQTT_BIND = "0.0.0.0:1883"
DEFAULT_HTTP_BIND = "127.0.0.1:8080"
STATUS_TOPIC = "$registry/v1/status"
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


def parse_bind(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    host, port = "", ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ServerError(f"invalid address {text!r}: expected [IPv6]:PORT")
        host, port = text[1:end], text[end + 1:].lstrip(":")
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    elif text.isdigit():
        port = text
    else:
        host = text
    try:
        port_no = int(port) if port else default_port
    except ValueError:
        raise ServerError(f"invalid port in {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise ServerError(f"invalid port in {text!r}")
    return host or "0.0.0.0", port_no


def parse_broker_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp"):
        raise ServerError(f"unsupported broker URL {url!r}: use mqtt://HOST:PORT")
    try:
        return parts.hostname or "127.0.0.1", parts.port or 1883
    except ValueError:
        raise ServerError(f"invalid port in {url!r}") from None


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


def _guard_log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """An embedder's log callable must never break a decision: swallow whatever it raises."""
    if log is None:
        return lambda line: None

    def guarded(line: str) -> None:
        try:
            log(line)
        except Exception:
            pass

    return guarded


class EmbeddedServer:
    def __init__(self, reg: Any, mqtt_bind: str = DEFAULT_MQTT_BIND, http_bind: str | None = DEFAULT_HTTP_BIND,
                 log: Callable[[str], None] | None = None, *, mosquitto: str | None = None,
                 mosquitto_include: str | Path | None = None, broker_url: str | None = None,
                 plugin_socket: str | Path | None = None, socket_group: str | None = None,
                 relay_interval: float = 0.1, reconcile_interval: float = 60.0, console: bool = True,
                 persistence: bool = True, outlive: bool = True, http_limits: Any = None,
                 max_packet_size: int = mconf.MAX_PACKET_SIZE, max_connections: int = mconf.MAX_CONNECTIONS,
                 mosquitto_user: str | None = None) -> None:
        self.reg = reg
        self.mqtt_bind = parse_bind(mqtt_bind, 1883)
        self.http_bind = parse_bind(http_bind, 8080) if http_bind is not None else None
        self.log: Callable[[str], None] = _guard_log(log)
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
        self._socket: PluginSocket | None = None
        self._http_runner: Any = None
        self._relay: EventRelay | None = None
        self._tasks: list[asyncio.Task] = []
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
        self.presence = PresenceTracker(reg.clock, self._record_presence, self.log)

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
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from store.console import ensure_console_account

        self._loop = asyncio.get_running_loop()
        self._refusals = Refusals(self.log, self._loop.call_later)
        # Whatever can be checked is checked before anything starts: a failure is one line and leaves nothing.
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
        self.accounts = PluginAccounts(self.reg, None, self.log, service=service, snapshot_path=snapshot,
                                       group=self._socket.group if self._socket else None)  # 0640 for that group
        # Item 4 (issue 16): the relay follows the changelog from before this full read, so a grant committed
        # while the service starts is applied too (not left for the minute's reconcile).
        since = await asyncio.to_thread(self.reg.last_event_id)
        await self.accounts.load()
        try:
            await self.accounts.write_snapshot(force=True)  # what the plugin loads when Mosquitto starts
        except OSError as exc:
            raise ServerError(f"cannot write {snapshot}: {exc.strerror or exc}") from None
        if self.broker_url is None:
            host, port = await self._start_mosquitto(service)
        else:
            host, port = parse_broker_url(self.broker_url)
            self.broker = f"attached to mqtt://{host}:{port}"
            await self._start_site_accounts()
        self.mqtt_host, self.mqtt_port = host, port
        self.link = BrokerLink(host, port, service.username, service.password, self.log,
                               on_connected=self._link_changed)
        try:
            if self.broker_url is None:
                await asyncio.to_thread(self.link.start)
            else:  # the site restarts its Mosquitto after this start has written the snapshot (README)
                self.log(f"mqtt: logging in to {self.broker} as the service account; if Mosquitto refuses, "
                         f"restart it now that the snapshot is written (waiting up to {ATTACH_WAIT:.0f} s)")
                await asyncio.to_thread(self.link.start, ATTACH_WAIT, patient=True)
        except LinkError as exc:
            if self.supervisor is not None:  # what the plugin said it loaded is the likely reason
                said = self.supervisor.last_line("registry_plugin")
                hint = f" (mosquitto said: {said})" if said else ""
            else:
                hint = " (did you install `client-registry mosquitto-config`?)"
            raise ServerError(f"{exc}{hint}") from None
        self.accounts.link = self.link
        try:
            fixes = await self.accounts.reconcile()
        except LinkError as exc:
            raise ServerError(f"{exc}") from None
        if fixes:
            self.log(f"reconcile: {fixes} correction(s) at start")
        accounts = self.accounts
        self._relay = EventRelay(self.reg, self._publish, self._apply_event, self.log,
                                 interval=self.relay_interval, in_step=lambda: not accounts.stale)
        await self._relay.start(since)
        await self._start_http()
        self._publish_status("running")  # once the HTTP API serves: the status names its address
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="client-registry-reconcile"))
        self._tasks.append(asyncio.create_task(self._watch_database(), name="client-registry-database"))
        self._tasks.append(asyncio.create_task(self.presence.run(), name="client-registry-presence"))
        self._tasks.append(asyncio.create_task(self.accounts.run_snapshots(), name="client-registry-snapshot"))

    async def _start_site_accounts(self) -> None:
        """Attach mode: the site's own accounts are never a device's (broker/mosquitto/site_accounts.py)."""
        from .mosquitto.site_accounts import SiteAccounts, SiteAccountsError

        try:
            site = SiteAccounts.of(self.reg, self.log)
            await asyncio.to_thread(site.refresh, True)
        except SiteAccountsError as exc:
            raise ServerError(str(exc)) from None
        self._tasks.append(asyncio.create_task(site.run(), name="client-registry-site-accounts"))

    async def _start_socket(self) -> None:
        group = self.run_as.gid if self.run_as is not None else None  # Mosquitto, after dropping root, sends here
        if self.socket_group:
            try:
                group = grp.getgrnam(self.socket_group).gr_gid
            except KeyError:
                raise ServerError(f"no group named {self.socket_group!r} (--socket-group)") from None
        self._socket = PluginSocket(self.socket_path, self._on_knocks, self.log, group=group)
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            await self._socket.start()
        except OSError as exc:
            self._socket = None
            raise ServerError(f"cannot open the plugin socket {self.socket_path}: {exc.strerror or exc}") from None

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
        self.supervisor = MosquittoSupervisor(self._binary, self.files.conf, host, port, self.log,
                                              on_state=self._broker_changed, outlive=self.outlive,
                                              on_spawn=self.presence.restarted)
        await self.supervisor.end_orphan()  # a Mosquitto left by a killed service holds our port
        _probe_bind("MQTT", host, port)

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
            self.log(note)
        secret = self.reg.companion("secret")
        plugin = self._plugin
        try:
            if self.run_as is not None:
                plugin = privileges.shared_copy(self.run_as, plugin, self.files.plugin)
            if self.persistence:
                self.files.persistence.mkdir(mode=0o700, exist_ok=True)
            mconf.write_private(self.files.conf, mconf.render_conf(
                listener=mconf.listener_line(host, port), registry_plugin=plugin, secret=secret,
                snapshot=self.files.snapshot, socket=self.socket_path,
                user=self.run_as.name if self.run_as is not None else mconf.current_user(),
                persistence=self.files.persistence if self.persistence else None, include=self._include,
                max_packet_size=self.max_packet_size, max_connections=self.max_connections))
            if self.run_as is not None:
                privileges.hand_over(self.run_as, folder=self.files.conf.parent,
                                     readable=[self.files.conf, secret, self.files.snapshot],
                                     writable_folder=self.files.persistence if self.persistence else None)
        except (OSError, ValueError) as exc:
            raise ServerError(f"cannot write Mosquitto's configuration: {exc}") from None
        raise_open_files(self.max_connections + 1024)  # Mosquitto inherits it: one descriptor per connection
        try:
            await self.supervisor.start()
        except MosquittoError as exc:
            raise ServerError(str(exc)) from None
        self.broker = f"mosquitto {self.version}, supervised"
        self.log(f"mqtt: {self.broker}, listening on {host}:{port}")
        return host, port

    async def _start_http(self) -> None:
        if self.http_bind is None:
            return
        from aiohttp import web

        host, port = self.http_bind
        api = RegisterAPI(self.reg, self.log, wake=self._wake_relay, granted=self._granted_over_http, health=self.health, limits=self.http_limits)
        runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await runner.setup()
        self._http_runner = runner
        site = api.site(runner, host, port)  # timeouts, connection limit, one log line per refusal
        try:
            await site.start()
        except OSError as exc:
            raise _bind_error("HTTP", host, port, exc) from None
        self.http_host, self.http_port = runner.addresses[0][:2]
        self.log(f"http listening on {self.http_host}:{self.http_port}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self.link is not None:
            if self.link.connected.is_set():
                self._publish_status("stopped")
            await asyncio.to_thread(self.link.stop)
            self.link = None
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.supervisor is not None:  # its Mosquitto stopped: every session ended now
            self.presence.restarted()
        await self.presence.flush()
        if self.accounts is not None:
            try:
                await self.accounts.write_snapshot()
            except OSError:
                pass  # said by the snapshot loop already
        if self._socket is not None:
            await self._socket.stop()
            self._socket = None
        self._db_pool.shutdown(wait=False, cancel_futures=True)

    # -- the broker's state ----------------------------------------------------------------------------------
    def health(self) -> dict:
        return {"broker": self.broker, "broker_state": self.broker_state,
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
            self.log(f"broker: {problem}; /healthz fails until it is back" if problem
                     else "broker: taking the registry's changes again")
        self._noted_problem, self._noted_at = problem, now
        try:
            await asyncio.to_thread(self.reg.note_problem, problem)
        except Exception as exc:  # the database is away too: /healthz says that first
            self.log(f"database: cannot note the broker's state: {exc}")

    def _check_database(self) -> None:
        """A database file that disappears or is replaced under a running server is said once, fails
        /healthz and stops new requests until it is back; nothing is ever written to a second file."""
        problem = self._db_watch.problem()
        if problem != self.database_problem:
            self.database_problem = problem  # before the log line: whoever reads it sees /healthz agree
            self.log(f"database: {problem}; not admitting new requests until it is back" if problem
                     else "database: back; admitting new requests again")

    def _publish_status(self, state: str) -> None:
        if self.link is None:
            return
        from importlib.metadata import version

        body = {"service": "client-registry", "version": version("client-registry"), "broker": self.broker,
                "state": state, "time": time.time(),
                "http": f"{self.http_host}:{self.http_port}" if self.http_port else None}
        self.link.publish(STATUS_TOPIC, json.dumps(body).encode(), qos=1, retain=True)

    def _broker_changed(self, state: str) -> None:
        self.log(f"mqtt: mosquitto {state}")

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
                self.log("mqtt: connected to Mosquitto again; reconciling")
                self._publish_status("running")
            except TimeoutError:
                waited += 1.0
                if waited < self.reconcile_interval and not (self.accounts and self.accounts.stale):
                    continue
            waited = 0.0
            try:
                await self.reconcile()
            except Exception as exc:  # the broker is away: try again at the next round
                self.log(f"reconcile failed: {exc}")

    async def reconcile(self) -> int:
        assert self.accounts is not None
        return await self.accounts.reconcile()

    # -- decisions ---------------------------------------------------------------------------------------------
    async def _on_knocks(self, batch: list[Any]) -> None:
        """What the plugin reported (attempts of names Mosquitto does not know, knocks counted while locked,
        logins and disconnections) and the CLI's wakes; the attempts are recorded in one transaction."""
        attempts = []
        for item in batch:
            if item is WAKE_MARK:
                if self._relay is not None:  # another process changed the registry and waits for it
                    self._relay.wake(waited_for=True)
            elif isinstance(item, wire.Presence):
                if item.reset and self.supervisor is None:  # an attached Mosquitto restarted
                    self.presence.restarted()
                for logged_in, username, client_id in item.changes:
                    self.presence.change(username.decode("utf-8", "replace"),
                                         client_id.decode("utf-8", "replace"), logged_in)
            elif isinstance(item, wire.Knocks):
                if not self.database_problem:
                    await asyncio.get_running_loop().run_in_executor(
                        self._db_pool, self.reg.record_knocks,
                        [(n.decode("utf-8", "replace"), c) for n, c in item.names], item.total)
            elif isinstance(item, wire.Attempt):
                attempt = self._attempt(item)
                if attempt is not None:
                    attempts.append(attempt)
        if not attempts:
            return
        results = await asyncio.get_running_loop().run_in_executor(
            self._db_pool, self.reg.login_many, [attempt for _, attempt in attempts])
        if any(r.accepted or (r.attempt is not None and r.attempt.outcome == "granted") for r in results):
            await self._relay_catch_up()  # granted by a rule, or granted meanwhile: the account goes in now
        for (proto, (username, _password, client_id, peer, _)), result in zip(attempts, results):
            self._decided(proto, username, client_id, peer, result)

    def _attempt(self, item: wire.Attempt) -> tuple[str, tuple] | None:
        proto = wire.PROTOCOLS.get(item.protocol, f"protocol {item.protocol}")
        try:
            username, password = item.username.decode("utf-8"), item.password.decode("utf-8")
            client_id = item.client_id.decode("utf-8") or None
        except UnicodeDecodeError:
            self._refusals(f"mqtt refuse user={safe(item.username)} ({proto}): not valid UTF-8")
            return None
        peer = item.peer.decode("ascii", "replace") or None
        if self.database_problem:
            self._refusals(f"mqtt refuse user={safe(username)} from {peer or '?'} ({proto}): not recorded, "
                           f"{self.database_problem}")
            return None
        return proto, (username, password, client_id, peer, "mqtt-rekey" if item.kind == wire.REKEY else "mqtt")

    def _decided(self, proto: str, username: str, client_id: str | None, peer: str | None, result: Any) -> None:
        where = f"user={safe(username)} client={safe(client_id)} from {peer or '?'} ({proto})"
        if result.accepted:
            # A user's right password that Mosquitto did not know yet: its account was on its way (a grant
            # not applied when the device knocked); it is there now.
            self._refusals(f"mqtt knock {where}: a user's right password; its account was being applied")
            return
        attempt = result.attempt
        if attempt is not None and attempt.outcome == "granted":
            self.log(f"mqtt admit {where}: {attempt.reason}; its next connect gets in")
            return
        if attempt is not None and attempt.accepted:
            self._wake_relay()
        line = f"mqtt refuse {where}: {result.outcome} ({result.reason})"
        if attempt is not None and attempt.accepted:
            self.log(line)  # a request an operator will see: always its own line
        else:
            self._refusals(line)

    async def _granted_over_http(self, username: str, password: str) -> None:
        """The device proved its password at the 201 poll (or an approval rule admitted it): its account
        is in Mosquitto before the answer."""
        await self._relay_catch_up()

    async def _relay_catch_up(self) -> None:
        if self._relay is not None:
            await self._relay.catch_up()

    async def _apply_event(self, events: list[Any]) -> None:
        if self.accounts is not None and self.accounts.link is not None:
            await self.accounts.apply(events)

    async def _record_presence(self, changes: dict, reset_at: float | None) -> bool:
        if self.database_problem:  # opening the path now would create an empty database in its place
            return False
        await asyncio.get_running_loop().run_in_executor(self._db_pool, self.reg.record_presence, changes, reset_at)
        return True

    def _wake_relay(self) -> None:
        if self._relay is not None:
            self._relay.wake()

    def _publish(self, topic: str, payload: bytes) -> None:
        if self.link is not None:
            self.link.publish(topic, payload, qos=1)


# -- the `client-registry serve` command -------------------------------------------------------------------
def stderr_log(line: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    sys.stderr.flush()


START_HOLD = 2.0  # seconds a start's log lines are held back


class StartLog:
    """serve's log while it starts: lines are held (stamped when said) and written once the start succeeds, or
    once it has taken START_HOLD s (a slow start, e.g. waiting for an attached Mosquitto, shows its progress).
    A start that fails fast writes only its one-line reason: the held lines are dropped."""

    def __init__(self, later: Callable[[float, Callable[[], None]], Any]) -> None:
        self.held: list[str] | None = []
        self._timer = later(START_HOLD, self.release)

    def __call__(self, line: str) -> None:
        if self.held is None:
            stderr_log(line)
        else:
            self.held.append(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def release(self) -> None:
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


async def _serve(reg: Any, mqtt_bind: str, http_bind: str, options: dict) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    log = StartLog(loop.call_later)
    try:
        async with EmbeddedServer(reg, mqtt_bind, http_bind, log=log, **options) as srv:
            log.release()
            stderr_log(f"client-registry serving: mqtt {srv.mqtt_host}:{srv.mqtt_port} ({srv.broker}), "
                       f"http {srv.http_host}:{srv.http_port}, database {getattr(reg, 'location', '?')}, "
                       f"credentials beside it")
            await stop.wait()
            stderr_log("client-registry shutting down")
    except ServerError as exc:
        log.drop()
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    except Exception as exc:  # a bug: still one line for the operator's log, never a traceback
        log.drop()
        sys.stderr.write(f"client-registry: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    stderr_log("client-registry stopped")
    return 0


def serve_main(db: str | None, mqtt_bind: str = DEFAULT_MQTT_BIND, http_bind: str = DEFAULT_HTTP_BIND,
               config: Any = None, **options: Any) -> int:
    from store import StoreError, open_registry

    try:
        parse_bind(mqtt_bind, 1883)
        parse_bind(http_bind, 8080)
        if options.get("broker_url"):
            parse_broker_url(options["broker_url"])
    except ServerError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 2
    try:
        reg = open_registry(db, config=config)
    except StoreError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    try:
        return asyncio.run(_serve(reg, mqtt_bind, http_bind, options))
    finally:
        reg.close()
