"""Smoke run of bench.fleet at a tiny size against a real `client-registry serve`: every device gets in by the
rule, into an empty broker and into one already holding accounts. No timing is asserted."""

from __future__ import annotations

from bench.b_fleet import SIZES, run


def test_every_device_gets_in_by_the_rule():
    results = run(SIZES["quick"])
    assert [c["accounts"] for c in results["cases"]] == list(SIZES["quick"]["accounts"])
    for c in results["cases"]:
        assert c["admitted"] == c["devices"] == c["granted_by_rule"] == c["granted_requests"]
        assert c["all_in_s"] is not None and c["connects_per_device"] >= 2
        assert c["noise"]["n"] > 0 and c["during"]["n"] > 0 and c["serve_alive"]
    assert len(results["targets"]) == 2 * len(results["cases"])
