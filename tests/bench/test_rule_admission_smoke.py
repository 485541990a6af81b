"""Smoke run of bench.rule_admission at a tiny size against a real `client-registry serve`: every device gets
in, by the rule or by the one grant. No timing is asserted (see docs/benchmarks.md for the figures)."""

from __future__ import annotations

import pytest

from bench.report import replace_section
from bench.rule_admission import hot_path, run_mode


@pytest.mark.parametrize("mode", ["rule", "manual"])
def test_every_device_gets_in(mode):
    r = run_mode(mode, devices=8, rate=50, block=90 + (mode == "manual"))
    assert r["admitted"] == r["granted_requests"] == 8
    assert r["granted_by_rule"] == (8 if mode == "rule" else 0)
    assert r["first_to_last_connect_s"] is not None and r["connects_per_device"] >= 2
    if mode == "manual":
        assert r["grant_exit"] == 0


def test_hot_path_measures_each_case():
    out = hot_path(5)
    for key in ("no_rules_ms", "rules_not_matching_ms", "admitted_by_rule_ms", "manual_grant_ms", "rules_query_us"):
        assert out[key] > 0


def test_its_docs_section_survives_and_is_replaced_in_place():
    text = replace_section("# Benchmarks\n\nresults\n", "rule_admission", "## A\none")
    assert text.endswith("<!-- rule_admission -->\n## A\none\n<!-- /rule_admission -->\n")
    again = replace_section(text + "\ntail\n", "rule_admission", "## A\ntwo")
    assert again.count("<!-- rule_admission -->") == 1 and "two" in again and "one" not in again
    assert again.endswith("tail\n")
