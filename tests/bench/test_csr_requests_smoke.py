"""Smoke run of bench.csr_requests at a tiny size: every new device is recorded as pending (none refused by the
flood limits, which would measure the wrong path), every CSR request is granted, fetched and its serial revoked.
No timing is asserted (see docs/benchmarks.md for the figures)."""

from __future__ import annotations

from bench.csr_requests import markdown, run


def test_every_operation_runs_the_path_it_names():
    out = run(quick=True)  # asserts inside: all pending, the certificate fetched after the grant
    assert out["revoked"] == out["n"]
    text = markdown({**out, "started": "now", "machine": "test"})
    assert "signs it" in text and f"{out['n']:,} revoked" in text
