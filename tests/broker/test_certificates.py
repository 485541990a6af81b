"""The site CA as files (broker/certificates.py): named after the database, private, never overwritten; device
certificates signed from checked CSRs (clientAuth, random serial, bounded validity); the CRL Mosquitto reads.
Chains are checked with `openssl verify`, as a TLS peer would."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker import certificates as ca_files
from store.certificates import check_csr


@pytest.fixture
def files(tmp_path) -> ca_files.TlsFiles:
    files = ca_files.TlsFiles.for_database(str(tmp_path / "data" / "plant.db"))
    ca_files.init_files(files, ["broker.plant.example", "10.0.0.5"])
    return files


def device_csr(name: str = "pump-7"):
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Plant"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)  # asks to be a CA
               .sign(key, hashes.SHA256()))
    return check_csr(request.public_bytes(serialization.Encoding.PEM)), key


def openssl_verify(files: ca_files.TlsFiles, cert: Path, purpose: str, crl: bool = False,
                   ) -> subprocess.CompletedProcess:
    argv = ["openssl", "verify", "-CAfile", str(files.ca_cert), "-purpose", purpose]
    if crl:
        argv += ["-crl_check", "-CRLfile", str(files.crl)]
    return subprocess.run([*argv, str(cert)], capture_output=True, text=True, timeout=30)


def test_files_are_named_after_the_database_private_and_never_overwritten(files, tmp_path):
    folder = tmp_path / "data"
    assert sorted(p.name for p in folder.iterdir()) == [
        "plant.tls-ca.key", "plant.tls-ca.pem", "plant.tls-crl.pem", "plant.tls-server.key", "plant.tls-server.pem"]
    assert {oct(os.stat(p).st_mode & 0o777) for p in files.all()} == {"0o600"}
    before = files.ca_key.read_bytes()
    with pytest.raises(ca_files.CertificateError, match=r"plant\.tls-ca\.pem exists already"):
        ca_files.init_files(files, ["localhost"])
    assert files.ca_key.read_bytes() == before


def test_the_server_certificate_is_valid_for_its_names(files):
    assert openssl_verify(files, files.server_cert, "sslserver").returncode == 0
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.plant.example"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    with pytest.raises(ca_files.CertificateError, match="at least one host"):
        ca_files.make_server_certificate(ca_files.load_ca(files), [])


def test_a_device_certificate(files, tmp_path):
    checked, key = device_csr()
    ca = ca_files.load_ca(files)
    cert = ca_files.sign_device(ca, checked, days=30)
    path = tmp_path / "pump.crt"
    path.write_bytes(ca_files.pem(cert))
    assert openssl_verify(files, path, "sslclient").returncode == 0
    assert openssl_verify(files, path, "sslserver").returncode != 0  # clientAuth only
    assert cert.subject.rfc4514_string() == "CN=pump-7"  # nothing else of the CSR is copied
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False  # whatever it asked
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30, minutes=5)
    assert ca_files.sign_device(ca, checked).not_valid_after_utc - cert.not_valid_after_utc > dt.timedelta(days=330)
    assert cert.serial_number != ca_files.sign_device(ca, checked).serial_number  # random, 159 bits
    for days in (0, 100 * 365):
        with pytest.raises(ca_files.CertificateError, match="valid for 1 to"):
            ca_files.sign_device(ca, checked, days=days)
    assert not list(tmp_path.glob("data/*device*"))  # the registry writes no device key anywhere


def test_the_crl_revokes_serials(files, tmp_path):
    ca = ca_files.load_ca(files)
    kept, revoked = (ca_files.sign_device(ca, device_csr(name)[0]) for name in ("kept-1", "revoked-1"))
    paths = {}
    for name, cert in (("kept", kept), ("revoked", revoked)):
        paths[name] = tmp_path / f"{name}.crt"
        paths[name].write_bytes(ca_files.pem(cert))
    assert openssl_verify(files, paths["revoked"], "sslclient", crl=True).returncode == 0  # the empty CRL of init
    ca_files.revoke(files, [(revoked.serial_number, dt.datetime.now(dt.UTC))])
    assert oct(os.stat(files.crl).st_mode & 0o777) == "0o600"
    result = openssl_verify(files, paths["revoked"], "sslclient", crl=True)
    assert result.returncode != 0 and "certificate revoked" in result.stdout + result.stderr
    assert openssl_verify(files, paths["kept"], "sslclient", crl=True).returncode == 0
    crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert crl.next_update_utc - crl.last_update_utc > dt.timedelta(days=3000)  # an expired CRL refuses everyone


def test_load_ca_says_what_is_wrong_in_one_line(files, tmp_path):
    other = ca_files.TlsFiles.for_database(str(tmp_path / "other" / "registry.db"))
    ca_files.init_files(other, ["localhost"])
    mixed = ca_files.TlsFiles(files.ca_cert, other.ca_key, files.server_cert, files.server_key, files.crl)
    with pytest.raises(ca_files.CertificateError, match=r"other/registry\.tls-ca\.key is not the key of"):
        ca_files.load_ca(mixed)
    missing = ca_files.TlsFiles.for_database(str(tmp_path / "none" / "registry.db"))
    with pytest.raises(ca_files.CertificateError, match=r"registry\.tls-ca\.pem not found: make the site CA first"):
        ca_files.load_ca(missing)
    files.ca_key.write_text("junk")
    with pytest.raises(ca_files.CertificateError, match="is not a PEM certificate and key"):
        ca_files.load_ca(files)
    assert "BEGIN" not in repr(ca_files.load_ca(other))


def test_load_ca_refuses_a_ca_key_it_cannot_sign_with(files):
    """A site CA whose key is of a kind the registry does not sign with (Ed448 here) is refused in one line."""
    key = ed448.Ed448PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, None))
    files.ca_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.ca_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    with pytest.raises(ca_files.CertificateError, match=r"tls-ca\.key holds an unsupported key \(Ed448PrivateKey\): "
                                                        "the site CA's key must be EC, RSA or Ed25519"):
        ca_files.load_ca(files)

def test_a_server_database_keeps_its_files_in_the_data_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    files = ca_files.TlsFiles.for_database("postgresql://db.plant/registry")
    assert files.ca_cert == tmp_path / "client-registry" / "db.plant_registry.tls-ca.pem"
