"""The CRL the service keeps (broker/revocation.py) and the certificate block of a plugin attempt as the store
gets it (broker/logins.py), with a real site CA and registry: revoked serials are written and read back by
`openssl crl`; attach mode says in the log what the site must do; no CA, no file and one warning; a subject
that is not UTF-8 reaches the store escaped, never as an exception that would lose the batch."""

from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker import certificates as ca_files
from broker.logins import presented
from broker.mosquitto import plugin_wire as wire
from broker.revocation import RevocationList
from broker.signing import open_signing_registry


def make_csr(tmp_path, name: str) -> bytes:
    request = tmp_path / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / f"{name}.key"), "-subj", f"/CN={name}", "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    return request.read_bytes()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as executor:
        yield executor


def test_revocations_reach_the_crl_and_attach_mode_says_what_to_do(db_path, tmp_path, pool, broker_log):
    files = ca_files.TlsFiles.for_database(db_path)
    ca_files.init_files(files, ["localhost"])
    reg = open_signing_registry(db_path)
    try:
        reg.unlock(300, actor="op")
        request = reg.record_csr(make_csr(tmp_path, "pump-7")).request
        assert reg.grant([str(request.id)], actor="op")[0].ok
        reg.remove_user("pump-7", actor="op")
        events = reg.events(since=0)
        crl = RevocationList(reg, files, pool, reload=None)
        asyncio.run(crl.apply(events))
        serial = reg.revoked_serials()[0][0]
        listed = subprocess.run(["openssl", "crl", "-in", str(files.crl), "-noout", "-text"], capture_output=True,
                                text=True, check=True, timeout=30).stdout
        assert format(serial, "X").lstrip("0") in listed.replace(":", "").upper()
        assert any("systemctl reload mosquitto" in line for line in broker_log)
    finally:
        reg.close()


def test_no_site_ca_no_crl_one_warning(db_path, pool, broker_log):
    reg = open_signing_registry(db_path)
    try:
        crl = RevocationList(reg, ca_files.TlsFiles.for_database(db_path), pool, reload=lambda: True)
        assert asyncio.run(crl.write()) is False
        event = type("E", (), {"kind": "certificate.revoked"})()
        asyncio.run(crl.apply([event]))
        assert [line for line in broker_log if "no site CA" in line] and not crl.files.crl.exists()
    finally:
        reg.close()


def test_an_attempts_certificate_block_as_the_store_takes_it():
    block = wire.Certificate(bytes(range(32)), b"CN=cam-\xff1", b"CN=site CA", 7, 1_800_000_000, 1_831_536_000)
    certificate = presented(block)
    assert certificate is not None and certificate.problem() is None
    assert certificate.fingerprint == bytes(range(32)).hex() and certificate.pairing_code == "00010203"
    assert certificate.subject == "CN=cam-\ufffd1" and certificate.serial == 7
    assert presented(None) is None
