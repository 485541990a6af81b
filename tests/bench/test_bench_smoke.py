"""Smoke run of every benchmark at tiny sizes: they keep working and produce sane structured results.

No timing is asserted here (performance is judged by ``python -m bench``, never by tests)."""

from __future__ import annotations

import json

import pytest

from bench import procs, report
from bench.run import NAMES, run_suite



@pytest.fixture(scope="module")
def results():
    return run_suite(NAMES, quick=True, progress=lambda line: None)


def test_no_benchmark_failed(results):
    errors = {n: r["error"] for n, r in results["benchmarks"].items() if "error" in r}
    assert not errors, errors
    json.dumps(results, default=str)  # serialisable
    assert results["machine"]["cores"] >= 1


def test_auth_side_by_side(results):
    servers = results["benchmarks"]["auth"]["servers"]
    kinds = ["ours", "stock"] + (["mosquitto"] if procs.ensure_mosquitto() else [])
    for kind in kinds:
        for phase in ("seq_cold", "seq_warm", "conc_cold", "conc_warm"):
            r = servers[kind][phase]
            assert r["failures"] == 0 and r["connects"] > 0 and r["per_s"] > 0
    assert set(results["benchmarks"]["auth"]["ratios_ours_over"]) >= {"stock"}


def test_pipeline_records_every_attempt_once(results):
    rates = results["benchmarks"]["pipeline"]["rates"]
    assert rates
    for r in rates:
        assert r["events_received"] == r["attempts"] and r["exactly_once"] and r["duplicate_events"] == 0
        assert r["duplicated"] == 0 and r["lost"] == 0
        assert r["connack_codes"] == {"5": r["attempts"]}
        assert r["p50_ms"] <= r["p99_ms"]


def test_storm_and_refusals(results):
    storm = results["benchmarks"]["storm"]["servers"]["ours"]
    assert storm["connected"] == storm["devices"] and storm["all_connected_s"] is not None
    assert storm["peak_rss_mib"] > 0
    for r in results["benchmarks"]["refusal"]["servers"].values():
        assert set(r["codes"]) == {"5"} and r["rss_after_mib"] > 0


def test_dashboard(results):
    d = results["benchmarks"]["dashboard"]
    assert all(t > 0 for t in d["open_s"].values())
    assert d["keys_10k"]["n"] > 0 and d["flood"]["n"] > 0
    assert d["flood"]["listener"] == "connected"
    assert d["flood"]["rows_end"] > d["flood"]["rows_start"]  # the flood's requests reached the table


def test_report_renders(results, tmp_path):
    text = report.table(results)
    assert "authentication throughput" in text and "targets" in text
    assert report.write_docs(results, tmp_path).read_text().startswith("# Benchmarks")
