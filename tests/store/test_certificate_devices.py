"""Devices that identify by certificate (issue 18), the store's side: a certificate presented in the implicit
flow (recorded, paired by its fingerprint, bound at grant, rotated by a flagged request), a CSR (recorded like a
password, signed at grant by the signer a caller passes in, fetched again by repeating it, no password at all)
and revocation (the serials the CRL lists). Real certificates and CSRs (cryptography, the site CA of
broker/certificates.py), a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.certificates import TlsFiles, build_crl, load_ca, make_ca, sign_device
from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.plugin_accounts import account_of
from store import open_registry
from store.certificates import PresentedCertificate, certificate_fingerprint, check_csr, serial_text
from store.database import ADDED_COLUMNS
from store.errors import RefusedError

CA = make_ca()
PASSWORD = "cam-secret-1"


def device_csr(name: str, key=None, der: bool = False) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def presented(name: str) -> PresentedCertificate:
    """A certificate signed by the site CA, as the plugin reports the one a device presented."""
    return PresentedCertificate.of(sign_device(CA, check_csr(device_csr(name))))


def sign(checked):
    return sign_device(CA, checked)


@pytest.fixture
def signing_reg(db_path, clock):
    registry = open_registry(db_path, clock=clock, signer=sign)
    yield registry
    registry.close()


def bound_user(reg, name: str = "cam-1") -> PresentedCertificate:
    reg.unlock(3600, actor="op")
    certificate = presented(name)
    request = reg.login(name, PASSWORD, "c1", "10.0.0.5", "mqtt", certificate).attempt.request
    assert reg.grant([request.id], actor="op")[0].ok
    return certificate


def granted_csr(reg, name: str = "pump-7") -> tuple[bytes, x509.Certificate]:
    reg.unlock(3600, actor="op")
    data = device_csr(name)
    request = reg.record_csr(data, peer="10.0.0.9").request
    assert reg.grant([request.id], actor="op")[0].ok
    fetched = reg.record_csr(data, peer="10.0.0.9")
    assert fetched.outcome == "granted" and fetched.certificate
    return data, x509.load_pem_x509_certificate(fetched.certificate.encode())


# -- the implicit flow -----------------------------------------------------------------------------------------

def test_a_presented_certificate_is_recorded_paired_by_its_fingerprint_and_bound_at_grant(reg):
    reg.unlock(3600, actor="op")
    certificate = presented("cam-1")
    first = reg.login("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt", certificate).attempt
    request = first.request
    assert first.outcome == "pending"
    assert first.pairing_code == request.pairing_code == certificate.fingerprint[:8]
    assert request.certificate == certificate.fingerprint and not request.csr and request.label == "pending"
    assert request.certificate_info == {
        "subject": "CN=cam-1", "issuer": "CN=client-registry site CA", "serial": serial_text(certificate.serial),
        "not_before": certificate.not_before, "not_after": certificate.not_after}
    again = reg.login("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt", certificate).attempt
    assert (again.outcome, again.request.id, again.request.attempts) == ("retry", request.id, 2)
    # the same password with another certificate is another device: a conflict, as another password is
    rival = reg.login("cam-1", PASSWORD, "c1", "10.0.0.6", "mqtt", presented("cam-1")).attempt
    assert rival.outcome == "conflict" and "password or certificate" in rival.reason
    assert not reg.grant(["cam-1"], actor="op")[0].ok  # two requests: by id, with force
    assert reg.grant([request.id], actor="op", force=True)[0].ok
    user = reg.user("cam-1")
    assert user.certificate == certificate.fingerprint and not user.certificate_only
    assert reg.grants("cam-1").certificate == certificate.fingerprint
    assert reg.all_grants()["cam-1"].certificate == reg.grants_of_users(["cam-1"])["cam-1"].certificate \
        == certificate.fingerprint
    assert reg.authenticate("cam-1", PASSWORD)  # the password still counts; the broker checks the certificate


def test_a_password_device_is_unchanged(reg):
    reg.unlock(3600, actor="op")
    attempt = reg.record_attempt("plain-1", PASSWORD, "c", "10.0.0.1", "mqtt")
    assert attempt.request.certificate is None and attempt.request.certificate_info is None
    assert len(attempt.pairing_code) == 6  # base32 of the password's digest, as before
    assert reg.grant(["plain-1"], actor="op")[0].ok
    assert reg.grants("plain-1").certificate is None and reg.user("plain-1").certificate is None


def test_a_malformed_certificate_from_the_broker_is_refused_in_one_line(reg):
    reg.unlock(3600, actor="op")
    good = presented("cam-2")
    for broken, rule in ((good.__class__(**{**good.__dict__, "fingerprint": "AB" * 32}), "64 lowercase hex"),
                         (good.__class__(**{**good.__dict__, "subject": "CN=\udcff"}), "valid UTF-8"),
                         (good.__class__(**{**good.__dict__, "serial": -1}), "serial"),
                         ("not a certificate", "PresentedCertificate")):
        result = reg.record_attempt("cam-2", PASSWORD, "c", "10.0.0.1", "mqtt", certificate=broken)  # type: ignore[arg-type]
        assert result.outcome == "invalid" and result.field == "certificate" and rule in result.reason
    assert reg.requests() == []


def test_the_broker_account_carries_the_binding(reg):
    certificate = bound_user(reg)
    reg.add_user("plain-2", PASSWORD, actor="op")
    verifiers = reg.broker_verifiers(["cam-1", "plain-2"])
    bound = account_of(reg.grants("cam-1"), verifiers["cam-1"]).record()
    plain = account_of(reg.grants("plain-2"), verifiers["plain-2"]).record()
    assert wire.parse_account(bound).certificate == bytes.fromhex(certificate.fingerprint)
    assert bound[1 + 2 + len("cam-1")] & wire.CERT
    assert wire.parse_account(plain).certificate is None and not plain[1 + 2 + len("plain-2")] & wire.CERT


def test_a_new_certificate_for_a_bound_user_is_a_rotation_request(reg):
    old = bound_user(reg)
    reg.add_rule("cam-*", actor="op")  # a rule never admits a rotation
    new = presented("cam-1")
    result = reg.login("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt-certificate", new)
    request = result.attempt.request
    assert result.outcome == "rotation" and not result.accepted
    assert request.rotation and request.label == "rotation" and request.needs_force
    assert request.certificate == new.fingerprint and result.attempt.pairing_code == new.fingerprint[:8]
    again = reg.login_many([("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt-certificate", new)])  # the service's batch
    assert [r.outcome for r in again] == ["retry"]
    assert reg.login("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt-certificate", None).outcome == "refused"
    assert reg.login("cam-1", "wrong-secret-1", "c1", "10.0.0.5", "mqtt-certificate", new).outcome == "refused"
    refused = reg.grant([request.id], actor="op")[0]
    assert not refused.ok and "confirm with force" in refused.message
    assert reg.user("cam-1").certificate == old.fingerprint
    done = reg.grant([request.id], actor="op", force=True)[0]
    assert done.ok and reg.user("cam-1").certificate == new.fingerprint == reg.grants("cam-1").certificate
    assert reg.authenticate("cam-1", PASSWORD)  # the password stays
    kinds = [e.kind for e in reg.events(subject="cam-1")]
    assert kinds[-2:] == ["user.certificate_changed", "request.granted"]


# -- CSRs ------------------------------------------------------------------------------------------------------

def test_a_csr_is_recorded_like_a_password_and_granting_signs_it(signing_reg, db_path):
    reg = signing_reg
    data = device_csr("pump-7")
    checked = check_csr(data)
    assert reg.record_csr(data, peer="10.0.0.9").outcome == "locked" and reg.status().knocking == 1
    reg.unlock(3600, actor="op")
    first = reg.record_csr(data, peer="10.0.0.9", context={"site": "hall 2"})
    request = first.request
    assert first.outcome == "pending" and first.pairing_code == checked.pairing_code == request.pairing_code
    assert request.csr and request.source == "http" and request.certificate == checked.fingerprint
    assert request.certificate_info == {"subject": "CN=pump-7", "key_type": "EC P-256"}
    assert request.context == {"site": "hall 2"}
    der = x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
    again = reg.record_csr(der, peer="10.0.0.9")  # the same CSR in DER: the same request
    assert (again.outcome, again.request.id, again.request.attempts) == ("retry", request.id, 2)
    assert reg.record_csr(device_csr("pump-7"), peer="10.0.0.8").outcome == "conflict"  # another key
    assert reg.grant([request.id], actor="op", force=True)[0].ok

    fetched = reg.record_csr(data, peer="10.0.0.9")
    certificate = x509.load_pem_x509_certificate(fetched.certificate.encode())
    certificate.verify_directly_issued_by(CA.certificate)
    user = reg.user("pump-7")
    assert fetched.outcome == "granted" and user.certificate_only
    assert user.certificate == certificate_fingerprint(certificate)
    assert user.certificate_serial == serial_text(certificate.serial_number)
    assert certificate.subject.rfc4514_string() == "CN=pump-7"
    reg.lock(actor="op")
    assert reg.record_csr(data).certificate == fetched.certificate  # fetched again while locked too
    with sqlite3.connect(db_path) as con:  # the CSR is kept until decided, no longer
        assert con.execute('SELECT COUNT(*) FROM "requests" WHERE "csr" IS NOT NULL').fetchone() == (0,)
    assert [r.csr for r in reg.requests(include_all=True) if r.id == request.id] == [True]


def test_a_denied_or_expired_csr_request_drops_its_csr_and_stays_denied(signing_reg, clock, db_path):
    reg = signing_reg
    reg.unlock(7 * 24 * 3600, actor="op")
    denied, stale = device_csr("deny-1"), device_csr("stale-1")
    reg.record_csr(denied)
    reg.record_csr(stale)
    assert reg.deny(["deny-1"], actor="op")[0].ok
    clock.advance(25 * 3600)
    reg.expire_stale()
    assert {r.username: r.status for r in reg.requests(include_all=True)} == {"deny-1": "denied",
                                                                              "stale-1": "expired"}
    with sqlite3.connect(db_path) as con:
        assert con.execute('SELECT COUNT(*) FROM "requests" WHERE "csr" IS NOT NULL').fetchone() == (0,)
    again = reg.record_csr(denied)
    assert again.outcome == "denied" and again.certificate is None
    assert reg.record_csr(stale).outcome == "pending"  # an expired request is forgotten: asked afresh


def test_a_user_with_a_signed_certificate_has_no_password(signing_reg):
    reg = signing_reg
    granted_csr(reg)
    for password in ("", "pump-7", "x" * 20):
        assert not reg.authenticate("pump-7", password)
        assert reg.login("pump-7", password, "c", "10.0.0.9", "mqtt").outcome == "refused"
    rekey = reg.login("pump-7", "new-secret-1", "c", "10.0.0.9", "mqtt-rekey")
    assert rekey.outcome == "known_user" and "no password" in rekey.reason
    assert [r for r in reg.requests() if r.username == "pump-7"] == []
    with pytest.raises(RefusedError, match="no password"):
        reg.set_password("pump-7", "new-secret-1", actor="op")
    # the broker gets the empty password's verifier and the binding in the same record: the certificate is
    # the credential (a device sends no password)
    verifier = reg.broker_verifiers(["pump-7"])["pump-7"]
    assert verifier == reg.verifier_of("pump-7", "") == reg.broker_verifiers()["pump-7"]
    account = wire.parse_account(account_of(reg.grants("pump-7"), verifier).record())
    assert account.certificate == bytes.fromhex(reg.user("pump-7").certificate)


def test_an_approval_rule_admits_a_csr_and_the_answer_carries_the_certificate(signing_reg):
    reg = signing_reg
    reg.add_rule("meter-*", protocol="http", permissions=["meters/{username}/#=write"], actor="op")
    reg.unlock(3600, actor="op")
    result = reg.record_csr(device_csr("meter-1"), peer="10.0.0.3")
    assert result.outcome == "granted" and result.certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert reg.user("meter-1").certificate_only and reg.authorize("meter-1", "publish", "meters/meter-1/kwh")


def test_without_a_signer_a_csr_request_stays_pending(reg, tmp_path, db_path, clock):
    reg.add_rule("meter-*", actor="op")
    reg.unlock(3600, actor="op")
    result = reg.record_csr(device_csr("meter-2"))
    assert result.outcome == "pending"  # the rule could not sign: a person decides
    refused = reg.grant(["meter-2"], actor="op")[0]
    assert not refused.ok and "no site CA" in refused.message and "\n" not in refused.message
    missing = TlsFiles.for_database(str(tmp_path / "elsewhere.db"))
    other = open_registry(db_path, clock=clock, signer=lambda checked: sign_device(load_ca(missing), checked))
    try:
        refused = other.grant(["meter-2"], actor="op")[0]
        assert not refused.ok and "cannot sign its CSR" in refused.message
        assert "make the site CA first" in refused.message
    finally:
        other.close()
    assert reg.user("meter-2") is None and reg.requests()[0].status == "pending"


def test_csrs_are_refused_as_names_and_passwords_are(signing_reg):
    reg = signing_reg
    reg.unlock(3600, actor="op")
    junk = reg.record_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nzz\n-----END CERTIFICATE REQUEST-----\n")
    assert junk.outcome == "invalid" and junk.field == "csr" and junk.reason.startswith("not a PKCS#10")
    reserved = reg.record_csr(device_csr("client-registry-console"))
    assert reserved.outcome == "invalid" and "reserved" in reserved.reason
    reg.set_site_accounts(["site-dev"], source="test")
    assert reg.record_csr(device_csr("site-dev")).outcome == "reserved"
    reg.add_user("taken-1", PASSWORD, actor="op")
    assert reg.record_csr(device_csr("taken-1")).outcome == "known_user"
    asked = reg.record_csr(device_csr("ask-1"), requested_permissions=[{"resource": "#", "operation": "all"}])
    assert asked.outcome == "invalid" and asked.field == "permissions"
    assert reg.requests() == []
    granted_csr(reg, "pump-8")
    assert reg.record_csr(device_csr("pump-8")).outcome == "known_user"  # the name is a user with another key


# -- revocation --------------------------------------------------------------------------------------------------

def test_removing_or_disabling_a_signed_user_revokes_its_serial(signing_reg, clock):
    reg = signing_reg
    data, certificate = granted_csr(reg)
    serial = certificate.serial_number
    assert reg.revoked_serials() == []
    reg.disable_user("pump-7", actor="op")
    at = dt.datetime.fromtimestamp(clock(), dt.UTC)
    assert reg.revoked_serials() == [(serial, at)]
    assert reg.record_csr(data).outcome == "known_user"  # not handed out while disabled
    reg.enable_user("pump-7", actor="op")
    assert reg.revoked_serials() == []
    clock.advance(5)
    reg.remove_user("pump-7", actor="op")
    assert reg.revoked_serials() == [(serial, at + dt.timedelta(seconds=5))]
    crl = build_crl(CA, reg.revoked_serials())  # what the service writes for Mosquitto's crlfile
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    kinds = [(e.kind, e.detail.get("reason")) for e in reg.events(subject="pump-7") if e.kind.startswith("cert")]
    assert kinds == [("certificate.revoked", "disabled"), ("certificate.reinstated", None),
                     ("certificate.revoked", "removed")]
    again = reg.record_csr(data)  # the device asks again: a new request, not its revoked certificate
    assert again.outcome == "pending" and again.certificate is None


def test_an_implicit_flow_user_revokes_nothing(reg):
    bound_user(reg)
    reg.remove_user("cam-1", actor="op")
    assert reg.revoked_serials() == []  # the registry did not sign it: the binding went with the account


def test_events_carry_no_fingerprint_or_csr(signing_reg):
    reg = signing_reg
    certificate = bound_user(reg)
    reg.login("cam-1", PASSWORD, "c1", "10.0.0.5", "mqtt-certificate", rotated := presented("cam-1"))
    reg.grant(["cam-1"], actor="op", force=True)
    data, signed = granted_csr(reg)
    reg.remove_user("pump-7", actor="op")
    text = json.dumps([e.as_dict() for e in reg.events()])
    for fingerprint in (certificate.fingerprint, rotated.fingerprint, check_csr(data).fingerprint,
                        certificate_fingerprint(signed)):
        assert fingerprint[:8] not in text
    assert "BEGIN" not in text and PASSWORD not in text


# -- schema ------------------------------------------------------------------------------------------------------

def test_an_older_database_gains_the_certificate_columns(db_path, clock):
    reg = open_registry(db_path, clock=clock)
    reg.add_user("old-user", PASSWORD, actor="op")
    reg.close()
    with sqlite3.connect(db_path) as con:  # as an earlier client-registry left it
        for table, column, _ in ADDED_COLUMNS:
            if column != "rekey":
                con.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        con.execute('DROP TABLE "revoked_certificates"')
    reg = open_registry(db_path, clock=clock, signer=sign)
    try:
        assert reg.authenticate("old-user", PASSWORD) and reg.user("old-user").certificate is None
        assert reg.revoked_serials() == []
        granted_csr(reg)
        assert reg.user("pump-7").certificate_only
    finally:
        reg.close()
