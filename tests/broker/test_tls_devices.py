"""Certificate devices through the running service, end to end, with real clients: a site CA beside the
database, the service's Mosquitto with a TLS listener (`require_certificate true`, `crlfile`) added by
`--mosquitto-include` as a site would write it, keys and CSRs made by `openssl req` (the device's key never
leaves its folder), the CSR posted over HTTP, granted by `client-registry grant` in its own process, the
certificate fetched and used by `mosquitto_pub --cafile --cert --key`; the implicit flow with paho over TLS;
a binding refused with another certificate, a rotation granted with force; revocation by the CRL within 1 s
and after a restart; hostile CSRs refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker import certificates as ca_files
from broker.mosquitto.config import listener_line
from tests.broker.conftest import ServerThread, wait_until
from tests.plugin.test_tls import Device, make_device, paho_connect, pub
from tests.store.test_certificates import info_with_cn_bytes, signed

CLI = str(Path(sys.executable).parent / "client-registry")
PASSWORD = "device-password"  # what tests.plugin.test_tls's clients send by default
NOT_AUTHORIZED = 135  # the CONNACK reason (and mosquitto_pub exit code) of a refusal by the plugin


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args, "--db", db], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def site(db_path) -> ca_files.TlsFiles:
    files = ca_files.TlsFiles.for_database(db_path)
    ca_files.init_files(files, ["localhost", "127.0.0.1"])
    return files


@pytest.fixture
def tls_port() -> int:
    return _free_port()


def start(db_path: str, site: ca_files.TlsFiles, tls_port: int) -> ServerThread:
    """The service, with the TLS listener a site adds to its Mosquitto (until `serve --tls-*` does it)."""
    include = Path(db_path).with_name("tls.conf")
    include.write_text("\n".join([listener_line("127.0.0.1", tls_port), *site.listener_options(),
                                  "set_tcp_nodelay true"]) + "\n")
    return ServerThread(db_path, mosquitto_include=str(include)).start()


@pytest.fixture
def tls_server(db_path, site, tls_port):
    server = start(db_path, site, tls_port)
    yield server
    server.stop()


def post_csr(port: int, body: bytes, content_type: str = "application/pkcs10") -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/client-registry/csr", data=body,
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def openssl_csr(folder: Path, name: str) -> tuple[Path, Path]:
    """What firmware does: its own key and a CSR for its name (the key stays here)."""
    key, request = folder / f"{name}.key", folder / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", f"/CN={name}", "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    return key, request


def printed_pairing_code(request: Path) -> str:
    """The pairing code as the device prints its own (the SHA-256 of its public key, first 8 characters)."""
    out = subprocess.run(f"openssl req -in {request} -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
                         shell=True, check=True, capture_output=True, text=True, timeout=30).stdout
    return out.split()[0][:8]


def refused_by_tls(result: subprocess.CompletedProcess) -> bool:
    """The handshake failed: not a CONNACK refusal by the plugin (135), not a success."""
    return result.returncode not in (0, NOT_AUTHORIZED)


def test_csr_posted_granted_by_the_cli_fetched_connects_and_is_revoked_within_a_second_and_after_a_restart(
        db_path, site, tls_port, admin_reg, tmp_path):
    server = start(db_path, site, tls_port)
    try:
        key, request = openssl_csr(tmp_path, "pump-7")
        assert post_csr(server.http_port, request.read_bytes())[0] == 423  # locked
        admin_reg.unlock(300, actor="op")
        code, body = post_csr(server.http_port, request.read_bytes())
        assert code == 202, body
        assert body["pairing_code"] == printed_pairing_code(request)
        shown = cli(db_path, "requests")
        assert "pump-7" in shown.stdout and body["pairing_code"] in shown.stdout and "csr" in shown.stdout

        granted = cli(db_path, "grant", "pump-7", "-p", "plant/{username}/#=readWrite", "--certificate-days", "30")
        assert granted.returncode == 0, granted.stderr
        code, body = post_csr(server.http_port, request.read_bytes())  # the device polls with the same CSR
        assert code == 201, body
        certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
        assert certificate.subject.rfc4514_string() == "CN=pump-7"
        assert 29 <= (certificate.not_valid_after_utc - certificate.not_valid_before_utc).days <= 30
        assert body["ca"] == site.ca_cert.read_text()
        cert = tmp_path / "pump-7.crt"
        cert.write_text(body["certificate"])
        device = Device("pump-7", key, cert, certificate)
        wait_until(lambda: server.srv.accounts.has_account("pump-7"), message="pump-7's account")
        ok = pub(tls_port, site, device, "pump-7", password="")
        assert ok.returncode == 0, ok.stderr
        users = cli(db_path, "users")
        assert "pump-7" in users.stdout and "cert-only" in users.stdout

        disabled = cli(db_path, "user", "disable", "pump-7", "--yes")
        assert disabled.returncode == 0, disabled.stderr
        since = time.monotonic()
        wait_until(lambda: refused_by_tls(pub(tls_port, site, device, "pump-7", password="")), timeout=1.0,
                   message="the device's TLS handshake refused (CRL reloaded)")
        took = time.monotonic() - since
        assert any("mosquitto reloads it" in line for line in server.lines), server.lines[-5:]
        print(f"revocation refused the handshake {took * 1000:.0f} ms after `user disable` returned")
    finally:
        server.stop()

    server = start(db_path, site, tls_port)  # a restart: the CRL on disk still refuses the certificate
    try:
        assert refused_by_tls(pub(tls_port, site, device, "pump-7", password=""))
    finally:
        server.stop()
    # reinstated while no service runs (the CLI, which saw one a moment ago, says it did not apply it: exit 1)
    assert "enabled pump-7" in cli(db_path, "user", "enable", "pump-7").stdout
    server = start(db_path, site, tls_port)
    try:  # ... so the service's start rewrites the CRL before its Mosquitto reads it
        ok = pub(tls_port, site, device, "pump-7", password="")
        assert ok.returncode == 0, ok.stderr
    finally:
        server.stop()


def test_a_certificate_device_in_the_implicit_flow_is_bound_and_rotated(tls_server, site, tls_port, admin_reg,
                                                                         tmp_path):
    cam = make_device(site, tmp_path, "cam-1")  # a certificate the site's CA signed (not by a CSR here)
    admin_reg.unlock(300, actor="op")
    tls_server.applied(admin_reg)
    assert paho_connect(tls_port, site, cam, "cam-1") == NOT_AUTHORIZED  # recorded, waiting for the operator
    request = wait_until(lambda: next(iter(admin_reg.requests()), None), message="cam-1's request")
    assert request.username == "cam-1" and request.certificate == cam.fingerprint.hex()
    assert request.pairing_code == cam.fingerprint.hex()[:8]
    assert request.certificate_info["subject"] == "CN=cam-1"
    shown = json.loads(cli(tls_server.db, "requests", "--json").stdout)[0]
    assert shown["certificate"] == cam.fingerprint.hex() and not shown["csr"]
    details = cli(tls_server.db, "requests")
    assert "cert" in details.stdout and "CN=cam-1" in details.stdout

    assert admin_reg.grant(["cam-1"], actor="op")[0].ok
    wait_until(lambda: tls_server.srv.accounts.has_account("cam-1"), message="cam-1's account")
    assert paho_connect(tls_port, site, cam, "cam-1") == 0
    assert "cert" in cli(tls_server.db, "users").stdout.split("cam-1", 1)[1].splitlines()[0]

    twin = make_device(site, tmp_path, "cam-1", tag="-new")  # a replaced device: same name and password
    assert paho_connect(tls_port, site, twin, "cam-1") == NOT_AUTHORIZED  # the binding refuses it ...
    rotation = wait_until(lambda: next((r for r in admin_reg.requests() if r.rotation), None),
                          message="a rotation request")  # ... and, unlocked, reports it as a rotation
    assert rotation.certificate == twin.fingerprint.hex()
    assert "rotation" in cli(tls_server.db, "requests").stdout
    assert cli(tls_server.db, "requests").stdout.count("rotation") >= 1
    assert not admin_reg.grant([str(rotation.id)], actor="op")[0].ok  # needs force
    assert cli(tls_server.db, "grant", str(rotation.id), "--force").returncode == 0
    wait_until(lambda: paho_connect(tls_port, site, twin, "cam-1") == 0, message="the new certificate admitted")
    assert paho_connect(tls_port, site, cam, "cam-1") == NOT_AUTHORIZED  # the old one no longer


def _hostile() -> list[tuple[str, bytes, int, str]]:
    key = ec.generate_private_key(ec.SECP256R1())

    def csr(name: x509.Name) -> bytes:
        request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        return request.public_bytes(serialization.Encoding.PEM)

    good = x509.load_pem_x509_csr(csr(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-1")])))
    other = ec.generate_private_key(ec.SECP256R1())
    two = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a-one"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "a-two")])
    return [
        ("huge", b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 20_000, 413, "at most 16,384 are accepted"),
        ("garbage", b"\x00\xffnot a csr", 400, "not a PKCS#10 certificate signing request"),
        ("wrong signature", signed(good.tbs_certrequest_bytes, other), 400, "signature does not match"),
        ("two common names", csr(two), 400, "exactly one common name"),
        ("bidi in the name", csr(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "\u202etxt.exe-sensor")])), 400,
         "control or formatting characters"),
        ("not UTF-8", signed(info_with_cn_bytes(b"sensor-\xc3\x28")), 400, "not valid UTF-8"),
        ("reserved", csr(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client-registry-service")])), 400,
         "not a valid username"),
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_csrs_are_refused_over_http_with_one_line(server, admin_reg):
    admin_reg.unlock(300, actor="op")
    server.applied(admin_reg)
    for what, body, status, said in _hostile():
        code, answer = post_csr(server.http_port, body)
        assert code == status, (what, answer)
        assert said in answer["message"] and "\n" not in answer["message"], (what, answer)
    code, answer = post_csr(server.http_port, json.dumps({"csr": 5}).encode(), "application/json")
    assert code == 400 and answer["field"] == "csr"
    code, answer = post_csr(server.http_port, b'{"csr": "x", ', "application/json")
    assert code == 400 and answer["error"] == "malformed"
    assert admin_reg.requests() == []  # nothing recorded
    refusals = [line for line in server.lines if line.startswith("http csr")]
    assert len(refusals) == 9 and all("\n" not in line for line in refusals)


def test_a_csr_as_json_with_context_and_no_site_ca(server, admin_reg, tmp_path):
    """Without a site CA the request waits as any other, and granting it says how to make the CA."""
    _key, request = openssl_csr(tmp_path, "valve-3")
    admin_reg.unlock(300, actor="op")
    server.applied(admin_reg)
    body = json.dumps({"csr": request.read_text(), "context": {"site": "hall 2"}}).encode()
    code, answer = post_csr(server.http_port, body, "application/json")
    assert code == 202 and answer["pairing_code"] == printed_pairing_code(request)
    assert admin_reg.requests()[0].context == {"site": "hall 2"}
    refused = cli(server.db, "grant", "valve-3")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "client-registry tls init" in refused.stderr, refused.stderr


def test_an_approval_rule_grants_a_csr_at_its_first_post(tls_server, site, tls_port, admin_reg, tmp_path):
    """The service signs in the transaction that records the CSR: the first answer is 201 with the
    certificate, and the account is in Mosquitto before it."""
    admin_reg.add_rule("meter-*", permissions=["meters/{username}/#=write"], actor="test")
    admin_reg.unlock(300, actor="op")
    tls_server.applied(admin_reg)
    key, request = openssl_csr(tmp_path, "meter-4")
    code, body = post_csr(tls_server.http_port, request.read_bytes())
    assert code == 201, body
    cert = tmp_path / "meter-4.crt"
    cert.write_text(body["certificate"])
    device = Device("meter-4", key, cert, x509.load_pem_x509_certificate(body["certificate"].encode()))
    ok = pub(tls_port, site, device, "meter-4", password="")  # at once: no wait for the relay
    assert ok.returncode == 0, ok.stderr


def test_certificate_days_out_of_range_is_a_usage_error(db_path):
    assert cli(db_path, "init").returncode == 0
    for days in ("0", "3651", "soon"):
        refused = cli(db_path, "grant", "x-1", "--certificate-days", days)
        assert refused.returncode == 2 and "--certificate-days" in refused.stderr
