"""Smoke run of the side-by-side table benchmark (``python -m bench.b_dashboard``) at tiny sizes: both tables
are measured in one run, the "before" side really runs the older checkout, and every key press got its frame.
No timing is asserted here (performance is judged by the benchmark, never by tests)."""

from __future__ import annotations

from bench import b_dashboard, procs


def test_both_tables_measured_in_one_run():
    r = b_dashboard.compare(quick=True)
    assert r["open"]["before"]["code"] != r["open"]["now"]["code"] == str(procs.ROOT)
    assert r["open"]["before"]["rows"] == r["open"]["now"]["rows"] == r["sizes"]["open_rows"]
    for sides in r["floods"].values():
        for f in sides.values():
            assert f["listener"] == "connected" and f["rows_end"] > f["rows_start"]
            assert f["n"] > 0 and f["max_ms"] < b_dashboard_timeout_ms()
    assert [line for line in b_dashboard.compare_lines(r) if "DataTable" in line]
    assert len(b_dashboard.compare_targets(r)) == 1 + len(r["floods"])


def b_dashboard_timeout_ms() -> float:
    from bench.dash_child import KEY_TIMEOUT

    return KEY_TIMEOUT * 1000  # a key whose effect never showed is counted as the timeout
