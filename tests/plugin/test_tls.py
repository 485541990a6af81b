"""Devices over TLS with client certificates, for real: a site CA made by broker/certificates.py, device keys and
CSRs made by `openssl req` (the device's key never passes through the registry), certificates signed by the
module, Mosquitto 2.0.11 with a TLS listener (`require_certificate true`, `crlfile`) beside its plain one, and
real clients (`mosquitto_pub --cafile --cert --key`, paho with TLS).

What is shown: a signed CSR connects; a revoked serial is refused after Mosquitto reloads its CRL on SIGHUP
and after a restart; an account bound to a certificate's fingerprint admits that certificate only (another one
from the same CA, or none, is refused); an unknown attempt reports the certificate it presented."""

from __future__ import annotations

import datetime as dt
import signal
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from bench.procs import free_port
from broker import certificates as ca_files
from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.config import listener_line
from store.certificates import certificate_fingerprint, check_csr

from .conftest import REFUSED, SERVICE, Service, account, attempt, wait_until

OPEN = dt.datetime.now().timestamp() + 3600
PASSWORD = "device-password"


@dataclass
class Device:
    name: str
    key: Path
    cert: Path
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> bytes:
        return bytes.fromhex(certificate_fingerprint(self.certificate))


@pytest.fixture
def site(short_dir) -> ca_files.TlsFiles:
    files = ca_files.TlsFiles.for_database(str(short_dir / "registry.db"))
    ca_files.init_files(files, ["localhost", "127.0.0.1"])
    return files


def make_device(site: ca_files.TlsFiles, directory: Path, name: str, tag: str = "") -> Device:
    """What firmware does: a key and a CSR made on the device; the registry only signs the CSR."""
    key, request = directory / f"{name}{tag}.key", directory / f"{name}{tag}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", f"/CN={name}", "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    certificate = ca_files.sign_device(ca_files.load_ca(site), check_csr(request.read_bytes()))
    cert = directory / f"{name}{tag}.crt"
    cert.write_bytes(ca_files.pem(certificate))
    return Device(name, key, cert, certificate)


def tls_lines(site: ca_files.TlsFiles, port: int) -> list[str]:
    """A TLS listener beside the plain one (where the test's service account sends control messages)."""
    return [listener_line("127.0.0.1", port), *site.listener_options()]


def pub(port: int, site: ca_files.TlsFiles, device: Device | None, username: str, password: str = PASSWORD,
        host: str = "localhost") -> subprocess.CompletedProcess:
    argv = ["mosquitto_pub", "-h", host, "-p", str(port), "-V", "5", "--cafile", str(site.ca_cert),
            "-i", f"pub-{username}", "-u", username, "-P", password, "-t", "t", "-m", "x"]
    if device is not None:
        argv += ["--cert", str(device.cert), "--key", str(device.key)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def paho_connect(port: int, site: ca_files.TlsFiles, device: Device, username: str, password: str = PASSWORD):
    """paho over TLS; the CONNACK's reason code (0 accepted), or the exception the handshake raised."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{username}", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(site.ca_cert), certfile=str(device.cert), keyfile=str(device.key))
    client.username_pw_set(username, password)
    answers: list = []
    client.on_connect = lambda c, u, f, rc, p: answers.append(rc)
    try:
        client.connect("localhost", port, keepalive=30)
    except (ssl.SSLError, OSError) as exc:
        return exc
    client.loop_start()
    try:
        wait_until(lambda: answers, 10, "a CONNACK")
        return answers[0].value
    finally:
        client.disconnect()
        client.loop_stop()


REFUSED_V5 = 135  # mosquitto_pub's exit code (and reason) for "Not authorized"


def test_a_signed_csr_connects_and_a_revoked_serial_is_refused_after_sighup_and_restart(
        start_broker, registry, site, short_dir):
    pump, valve = make_device(site, short_dir, "pump-7"), make_device(site, short_dir, "valve-2")
    assert pump.certificate.issuer == ca_files.load_ca(site).certificate.subject
    port = free_port()
    broker = start_broker([SERVICE, account("pump-7", PASSWORD), account("valve-2", PASSWORD)],
                          extra=tls_lines(site, port))
    for device in (pump, valve):
        ok = pub(port, site, device, device.name)
        assert ok.returncode == 0, ok.stderr
    assert pub(port, site, None, "pump-7").returncode != 0  # require_certificate: no certificate, no TLS
    ok = pub(port, site, pump, "pump-7", host="127.0.0.1")  # the server certificate names the address too
    assert ok.returncode == 0, ok.stderr

    ca_files.revoke(site, [(pump.certificate.serial_number, dt.datetime.now(dt.UTC))])
    reloads = broker.log().count("Reloading config.")
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: broker.log().count("Reloading config.") > reloads, 10, "Mosquitto to reload")
    refused = pub(port, site, pump, "pump-7")
    assert refused.returncode != 0 and refused.returncode != REFUSED_V5, "refused by TLS, not by the plugin"
    after_reload = broker.log().rsplit("Reloading config.", 1)[1]
    assert "certificate verify failed" in after_reload  # the handshake, before any CONNECT reached the plugin
    ok = pub(port, site, valve, "valve-2")
    assert ok.returncode == 0, ok.stderr

    broker.stop()
    broker.start()
    assert pub(port, site, pump, "pump-7").returncode not in (0, REFUSED_V5)
    assert pub(port, site, valve, "valve-2").returncode == 0


def test_a_bound_account_admits_its_certificate_only(start_broker, registry, site, short_dir, clients):
    mine = make_device(site, short_dir, "pump-7")
    twin = make_device(site, short_dir, "pump-7", tag="-twin")  # same CA, same name, another key
    port = free_port()
    bound = wire.Account("pump-7", account("pump-7", PASSWORD).verifier, certificate=mine.fingerprint)
    broker = start_broker([SERVICE, bound], extra=tls_lines(site, port))

    ok = pub(port, site, mine, "pump-7")
    assert ok.returncode == 0, ok.stderr
    refused = pub(port, site, twin, "pump-7")
    assert refused.returncode == REFUSED_V5 and "Not authorized" in refused.stderr
    assert pub(port, site, mine, "pump-7", password="wrong-password").returncode == REFUSED_V5
    assert paho_connect(port, site, mine, "pump-7") == 0
    assert paho_connect(port, site, twin, "pump-7") == REFUSED_V5
    # the plain listener carries no certificate: the bound name is refused there whatever the password
    plain = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "5", "-u", "pump-7",
                            "-P", PASSWORD, "-t", "t", "-m", "x"], capture_output=True, text=True, timeout=30)
    assert plain.returncode == REFUSED_V5

    # binding to the twin's certificate turns the answers round
    service = Service(broker.port)
    clients.append(service)
    assert service.ok
    rebound = wire.Account("pump-7", bound.verifier, certificate=twin.fingerprint)
    assert service.send([rebound.record()]).status == 0
    assert pub(port, site, twin, "pump-7").returncode == 0
    assert pub(port, site, mine, "pump-7").returncode == REFUSED_V5


def test_rebinding_disconnects_the_session_of_the_old_certificate(start_broker, registry, site, short_dir, clients):
    mine, other = make_device(site, short_dir, "pump-7"), make_device(site, short_dir, "pump-7", tag="-new")
    port = free_port()
    bound = wire.Account("pump-7", account("pump-7", PASSWORD).verifier, certificate=mine.fingerprint)
    broker = start_broker([SERVICE, bound], extra=tls_lines(site, port))
    disconnected: list = []
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump", protocol=mqtt.MQTTv5)
    device.tls_set(ca_certs=str(site.ca_cert), certfile=str(mine.cert), keyfile=str(mine.key))
    device.username_pw_set("pump-7", PASSWORD)
    device.on_disconnect = lambda c, u, f, rc, p: disconnected.append(rc)
    device.connect("localhost", port)
    device.loop_start()
    try:
        wait_until(device.is_connected, 10, "the device to connect")
        service = Service(broker.port)
        clients.append(service)
        same = wire.Account("pump-7", bound.verifier, acls=((wire.READ, "x/#"),), certificate=mine.fingerprint)
        assert service.send([same.record()]).status == 0  # an ACL change alone keeps the session
        rebound = wire.Account("pump-7", bound.verifier, certificate=other.fingerprint)
        assert service.send([rebound.record()]).status == 0
        wait_until(lambda: disconnected, 10, "the old certificate's session to be disconnected")
        assert len(disconnected) == 1
        assert any("disconnecting the sessions of pump-7" in line for line in broker.plugin_log())
    finally:
        device.loop_stop()


def test_an_unknown_attempt_reports_the_certificate(start_broker, registry, site, short_dir):
    device = make_device(site, short_dir, "new-sensor")
    port = free_port()
    broker = start_broker([SERVICE], unlocked_until=OPEN, extra=tls_lines(site, port))
    assert pub(port, site, device, "new-sensor").returncode == REFUSED_V5
    got = registry.next(wire.Attempt)
    assert (got.kind, got.username, got.password) == (wire.UNKNOWN, b"new-sensor", PASSWORD.encode())
    cert = got.certificate
    assert cert is not None and cert.fingerprint == device.fingerprint
    assert cert.subject == b"CN=new-sensor"
    assert cert.issuer == device.certificate.issuer.rfc4514_string().encode()
    assert cert.serial == device.certificate.serial_number
    assert cert.not_before == int(device.certificate.not_valid_before_utc.timestamp())
    assert cert.not_after == int(device.certificate.not_valid_after_utc.timestamp())
    # the plain listener: the same kind of attempt carries no certificate block
    assert attempt(broker.port, "c", "plain-sensor", "pw") == REFUSED[4]
    plain = registry.next(wire.Attempt)
    assert plain.username == b"plain-sensor" and plain.certificate is None


def test_a_known_name_with_another_certificate_is_reported_while_unlocked(start_broker, registry, site, short_dir):
    mine, new = make_device(site, short_dir, "pump-7"), make_device(site, short_dir, "pump-7", tag="-rotated")
    port = free_port()
    bound = wire.Account("pump-7", account("pump-7", PASSWORD).verifier, certificate=mine.fingerprint)
    start_broker([SERVICE, bound], unlocked_until=OPEN, extra=tls_lines(site, port))
    assert pub(port, site, new, "pump-7").returncode == REFUSED_V5
    got = registry.next(wire.Attempt)
    assert got.kind == wire.NEW_CERTIFICATE and got.username == b"pump-7"
    assert got.certificate is not None and got.certificate.fingerprint == new.fingerprint


def test_certificate_bindings_on_the_wire(broker, service):
    """A bound record is the unbound one plus flag bit3 and 32 bytes; the plugin's digest of it is plugin_wire's;
    a record with bit3 whose fingerprint is cut short is refused whole."""
    plain = account("pump-7", PASSWORD)
    bound = wire.Account("pump-7", plain.verifier, certificate=bytes(range(32)))
    head = 1 + 2 + len("pump-7")  # 'P' and the username
    assert bound.record() == plain.record()[:head] + bytes([wire.CERT]) + plain.verifier + bytes(range(32)) \
        + plain.record()[head + 1 + 32:]
    assert wire.parse_account(bound.record()) == bound and wire.parse_account(plain.record()) == plain
    assert "certificate" in repr(bound) and bytes(range(32)).hex() not in repr(bound)
    before = service.query()
    answer = service.send([bound.record()])
    assert answer.status == 0 and answer.accounts == before.accounts + 1
    assert answer.digest == before.digest ^ wire.fnv1a64(bound.record())
    cut = bound.record()[:-(2 + 16)]  # ends inside the fingerprint
    refused = service.send([wire.delete_record("pump-7"), cut])
    assert refused.status == 1 and refused.digest == answer.digest
    with pytest.raises(wire.WireError):
        wire.Account("x-device", plain.verifier, certificate=b"short").record()


def test_the_certificate_block_of_an_attempt_is_parsed_strictly():
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b
    head = wire.ATTEMPT_MAGIC + bytes([5, wire.UNKNOWN]) + s(b"dev") + s(b"pw") + s(b"cid") + s(b"10.0.0.1")
    block = b"C" + b"\x11" * 32 + s(b"CN=dev") + s(b"CN=site CA") + s(b"\x01\x00") + (-5).to_bytes(8, "big",
                                                                                                 signed=True) \
        + (2 ** 40).to_bytes(8, "big")
    got = wire.parse_datagram(head + block)
    assert got.certificate == wire.Certificate(b"\x11" * 32, b"CN=dev", b"CN=site CA", 256, -5, 2 ** 40)
    assert wire.parse_datagram(head).certificate is None
    for junk in (head + block[:-1], head + block + b"x", head + b"D" + block[1:], head + b"C"):
        with pytest.raises(wire.WireError):
            wire.parse_datagram(junk)


def test_an_unreadable_crl_at_reload_fails_open_so_revocation_also_removes_the_account(
        start_broker, registry, site, short_dir, clients):
    """Measured on Mosquitto 2.0.11: a reload whose crlfile cannot be read rebuilds the listener's TLS context
    without revocation checks (the error is logged, the listener keeps serving). A revoked device then passes
    TLS again, so revocation must also take the account out of the plugin, which refuses it whatever TLS did."""
    pump = make_device(site, short_dir, "pump-7")
    port = free_port()
    bound = wire.Account("pump-7", account("pump-7", PASSWORD).verifier, certificate=pump.fingerprint)
    broker = start_broker([SERVICE, bound], extra=tls_lines(site, port))
    ca_files.revoke(site, [(pump.certificate.serial_number, dt.datetime.now(dt.UTC))])
    site.crl.write_text("not a CRL\n")  # what a non-atomic writer could leave for a moment
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "Unable to load certificate revocation file" in broker.log(), 10, "the reload's error")
    assert pub(port, site, pump, "pump-7").returncode == 0  # past TLS and admitted: the CRL is not checked
    service = Service(broker.port)
    clients.append(service)
    assert service.send([wire.delete_record("pump-7")]).status == 0  # what revocation does besides the CRL
    assert pub(port, site, pump, "pump-7").returncode == REFUSED_V5
