"""Certificate devices through `serve` as a site runs it, end to end, with real clients: `client-registry tls init`
makes the site CA beside the database, `serve --tls --tls-require-certificate --http-tls` adds the TLS listener
(`require_certificate true`, `crlfile`) beside the plain one and serves the API over HTTPS; keys and CSRs made by
`openssl req` (the device's key never leaves its folder), the CSR posted over HTTPS, granted by `client-registry
grant` in its own process, the certificate fetched and used by `mosquitto_pub --cafile --cert --key`; the
implicit flow with paho over TLS; a binding refused with another certificate, a rotation granted with force;
revocation by the CRL within 1 s and after a restart; hostile CSRs refused with one line."""

from __future__ import annotations

import json
import os
import socket
import ssl
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
from tests.plugin.test_tls import Device, make_device, paho_connect, pub
from tests.store.test_certificates import info_with_cn_bytes, signed
from tests.waits import wait_until

CLI = str(Path(sys.executable).parent / "client-registry")
NOT_AUTHORIZED = 135  # the CONNACK reason (and mosquitto_pub exit code) of a refusal by the plugin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args, "--db", db], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def site(db_path) -> ca_files.TlsFiles:
    made = cli(db_path, "tls", "init", "--name", "localhost", "--name", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    return ca_files.TlsFiles.for_database(db_path)


class Served:
    """`client-registry serve --tls --tls-require-certificate --http-tls` in its own process, on fixed free ports
    (a restart keeps them), its log in a file."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.mqtt_port, self.tls_port, self.http_port = _free_port(), _free_port(), _free_port()
        self.log_path = Path(db).with_name("serve.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Served:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        starts = self.log().count("client-registry serving")
        with open(self.log_path, "a") as out:
            proc = self.proc = subprocess.Popen(
                [CLI, "--db", self.db, "serve", "--tls", "--tls-require-certificate", "--http-tls",
                 "--mqtt-bind", f"127.0.0.1:{self.mqtt_port}", "--mqtt-tls-bind", f"127.0.0.1:{self.tls_port}",
                 "--http-bind", f"127.0.0.1:{self.http_port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self.log().count("client-registry serving") > starts or proc.poll() is not None,
                   timeout=30, message="serve to start")
        assert proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0, self.log()[-2000:]


@pytest.fixture
def served(db_path, site):
    server = Served(db_path).start()
    yield server
    server.stop()


def post_csr(port: int, body: bytes, ca: Path | None, content_type: str = "application/pkcs10") -> tuple[int, dict]:
    """A CSR posted over HTTPS, the server's certificate checked against ``ca`` as a device does (None: plain
    HTTP)."""
    scheme = "http" if ca is None else "https"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/api/client-registry/csr", data=body,
                                     headers={"Content-Type": content_type}, method="POST")
    context = None if ca is None else ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
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


def plain_pub(port: int, username: str, password: str) -> int:
    """mosquitto_pub on the plain listener: its exit code (0 published, 135 refused by the plugin)."""
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "5", "-u", username,
                           "-P", password, "-t", "t", "-m", "x"],
                          capture_output=True, timeout=30, check=False).returncode


def refused_by_tls(result: subprocess.CompletedProcess) -> bool:
    """The handshake failed: not a CONNACK refusal by the plugin (135), not a success."""
    return result.returncode not in (0, NOT_AUTHORIZED)


def test_csr_posted_granted_by_the_cli_fetched_connects_and_is_revoked_within_a_second_and_after_a_restart(
        served, site, tmp_path):
    db, ca, tls_port = served.db, site.ca_cert, served.tls_port
    key, request = openssl_csr(tmp_path, "pump-7")
    assert post_csr(served.http_port, request.read_bytes(), ca)[0] == 423  # locked
    assert cli(db, "unlock").returncode == 0
    code, body = post_csr(served.http_port, request.read_bytes(), ca)
    assert code == 202, body
    assert body["pairing_code"] == printed_pairing_code(request)
    shown = cli(db, "requests")
    assert "pump-7" in shown.stdout and body["pairing_code"] in shown.stdout and "csr" in shown.stdout

    granted = cli(db, "grant", "pump-7", "-p", "plant/{username}/#=readWrite", "--certificate-days", "30")
    assert granted.returncode == 0, granted.stderr
    code, body = post_csr(served.http_port, request.read_bytes(), ca)  # the device polls with the same CSR
    assert code == 201, body
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert certificate.subject.rfc4514_string() == "CN=pump-7"
    assert 29 <= (certificate.not_valid_after_utc - certificate.not_valid_before_utc).days <= 30
    assert body["ca"] == ca.read_text()
    cert = tmp_path / "pump-7.crt"
    cert.write_text(body["certificate"])
    device = Device("pump-7", key, cert, certificate)
    wait_until(lambda: pub(tls_port, site, device, "pump-7", password="").returncode == 0,
               message="pump-7 admitted by its certificate")
    users = cli(db, "users")
    assert "pump-7" in users.stdout and "cert-only" in users.stdout
    other = make_device(site, tmp_path, "pump-7", tag="-other")  # the site CA's too, but not the one granted
    assert pub(tls_port, site, other, "pump-7", password="").returncode == NOT_AUTHORIZED
    wait_until(lambda: any("user='pump-7'" in line and "another presented" in line
                           for line in served.log().splitlines()), message="the log saying why it was refused")
    assert plain_pub(served.mqtt_port, "pump-7", "") == NOT_AUTHORIZED  # no certificate to admit it on 1883
    wait_until(lambda: any("user='pump-7'" in line and "none presented" in line
                           for line in served.log().splitlines()), message="the log saying why pump-7 was refused")
    # ... where devices with passwords and no certificate knock and connect as before
    assert plain_pub(served.mqtt_port, "meter-9", "meter-password") == NOT_AUTHORIZED
    wait_until(lambda: "meter-9" in cli(db, "requests").stdout, message="meter-9's knock on the plain listener")
    assert cli(db, "grant", "meter-9").returncode == 0
    wait_until(lambda: plain_pub(served.mqtt_port, "meter-9", "meter-password") == 0, message="meter-9 admitted")

    disabled = cli(db, "user", "disable", "pump-7", "--yes")
    assert disabled.returncode == 0, disabled.stderr
    since = time.monotonic()
    wait_until(lambda: refused_by_tls(pub(tls_port, site, device, "pump-7", password="")), timeout=1.0,
               message="the device's TLS handshake refused (CRL reloaded)")
    took = time.monotonic() - since
    assert "mosquitto reloads it" in served.log()
    print(f"revocation refused the handshake {took * 1000:.0f} ms after `user disable` returned")

    served.stop()
    served.start()  # a restart: the CRL on disk still refuses the certificate
    assert refused_by_tls(pub(tls_port, site, device, "pump-7", password=""))
    served.stop()
    # reinstated while no service runs (the CLI, which saw one a moment ago, says it did not apply it)
    assert "enabled pump-7" in cli(db, "user", "enable", "pump-7").stdout
    served.start()  # ... so the service's start rewrites the CRL before its Mosquitto reads it
    ok = pub(tls_port, site, device, "pump-7", password="")
    assert ok.returncode == 0, ok.stderr


def requests_after_knocks(knock, admin_reg, found, message: str):
    """Knock until the service reports the attempt (the plugin learns of an unlock a moment after the CLI's)."""
    def knocked():
        assert knock() == NOT_AUTHORIZED
        return next((r for r in admin_reg.requests() if found(r)), None)
    return wait_until(knocked, message=message)


def test_a_certificate_device_in_the_implicit_flow_is_bound_and_rotated(served, site, admin_reg, tmp_path):
    db, tls_port = served.db, served.tls_port
    cam = make_device(site, tmp_path, "cam-1")  # a certificate the site's CA signed (not by a CSR here)
    assert cli(db, "unlock").returncode == 0
    request = requests_after_knocks(lambda: paho_connect(tls_port, site, cam, "cam-1"), admin_reg,
                                    lambda r: r.username == "cam-1", "cam-1's request")
    assert request.certificate == cam.fingerprint.hex()
    assert request.pairing_code == cam.fingerprint.hex()[:8]
    assert request.certificate_info["subject"] == "CN=cam-1"
    shown = json.loads(cli(db, "requests", "--json").stdout)[0]
    assert shown["certificate"] == cam.fingerprint.hex() and not shown["csr"]
    details = cli(db, "requests")
    assert "cert" in details.stdout and "CN=cam-1" in details.stdout

    assert cli(db, "grant", "cam-1").returncode == 0
    wait_until(lambda: paho_connect(tls_port, site, cam, "cam-1") == 0, message="cam-1 admitted")
    assert "cert" in cli(db, "users").stdout.split("cam-1", 1)[1].splitlines()[0]

    twin = make_device(site, tmp_path, "cam-1", tag="-new")  # a replaced device: same name and password
    rotation = requests_after_knocks(lambda: paho_connect(tls_port, site, twin, "cam-1"), admin_reg,
                                     lambda r: r.rotation, "a rotation request")  # the binding refuses it
    assert rotation.certificate == twin.fingerprint.hex()
    assert "rotation" in cli(db, "requests").stdout
    refused = cli(db, "grant", str(rotation.id))
    assert refused.returncode == 1 and "(--force)" in refused.stderr, refused.stderr
    assert cli(db, "grant", str(rotation.id), "--force").returncode == 0
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
def test_hostile_csrs_are_refused_over_https_with_one_line(served, site, admin_reg):
    assert cli(served.db, "unlock").returncode == 0
    for what, body, status, said in _hostile():
        code, answer = post_csr(served.http_port, body, site.ca_cert)
        assert code == status, (what, answer)
        assert said in answer["message"] and "\n" not in answer["message"], (what, answer)
    code, answer = post_csr(served.http_port, json.dumps({"csr": 5}).encode(), site.ca_cert, "application/json")
    assert code == 400 and answer["field"] == "csr"
    code, answer = post_csr(served.http_port, b'{"csr": "x", ', site.ca_cert, "application/json")
    assert code == 400 and answer["error"] == "malformed"
    assert admin_reg.requests() == []  # nothing recorded
    refusals = [line.split(" ", 1)[1] for line in served.log().splitlines() if " http csr" in line]
    assert len(refusals) == 9 and all("\n" not in line for line in refusals)


def test_a_csr_as_json_with_context_and_no_site_ca(server, admin_reg, tmp_path):
    """Without a site CA the request waits as any other, and granting it says how to make the CA."""
    _key, request = openssl_csr(tmp_path, "valve-3")
    admin_reg.unlock(300, actor="op")
    server.applied(admin_reg)
    body = json.dumps({"csr": request.read_text(), "context": {"site": "hall 2"}}).encode()
    code, answer = post_csr(server.http_port, body, None, "application/json")
    assert code == 202 and answer["pairing_code"] == printed_pairing_code(request)
    assert admin_reg.requests()[0].context == {"site": "hall 2"}
    refused = cli(server.db, "grant", "valve-3")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "client-registry tls init" in refused.stderr, refused.stderr


def test_an_approval_rule_grants_a_csr_at_its_first_post(served, site, admin_reg, tmp_path):
    """The service signs in the transaction that records the CSR: the first answer is 201 with the
    certificate, and the account is in Mosquitto before it."""
    assert cli(served.db, "rule", "add", "meter-*", "-p", "meters/{username}/#=write").returncode == 0
    assert cli(served.db, "unlock").returncode == 0
    key, request = openssl_csr(tmp_path, "meter-4")
    code, body = post_csr(served.http_port, request.read_bytes(), site.ca_cert)
    assert code == 201, body
    cert = tmp_path / "meter-4.crt"
    cert.write_text(body["certificate"])
    device = Device("meter-4", key, cert, x509.load_pem_x509_certificate(body["certificate"].encode()))
    ok = pub(served.tls_port, site, device, "meter-4", password="")  # at once: no wait for the relay
    assert ok.returncode == 0, ok.stderr


def test_certificate_days_out_of_range_is_a_usage_error(db_path):
    assert cli(db_path, "init").returncode == 0
    for days in ("0", "3651", "soon"):
        refused = cli(db_path, "grant", "x-1", "--certificate-days", days)
        assert refused.returncode == 2 and "--certificate-days" in refused.stderr
