"""Certificate requests and users as the dashboard shows them, from a real registry: the details list what an
operator compares before granting (subject, issuer, serial, validity, key type, fingerprint), escaped like
every device string; the Requests view says csr or cert where the source is; a rotation request is labelled,
and found by the filter; a bound user's details name its certificate."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from store import open_registry
from store.certificates import PresentedCertificate
from tui.screens.details import request_details, user_details
from tui.widgets.requests_table import RequestsTable

FINGERPRINT = "ab" * 32
HOSTILE_SUBJECT = "CN=cam-1,O=\u202egnp.exe"  # a bidi override a device put in its certificate


class Cells(RequestsTable):
    """The table's cells without an app (its clock)."""

    def now(self) -> float:
        return 1_800_000_000.0


def csr_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)


def test_certificate_requests_and_users_in_the_dashboard(tmp_path):
    reg = open_registry(str(tmp_path / "registry.db"))
    try:
        reg.unlock(300, actor="op")
        cert = PresentedCertificate(FINGERPRINT, HOSTILE_SUBJECT, "CN=site CA", 0x1F2E, 1_800_000_000.0,
                                    1_831_536_000.0)
        presented = reg.login("cam-1", "pw-cam-1", None, "10.0.0.5", "mqtt", cert).attempt.request
        csr = reg.record_csr(csr_pem("pump-7"), peer="10.0.0.6").request
        shown = request_details(presented, []).plain
        assert "certificate presented over TLS" in shown and "CN=site CA" in shown and "1f2e" in shown
        assert FINGERPRINT in shown and "2027-01-15" in shown  # not_before
        assert "\u202e" not in shown and "\\u202e" in shown  # escaped, never rendered
        csr_shown = request_details(csr, []).plain
        assert "CSR" in csr_shown and "EC P-256" in csr_shown and "CN=pump-7" in csr_shown
        assert csr.certificate in csr_shown

        table = Cells()
        assert table.row_cells(csr)["source"].plain == "csr"
        assert table.row_cells(presented)["source"].plain == "cert"
        assert table.row_cells(presented)["pairing_code"].plain == FINGERPRINT[:8]
    finally:
        reg.close()


def test_a_rotation_request_is_labelled_and_found_by_the_filter(tmp_path):
    reg = open_registry(str(tmp_path / "registry.db"))
    try:
        reg.unlock(300, actor="op")
        first = PresentedCertificate(FINGERPRINT, "CN=cam-1", "CN=site CA", 1, 1_800_000_000.0, 1_831_536_000.0)
        request = reg.login("cam-1", "pw-cam-1", None, "10.0.0.5", "mqtt", first).attempt.request
        assert reg.grant([str(request.id)], actor="op")[0].ok
        user = reg.user("cam-1")
        assert "cert: " + FINGERPRINT in user_details(user, []).plain
        assert "cert" in user_details(user, []).plain
        other = PresentedCertificate("cd" * 32, "CN=cam-1", "CN=site CA", 2, 1_800_000_000.0, 1_831_536_000.0)
        assert reg.login("cam-1", "pw-cam-1", None, "10.0.0.5", "mqtt-certificate", other).attempt.outcome == "rotation"
        page, total = reg.request_page(100, 0, match="rotation", expire=False)
        assert total == 1 and page[0].rotation and page[0].label == "rotation"
        table = RequestsTable()
        table.filter = "rotation"
        assert [r.id for r in reg.requests() if table.matches(r)] == [page[0].id]
        assert "rotation: another certificate" in request_details(page[0], []).plain
    finally:
        reg.close()
