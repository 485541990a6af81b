"""Smoke run of every benchmark at tiny sizes against the real servers (Mosquitto with a password file, Mosquitto
with its stock dynamic security as a baseline, `client-registry serve` with the registry plugin): they keep
working and their results are structurally sound and correct (every known device gets in, every refusal is
CONNACK 5, nothing is lost in the pipeline, every granted device of the stall gets in).

No timing is asserted here (performance is judged by ``python -m bench``, never by tests)."""

from __future__ import annotations

import json

import pytest

from bench import procs, report
from bench.run import NAMES, run_suite

pytestmark = pytest.mark.xdist_group("bench-suite")  # one worker runs the suite once for all of them

@pytest.fixture(scope="module")
def results():
    return run_suite(NAMES, quick=True, progress=lambda line: None)


def test_no_benchmark_failed(results):
    errors = {n: r["error"] for n, r in results["benchmarks"].items() if "error" in r}
    assert not errors, errors
    json.dumps(results, default=str)  # serialisable
    assert results["machine"]["cores"] >= 1


def test_known_devices_side_by_side(results):
    auth = results["benchmarks"]["auth"]
    for kind in procs.KINDS:
        for phase in report.PHASES:
            r = auth["servers"][kind][phase]
            assert r["connects"] > 0 and r["failures"] == 0 and r["codes"] == {"0": r["connects"]}
            assert r["per_s"] > 0 and r["loadgen_cpu_pct"] is not None
    for other in ("passwd", "dynsec"):
        assert set(auth["ratios_registry_over"][other]) == set(report.PHASES)
    # the offline state (users in the database; the registry plugin's snapshot, which serve writes from the
    # store before Mosquitto starts) is what serve itself would have left: its start-up reconcile has nothing
    # to correct
    assert auth["registry_start"]["reconcile_corrections"] == 0


def test_storm_connects_every_device(results):
    storm = results["benchmarks"]["storm"]
    assert set(storm["servers"]) == {"passwd", "dynsec", "registry", "registry@ready"}
    for r in storm["servers"].values():
        assert r["connected"] == r["devices"] and r["all_connected_s"] is not None
        assert r["dropped_after_connect"] == 0 and r["serve_alive"]
    assert all(v is not None for v in storm["ratios"].values())


def test_every_refusal_is_connack_5_and_memory_is_read(results):
    refusal = results["benchmarks"]["refusal"]
    sizes = refusal["sizes"]
    for kind, r in refusal["servers"].items():
        assert r["codes"] == {"5": sizes["warmup"] + sizes["refusals"]}, kind
        assert all(v[2] > 0 for v in r["rss_mib"].values())
    registry = refusal["servers"]["registry"]
    assert set(registry["rss_mib"]) == {"mosquitto", "service"}
    assert 0 < registry["knocks_recorded"] <= sizes["warmup"] + sizes["refusals"]


def test_pipeline_records_every_device_once(results):
    rates = results["benchmarks"]["pipeline"]["rates"]
    assert rates
    for r in rates:
        assert r["connack_codes"] == {"5": r["attempts"]}
        assert r["lost"] == 0 and r["duplicated"] == 0
        assert r["recorded"] == r["created_events"] == r["events_received"] == r["attempts"]
        assert r["p50_ms"] <= r["p99_ms"]


def test_dashboard(results):
    d = results["benchmarks"]["dashboard"]
    assert all(t > 0 for t in d["open_s"].values())
    assert d["keys_10k"]["n"] > 0 and d["flood"]["n"] > 0
    assert d["flood"]["listener"] == "connected"
    assert d["flood"]["rows_end"] > d["flood"]["rows_start"]  # the flood's requests reached the table


def test_stall_side_by_side(results):
    stall = results["benchmarks"]["stall"]
    sizes = stall["sizes"]
    assert {(r["kind"], r["accounts"]) for r in stall["runs"]} == {
        (k, n) for k in ("registry", "dynsec") for n in sizes["accounts"]}
    for r in stall["runs"]:
        # every grant done, applied, and its device admitted (the time bound is far away at quick sizes)
        assert r["grants_done"] == sizes["grants"] and r["grants_failed"] == 0, r
        assert r["end_to_end_s"] is not None and r["granted_connect_codes"] == {"0": sizes["grants"]}
        assert r["noise"]["n"] > 0 and r["during"]["n"] > 0 and r["during"]["lost"] == 0
        assert r["mosquitto_ms_per_grant"] >= 0
    for r in stall["runs"]:
        if r["kind"] == "registry":
            assert r["reconcile_corrections"] == 0 and r["service_ms_per_grant"] is not None


def test_report_renders(results, tmp_path):
    text = report.table(results)
    assert "known-device connects" in text and "targets" in text and "broker stall" in text
    assert {t["target"].split(",")[0] for t in results["targets"]} >= {"known-device connects"}
    assert report.write_docs(results, tmp_path).read_text().startswith("# Benchmarks")
