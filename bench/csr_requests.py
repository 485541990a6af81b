"""What certificate devices cost the store (issue 18), in this process, one thread: CPU per new device recorded by
password (the baseline), by a presented certificate (implicit flow), and by CSR (EC P-256 and RSA 2048: the
CSR's signature is checked on every request); a CSR retried; a CSR request granted, which signs it with an
EC P-256 site CA (broker.certificates.sign_device, the signer the service passes in); the certificate fetched
again by repeating the CSR; and `revoked_serials()` with every granted device removed.
`python -m bench.csr_requests [--quick] [--no-docs]`

The CSRs and keys are made before the clock starts (a device makes its own). Writes
bench/results/csr_requests.json and, for a full run, its section of docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from . import procs

SECTION = "csr_requests"  # bench/results/csr_requests.json and its section of docs/benchmarks.md
PASSWORD = "device-password-1"


def _csr(name: str, key) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def _cpu_ms(fn: Callable[[int], object], count: int) -> float:
    t0 = time.process_time()
    for i in range(count):
        fn(i)
    return 1000 * (time.process_time() - t0) / count


def run_once(n: int, n_rsa: int, label: str) -> dict:
    from broker.certificates import make_ca, sign_device
    from store import open_registry
    from store.certificates import PresentedCertificate, check_csr

    ca = make_ca()
    ec_csrs = [_csr(f"ec-{i:05d}", ec.generate_private_key(ec.SECP256R1())) for i in range(n)]
    rsa_csrs = [_csr(f"rsa-{i:05d}", rsa.generate_private_key(65537, 2048)) for i in range(n_rsa)]
    presented = [PresentedCertificate.of(sign_device(ca, check_csr(_csr(f"cert-{i:05d}", ec.generate_private_key(
        ec.SECP256R1()))))) for i in range(n)]
    signer = lambda checked: sign_device(ca, checked)  # noqa: E731

    def peer(i: int) -> str:
        return f"127.9.{i // 25}.{i % 25 + 1}"  # under the per-address limit of a fresh registry

    def fresh(kind: str):
        registry = open_registry(str(procs.tempdir(f"csr-{label}-{kind}") / "registry.db"), signer=signer)
        registry.unlock(seconds=3600, actor="bench")
        return registry

    def all_pending(registry, count: int) -> None:
        pending = registry.status().pending
        assert pending == count, f"{pending} of {count} pending: some attempts were refused"

    out: dict = {}
    # each kind of new device on its own fresh registry, so none pays for a table the others filled
    for kind, count, attempt in (
            ("password", n, lambda reg, i: reg.login(f"pw-{i:05d}", PASSWORD, None, peer(i), "mqtt")),
            ("certificate", n, lambda reg, i: reg.login(f"cert-{i:05d}", PASSWORD, None, peer(i), "mqtt",
                                                        presented[i])),
            ("csr_rsa", n_rsa, lambda reg, i: reg.record_csr(rsa_csrs[i], peer=peer(i)))):
        reg = fresh(kind)
        try:
            out[f"{kind}_ms"] = _cpu_ms(lambda i, reg=reg, attempt=attempt: attempt(reg, i), count)
            all_pending(reg, count)
            if kind == "password":
                out["password_grant_ms"] = _cpu_ms(lambda i, reg=reg: reg.grant([f"pw-{i:05d}"], actor="bench"), n)
        finally:
            reg.close()
    reg = fresh("csr_ec")
    try:
        out["csr_ec_ms"] = _cpu_ms(lambda i: reg.record_csr(ec_csrs[i], peer=peer(i)), n)
        all_pending(reg, n)
        out["csr_retry_ms"] = _cpu_ms(lambda i: reg.record_csr(ec_csrs[i], peer=peer(i)), n)
        out["csr_grant_ms"] = _cpu_ms(lambda i: reg.grant([f"ec-{i:05d}"], actor="bench"), n)
        out["csr_fetch_ms"] = _cpu_ms(lambda i: reg.record_csr(ec_csrs[i]), n)
        assert reg.record_csr(ec_csrs[0]).outcome == "granted"
        for i in range(n):
            reg.remove_user(f"ec-{i:05d}", actor="bench")
        out["revoked_serials_ms"] = _cpu_ms(lambda i: reg.revoked_serials(), 5)
        out["revoked"] = len(reg.revoked_serials())
    finally:
        reg.close()
    return out


def run(quick: bool) -> dict:
    n, n_rsa, rounds = (50, 10, 1) if quick else (1000, 200, 3)
    per = [run_once(n, n_rsa, f"r{r}") for r in range(rounds)]
    out: dict = {"n": n, "n_rsa": n_rsa, "rounds": rounds, "revoked": per[0]["revoked"]}
    for key in per[0]:
        if key.endswith("_ms"):
            out[key] = statistics.median(row[key] for row in per)
    return out


def markdown(r: dict) -> str:
    rows = [
        ("a new device by password (`login`, the baseline)", "password_ms"),
        ("a new device presenting a certificate (`login` with it)", "certificate_ms"),
        ("a new CSR, EC P-256 (`record_csr`: parse, signature, rules, record)", "csr_ec_ms"),
        (f"a new CSR, RSA 2048 ({r['n_rsa']} devices)", "csr_rsa_ms"),
        ("the same CSR again (a retry: two autocommits, where the service batches MQTT retries)", "csr_retry_ms"),
        ("an operator's grant of one password request", "password_grant_ms"),
        ("an operator's grant of one CSR request (signs it)", "csr_grant_ms"),
        ("the certificate fetched by repeating the CSR", "csr_fetch_ms"),
        (f"`revoked_serials()` with {r['revoked']:,} revoked", "revoked_serials_ms"),
    ]
    lines = [
        f"## Certificate devices in the store (`python -m bench.csr_requests`, {r['started']})",
        "",
        f"CPU per operation in this process ({r['n']:,} devices, median of {r['rounds']} rounds; see the module's "
        f"docstring), each kind of new device on a fresh SQLite registry. Machine: {r['machine']}.",
        "",
        "| operation | CPU |",
        "|---|---|",
        *[f"| {text} | {r[key]:.2f} ms |" for text, key in rows],
        "",
        f"A CSR costs {r['csr_ec_ms'] / r['password_ms']:.1f}× a password's new request (parsing it and checking "
        f"its signature and rules, on every request, retries included); signing it at grant adds "
        f"{r['csr_grant_ms'] - r['password_grant_ms']:.2f} ms to the grant (an ECDSA P-256 signature, the "
        f"certificate kept). A presented certificate costs what a password does "
        f"({r['certificate_ms']:.2f} against {r['password_ms']:.2f} ms).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    from .report import standalone_main

    standalone_main(argv, "python -m bench.csr_requests", __doc__ or "", run, markdown, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
