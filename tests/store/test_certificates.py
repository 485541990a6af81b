"""CSR rules (store/certificates.py): what a device may send, refused in one line when hostile; described with
the fingerprint and pairing code the device itself can print."""

from __future__ import annotations

import datetime as dt
import subprocess
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from store.certificates import MAX_CSR_BYTES, CsrRefused, check_csr
from store.errors import InvalidValueError

EC_KEY = ec.generate_private_key(ec.SECP256R1())


def cn(value: str, **kw) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value, **kw)])


def csr(name: x509.Name | str = "sensor-1", key=EC_KEY, der: bool = False) -> bytes:
    if isinstance(name, str):
        name = cn(name)
    algorithm = None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return request.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


# -- DER by hand, for what cryptography refuses to build (a subject of invalid UTF-8, a signature by another key)

def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


ECDSA_SHA256 = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d040302")))


def signed(info: bytes, key=EC_KEY) -> bytes:
    """A DER CSR of this CertificationRequestInfo, signed (ECDSA SHA-256) by key."""
    return _tlv(0x30, info + ECDSA_SHA256 + _tlv(0x03, b"\0" + key.sign(info, ec.ECDSA(hashes.SHA256()))))


def info_with_cn_bytes(raw: bytes) -> bytes:
    placeholder = b"P" * len(raw)
    request = x509.load_der_x509_csr(csr(cn(placeholder.decode(), _validate=False), der=True))
    info = request.tbs_certrequest_bytes
    assert info.count(placeholder) == 1
    return info.replace(placeholder, raw)


def refusal(data) -> str:
    with pytest.raises(CsrRefused) as info:
        check_csr(data)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# -- accepted ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, kind", [
    (EC_KEY, "EC P-256"),
    (ec.generate_private_key(ec.SECP384R1()), "EC P-384"),
    (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    (rsa.generate_private_key(65537, 2048), "RSA 2048"),
])
@pytest.mark.parametrize("der", [False, True])
def test_accepted_keys_in_pem_and_der(key, kind, der):
    checked = check_csr(csr("sensor-1", key, der=der))
    assert (checked.username, checked.key_type, checked.subject) == ("sensor-1", kind, "CN=sensor-1")
    assert checked.pairing_code == checked.fingerprint[:8] and len(checked.fingerprint) == 64
    assert checked.describe()[2].endswith(checked.fingerprint)


def test_a_csr_made_by_openssl_and_the_pairing_code_the_device_prints(tmp_path):
    """The device computes its own pairing code with a shell: the operator compares the two."""
    key, request = tmp_path / "dev.key", tmp_path / "dev.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", "/O=Plant 4/CN=pump-7", "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    printed = subprocess.run(f"openssl req -in {request} -pubkey -noout | openssl pkey -pubin -outform DER "
                             "| sha256sum | cut -c1-8", shell=True, check=True, capture_output=True, text=True)
    checked = check_csr(request.read_bytes())
    assert (checked.username, checked.subject) == ("pump-7", "CN=pump-7,O=Plant 4")
    assert checked.pairing_code == printed.stdout.strip()


def test_an_nfc_name_is_kept_as_sent():
    assert check_csr(csr("capteur-é")).username == "capteur-é"


# -- refused -------------------------------------------------------------------------------------------------

def test_huge_csrs_are_refused_before_parsing():
    header = b"-----BEGIN CERTIFICATE REQUEST-----\n"
    assert refusal(header + b"A" * MAX_CSR_BYTES) == \
        f"the CSR is {MAX_CSR_BYTES + len(header):,} bytes; at most {MAX_CSR_BYTES:,} are accepted"
    # a real CSR whose subject is padded past the cap by many attributes
    big = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60)] * 400
                    + [x509.NameAttribute(NameOID.COMMON_NAME, "sensor-1")])
    assert "at most" in refusal(csr(big))


@pytest.mark.parametrize("junk", [b"", b"   \n", b"\x00" * 100, b"-----BEGIN CERTIFICATE REQUEST-----\nzz\n"
                                  b"-----END CERTIFICATE REQUEST-----\n", b"\x30\x82\xff\xff" + b"\x00" * 20,
                                  "—not ascii—", 12345])
def test_garbage(junk):
    assert refusal(junk).startswith(("not a PKCS#10", "the CSR is empty", "a CSR"))


def test_a_certificate_is_not_a_csr():
    key = EC_KEY
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(cn("x-device")).issuer_name(cn("x-device"))
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    assert refusal(cert.public_bytes(serialization.Encoding.PEM)).startswith("not a PKCS#10")


def test_wrong_signatures():
    info = x509.load_der_x509_csr(csr(der=True)).tbs_certrequest_bytes
    other = ec.generate_private_key(ec.SECP256R1())
    assert refusal(signed(info, other)) == "the CSR's signature does not match its public key"
    flipped = bytearray(csr(der=True))
    flipped[-3] ^= 0x01  # inside the signature's integers
    assert refusal(bytes(flipped)) in ("the CSR's signature does not match its public key",
                                       "not a PKCS#10 certificate signing request (PEM or DER)")
    assert check_csr(signed(info))  # the hand-made DER itself is sound


@pytest.mark.parametrize("key, message", [
    (rsa.generate_private_key(65537, 1024), "an RSA key must have 2048 to 8192 bits, not 1024"),
    (ec.generate_private_key(ec.SECP521R1()), "EC curve secp521r1 is not accepted (P-256 or P-384)"),
    (ec.generate_private_key(ec.SECP256K1()), "EC curve secp256k1 is not accepted (P-256 or P-384)"),
    (ed448.Ed448PrivateKey.generate(), "Ed448 keys are not accepted"),
    ("dsa", "DSA keys are not accepted"),
], ids=["rsa1024", "p521", "secp256k1", "ed448", "dsa"])
def test_wrong_key_types(key, message):
    if key == "dsa":  # deprecated by cryptography, still what old firmware may send
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            request = x509.CertificateSigningRequestBuilder().subject_name(cn("sensor-1")).sign(
                dsa.generate_private_key(1024), hashes.SHA256())
        data = request.public_bytes(serialization.Encoding.PEM)
    else:
        data = csr("sensor-1", key)
    assert refusal(data).startswith(message)


@pytest.mark.parametrize("name, message", [
    (x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Plant")]),
     "the CSR's subject must hold exactly one common name (CN): the username"),
    (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a-one"), x509.NameAttribute(NameOID.COMMON_NAME, "a-two")]),
     "the CSR's subject must hold exactly one common name (CN): the username, not 2"),
    (x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-1"),
                                                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "P")])]),
     "the CSR's subject must not hold multi-valued names"),
    (cn("ab"), "the CSR's common name is not a valid username: username must be at least 3 characters"),
    (cn("dev/#"), "the CSR's common name is not a valid username: username must not contain '+' or '#'"),
    (cn(" padded "), "the CSR's common name is not a valid username: username must not start or end"),
    (cn("client-registry-service"), "the CSR's common name is not a valid username: usernames starting with"),
    (cn("e\u0301t\u00e9-sensor"), "the CSR's common name is not a valid username: username must be sent in "
                                  "Unicode NFC"),
    (cn("sensor\x07bell"), "the CSR's subject must not contain control or formatting characters"),
    (cn("\u202etxt.exe-sensor"), "the CSR's subject must not contain control or formatting characters"),
    (x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Plant\x00"), x509.NameAttribute(
        NameOID.COMMON_NAME, "sensor-1")]), "the CSR's subject must not contain control or formatting characters"),
], ids=["no-cn", "two-cns", "multi-valued", "short", "wildcard", "spaces", "reserved", "not-nfc", "bell", "bidi",
        "nul-in-o"])
def test_odd_subjects(name, message):
    assert refusal(csr(name)).startswith(message)


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_a_common_name_longer_than_a_username():
    info = info_with_cn_bytes(b"s" * 129)
    assert refusal(signed(info)).endswith("username must be at most 128 characters")


@pytest.mark.parametrize("raw", [b"\xff\xfesensor", b"sensor-\xc3\x28", b"\xed\xa0\x80-lone-surrogate"])
def test_non_utf8_subjects_are_refused_in_one_line(raw):
    """A UTF8String holding bytes that are not UTF-8, correctly signed: the subject cannot be read."""
    assert refusal(signed(info_with_cn_bytes(raw))) == \
        "the CSR's subject cannot be read (not valid UTF-8, or malformed)"


def test_refusals_are_invalid_values_for_callers():
    """The CLI and the HTTP API turn InvalidValueError into a usage error / a 400 with the message."""
    with pytest.raises(InvalidValueError):
        check_csr(b"junk")
