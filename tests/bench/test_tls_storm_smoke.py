"""Smoke run of bench.tls_storm at a tiny size: both servers serve the TLS listener on the same certificates
and every device gets in over TLS (the generator's handshake works). No timing is asserted (see
docs/benchmarks.md for the figures)."""

from __future__ import annotations

from bench.tls_storm import KINDS, run


def test_every_device_gets_in_over_tls():
    out = run(quick=True)
    for kind in KINDS:
        for r in out["runs"][kind]:
            assert r["connected"] == r["devices"] == 60, (kind, r)
            assert r["retry_reasons"] == {}, (kind, r)
    assert out["registry_over_passwd"] is not None
