"""The store's certificate accounts as the real plugin enforces them: a CSR made by `openssl req`, recorded and
granted by the store (signed by the site CA through the signer the registry is given), the account the service
would send (`plugin_accounts.account_of` on `Registry.grants` and `broker_verifiers`), and Mosquitto 2.0.11 with
a TLS listener: the device connects with its certificate and no password; any password, or another certificate,
is refused; a user bound to a presented certificate still needs its password too."""

from __future__ import annotations

from bench.procs import free_port
from broker import certificates as ca_files
from broker.mosquitto.plugin_accounts import account_of
from store import open_registry
from store.certificates import PresentedCertificate

from .conftest import SECRET, SERVICE
from .test_tls import PASSWORD, REFUSED_V5, make_device, pub, tls_lines


def test_a_signed_csr_user_connects_by_certificate_alone(start_broker, short_dir):
    (short_dir / "registry.secret").write_text(SECRET.hex() + "\n")  # the secret the plugin is given
    site = ca_files.TlsFiles.for_database(str(short_dir / "registry.db"))
    ca_files.init_files(site, ["localhost", "127.0.0.1"])
    ca = ca_files.load_ca(site)
    reg = open_registry(str(short_dir / "registry.db"), signer=lambda checked: ca_files.sign_device(ca, checked))
    try:
        pump = make_device(site, short_dir, "pump-7")  # its key and CSR, made as firmware would
        twin = make_device(site, short_dir, "pump-7", tag="-twin")  # the same CA and name, another key
        cam = make_device(site, short_dir, "cam-1")
        reg.unlock(300, actor="op")
        request = reg.record_csr(pump.cert.with_suffix(".csr").read_bytes(), peer="127.0.0.1").request
        assert reg.grant([request.id], actor="op")[0].ok
        fetched = reg.record_csr(pump.cert.with_suffix(".csr").read_bytes())
        pump.cert.write_text(fetched.certificate)  # the device keeps what the registry signed
        cam_request = reg.login("cam-1", PASSWORD, None, "127.0.0.1", "mqtt",
                                PresentedCertificate.of(cam.certificate)).attempt.request
        assert reg.grant([cam_request.id], actor="op")[0].ok
        verifiers = reg.broker_verifiers()
        accounts = [account_of(reg.grants(name), verifiers[name]) for name in ("pump-7", "cam-1")]
    finally:
        reg.close()

    port = free_port()
    start_broker([SERVICE, *accounts], extra=tls_lines(site, port))
    ok = pub(port, site, pump, "pump-7", password="")
    assert ok.returncode == 0, ok.stderr
    for password in ("device-password", "x"):
        assert pub(port, site, pump, "pump-7", password=password).returncode == REFUSED_V5
    assert pub(port, site, twin, "pump-7", password="").returncode == REFUSED_V5
    ok = pub(port, site, cam, "cam-1")
    assert ok.returncode == 0, ok.stderr
    assert pub(port, site, cam, "cam-1", password="").returncode == REFUSED_V5
    assert pub(port, site, twin, "cam-1").returncode == REFUSED_V5
