"""Starting the dashboard from the command line: open the store, find (or embed) the broker, run the app."""

from __future__ import annotations

import socket
import sys

from broker.signing import open_signing_registry
from store import Registry, StoreError
from store.console import ensure_console_account, read_console_credentials

from .listener import MqttTarget

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}


def broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def console_target(reg: Registry, target: MqttTarget) -> MqttTarget:
    """Fill in the console account's credentials unless the URL gave some."""
    if target.username:
        return target
    creds = read_console_credentials(reg) or ensure_console_account(reg)
    return target.with_credentials(creds.username, creds.password)


class LaunchError(Exception):
    """One line for stderr, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def tls_ca(db: str | None, mqtt_ca: str | None) -> str | None:
    """The CA an mqtts:// broker's certificate is checked against: ``--mqtt-ca``, else the site CA `tls init`
    made beside the database, else None (the system's CAs)."""
    from broker.certificates import TlsFiles
    from store.location import resolve

    ca = mqtt_ca or str(TlsFiles.for_database(resolve(db)).ca_cert)
    try:
        with open(ca, "rb"):
            return ca
    except OSError as exc:
        if mqtt_ca:
            raise LaunchError(f"cannot read {mqtt_ca} ({exc.strerror}): --mqtt-ca") from None
        return None


def prepare_dashboard(db: str | None, mqtt: str | None, *, embed: bool = True,
                      http_bind: str | None = "127.0.0.1:8080", mqtt_ca: str | None = None):
    """Open the store, find the broker (or start the embedded one), build the app.

    Returns ``(app, reg, embedded)``; the caller runs the app, then stops ``embedded`` and closes ``reg``.
    """
    from .app import RegistryApp

    try:
        target = MqttTarget.parse(mqtt)
    except ValueError as exc:
        raise LaunchError(str(exc), 2) from None
    if target.tls:
        target = MqttTarget.parse(mqtt, tls_ca(db, mqtt_ca))
    try:
        reg = open_signing_registry(db)
    except StoreError as exc:
        raise LaunchError(str(exc)) from None
    embedded = None
    try:
        # (the embedded server has no TLS listener: an mqtts:// URL names a `serve` that runs)
        if embed and not target.tls and target.host in LOCAL_HOSTS and not broker_answers(target.host, target.port):
            refuse_a_second_server(db, target)
            # An explicit --mqtt URL says where to listen; by default, like `serve`, on every interface.
            embedded = start_embedded(db, target, http_bind, bind_host=target.host if mqtt else "0.0.0.0")
        target = console_target(reg, target)
    except (StoreError, LaunchError) as exc:
        if embedded is not None:
            embedded.stop()
        reg.close()
        raise LaunchError(str(exc)) from None
    app = RegistryApp(reg, mqtt_target=target, embedded=embedded is not None)
    return app, reg, embedded


def run_dashboard(db: str | None, mqtt: str | None, *, embed: bool = True,
                  http_bind: str | None = "127.0.0.1:8080", mqtt_ca: str | None = None) -> int:
    """What ``client-registry`` and ``client-registry dashboard`` run. Returns the exit code."""
    try:
        app, reg, embedded = prepare_dashboard(db, mqtt, embed=embed, http_bind=http_bind, mqtt_ca=mqtt_ca)
    except LaunchError as exc:
        print(f"client-registry: {exc}", file=sys.stderr)
        return exc.code
    try:
        app.run()
        return app.return_code or 0
    finally:
        if embedded is not None:
            embedded.stop()
        reg.close()


def refuse_a_second_server(db: str | None, target: MqttTarget) -> None:
    """A service already runs this database's Mosquitto elsewhere than the URL (`serve --mqtt-bind none`, or
    another port): an embedded server would take over its files and stop its Mosquitto."""
    from broker.mosquitto.config import MosquittoFiles
    from broker.mosquitto.supervisor import running_mosquitto
    from store.location import resolve

    pid = running_mosquitto(MosquittoFiles(resolve(db)).conf)
    if pid is not None:
        raise LaunchError(f"a service runs this database's Mosquitto (pid {pid}) but nothing answers on "
                          f"{target.address}: give its address with --mqtt (mqtts://HOST:8883 for its TLS "
                          f"listener)")


def start_embedded(db: str | None, target: MqttTarget, http_bind: str | None, *, bind_host: str | None = None):
    """Start the server in-process on the target's port (all interfaces by default, as `serve` does)."""
    from .embedded import EmbeddedBroker

    host = bind_host or "0.0.0.0"
    host = "127.0.0.1" if host == "localhost" else host
    mqtt_bind = f"[{host}]:{target.port}" if ":" in host else f"{host}:{target.port}"
    if http_bind is not None and http_bind.strip().lower() in ("", "none", "off"):
        http_bind = None
    try:
        return EmbeddedBroker(lambda: open_signing_registry(db), mqtt_bind, http_bind).start()
    except Exception as exc:  # ServerError or StoreError: one line
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        hint = " (choose another with --http-bind HOST:PORT, or --http-bind none)" if "HTTP" in message else ""
        raise LaunchError(f"cannot start the embedded server: {message}{hint}") from None
