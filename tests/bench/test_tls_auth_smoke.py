"""Smoke run of bench.tls_auth at a tiny size: the three Mosquittos start with the same certificates, every
connect gets the CONNACK it should (accepted, or refused for the other certificate). No timing is asserted
(see docs/benchmarks.md for the figures)."""

from __future__ import annotations

from bench.tls_auth import KINDS, markdown, run


def test_every_connect_is_answered_as_expected():
    out = run(quick=True)
    assert out["unexpected"] == 0
    for kind in (*KINDS, "refused"):
        assert out[kind]["per_s"] > 0
    text = markdown({**out, "started": "now", "machine": "test"})
    assert "bound to the certificate" in text and "refused" in text
